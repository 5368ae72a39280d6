import { Writable } from 'node:stream';
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { loggerOptions, scrubber } from '../../src/util/logger.js';

describe('logger', () => {
  it('scrubs known secret values, raw, URL-encoded and JSON-escaped', () => {
    const scrub = scrubber(['p@ss"word', 'k3y-123', undefined, '']);
    expect(scrub('key k3y-123 and p@ss"word')).toBe('key [redacted] and [redacted]');
    expect(scrub('postgres://u:p%40ss%22word@h/db')).toBe('postgres://u:[redacted]@h/db');
    expect(scrub('{"msg":"p@ss\\"word"}')).toBe('{"msg":"[redacted]"}');
  });

  it('redacts secret fields and scrubs secret values that slip into messages', () => {
    const lines: string[] = [];
    const sink = new Writable({
      write(chunk, _e, done) {
        lines.push(chunk.toString());
        done();
      },
    });
    const log = pino(loggerOptions('info', ['hunter2-secret']), sink);
    log.info({ password: 'anything', db: { password: 'x' }, apiKey: 'y' }, 'connecting with hunter2-secret');
    const line = lines.join('');
    expect(line).not.toContain('hunter2-secret');
    expect(line).not.toContain('anything');
    expect(JSON.parse(line)).toMatchObject({
      password: '[redacted]',
      apiKey: '[redacted]',
      db: { password: '[redacted]' },
    });
  });
});
