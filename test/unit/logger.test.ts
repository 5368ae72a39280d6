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

describe('log file', () => {
  it('LOG_FILE gets the same JSON lines, scrubbed, in a folder it creates', async () => {
    const { mkdtempSync, readdirSync, readFileSync, rmSync } = await import('node:fs');
    const { tmpdir } = await import('node:os');
    const { join } = await import('node:path');
    const { createLogger } = await import('../../src/util/logger.js');
    const dir = mkdtempSync(join(tmpdir(), 'pm-log-'));
    try {
      const file = join(dir, 'logs', 'bomba_a.log');
      const log = createLogger({ level: 'info', file, secrets: ['very-secret-key'] });
      log.info({ pump: 'A' }, 'hello with very-secret-key');
      await new Promise<void>((resolve) => log.flush(() => resolve()));
      // pino-roll writes from a worker thread: wait for the line to land.
      let text = '';
      for (let i = 0; i < 100 && !text.includes('hello'); i++) {
        await new Promise((r) => setTimeout(r, 50));
        const names = readdirSync(join(dir, 'logs'));
        text = names.map((n) => readFileSync(join(dir, 'logs', n), 'utf8')).join('');
      }
      expect(text).toContain('"pump":"A"');
      expect(text).toContain('hello with [redacted]');
      expect(text).not.toContain('very-secret-key');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
