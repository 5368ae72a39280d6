import { Writable } from 'node:stream';
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { loggerOptions, RepeatLimiter, scrubber } from '../../src/util/logger.js';

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

describe('repeated warnings', () => {
  function capture(limiter: RepeatLimiter) {
    const lines: Record<string, unknown>[] = [];
    const sink = new Writable({
      write(chunk, _e, done) {
        for (const l of chunk.toString().split('\n')) if (l) lines.push(JSON.parse(l));
        done();
      },
    });
    return { lines, log: pino(loggerOptions('info', [], limiter), sink) };
  }

  it('writes each step of a bounded schedule (attempt N of M), and holds back unbounded attempts', () => {
    const limiter = new RepeatLimiter(60_000, () => 1_000_000);
    const { lines, log } = capture(limiter);
    const source = log.child({ stage: 'source' });
    for (const attempt of [1, 2, 3, 3]) {
      source.warn({ attempt, of: 3, delay_ms: 50 * attempt }, 'connection to PostgreSQL failed; retrying');
    }
    expect(lines.map((l) => l.attempt)).toEqual([1, 2, 3]);
    // A vector's retries have no bound: attempt 2, 3, … are repeats of the first warning.
    for (const attempt of [1, 2, 3]) source.warn({ attempt }, 'unified POST failed; retrying');
    expect(lines.map((l) => l.attempt)).toEqual([1, 2, 3, 1]);
    expect(limiter.suppressedTotal).toBe(3);
  });

  it('writes a warning once a minute and then says how many repeats it did not write', () => {
    let now = 1_000_000;
    const limiter = new RepeatLimiter(60_000, () => now);
    const { lines, log } = capture(limiter);
    const delivery = log.child({ stage: 'delivery', pump: 'A' });
    for (let i = 0; i < 50; i++) {
      delivery.warn({ id: i }, `backend answered 503 to row ${i}`);
      now += 1_000;
    }
    // Another pump's same warning, and another warning of pump A, are their own kinds.
    log.child({ stage: 'delivery', pump: 'B' }).warn('backend answered 503 to row 7');
    delivery.warn('outbox read failed; retrying');
    // Info and errors are never held back.
    for (let i = 0; i < 3; i++) delivery.info('tick');
    for (let i = 0; i < 3; i++) delivery.error('route refused');
    expect(lines.filter((l) => l.level === 40).map((l) => [l.pump, l.msg])).toEqual([
      ['A', 'backend answered 503 to row 0'],
      ['B', 'backend answered 503 to row 7'],
      ['A', 'outbox read failed; retrying'],
    ]);
    expect(lines.filter((l) => l.level !== 40)).toHaveLength(6);
    expect(limiter.suppressedTotal).toBe(49);

    // The minute passes: one line counts the 49 not written.
    now += 11_000;
    limiter.sweep();
    const said = lines.filter((l) => l.repeated !== undefined);
    expect(said).toHaveLength(1);
    expect(said[0]).toMatchObject({ level: 40, pump: 'A', stage: 'delivery', repeated: 49, window_s: 60 });
    expect(String(said[0]?.msg)).toContain('repeated 49 more times within 60 s');

    // After it, the same warning is written again at once.
    delivery.warn('backend answered 503 to row 99');
    expect(lines.at(-1)?.msg).toBe('backend answered 503 to row 99');
    // A warning that was never repeated leaves no count line.
    now += 61_000;
    limiter.sweep();
    expect(lines.filter((l) => l.repeated !== undefined)).toHaveLength(1);
  });
});
