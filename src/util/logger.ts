import { closeSync, existsSync, mkdirSync, openSync, statSync, unlinkSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import pino, { type Logger } from 'pino';
import { ConfigError } from '../config/env.js';

export interface LoggerOptions {
  level: string;
  /** Optional file besides stdout (e.g. logs/bomba_a.log). */
  file?: string | undefined;
  /** Values that must never be written: the API key, the database password. */
  secrets: (string | undefined)[];
  /** Human-readable lines instead of JSON (a terminal); JSON otherwise. */
  pretty?: boolean;
  /**
   * The log file could not be written after all (its rotation target is a folder, the disk is full): by
   * default one line on stderr and exit 2, since a process that silently stops writing the logs it was
   * asked for looks like success. Tests pass their own.
   */
  onFileError?: (message: string) => void;
  /** Repeated warnings within this window are counted, not written each time; 60 s (tests shorten it). */
  repeatWindowMs?: number;
}

/** Folders created at most this deep for LOG_FILE: a bound, not a limit anyone meets. */
const MAX_NEW_FOLDERS = 32;

/**
 * Checks, before any transport is built, that LOG_FILE's folder exists or can be made and that a file can
 * be created in it; a problem is a ConfigError of one line. The folders are made one level at a time:
 * Node's recursive mkdir never returns for a path under /proc (LOG_FILE=/proc/nope/x.log burnt a core).
 */
export function prepareLogFile(file: string): void {
  const dir = dirname(resolve(file));
  const missing: string[] = [];
  for (let d = dir; !existsSync(d); d = dirname(d)) {
    if (missing.length >= MAX_NEW_FOLDERS || dirname(d) === d) break;
    missing.unshift(d);
  }
  try {
    for (const folder of missing) mkdirSync(folder);
    if (!statSync(dir).isDirectory()) throw Object.assign(new Error('not a folder'), { code: 'ENOTDIR' });
    if (existsSync(file) && statSync(file).isDirectory())
      throw Object.assign(new Error('a folder'), { code: 'EISDIR' });
    // Access checks say yes to root everywhere; creating a file is the real test.
    const probe = join(dir, `.pump-monitor-log-check-${process.pid}`);
    closeSync(openSync(probe, 'w'));
    unlinkSync(probe);
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    throw new ConfigError(`LOG_FILE: cannot write ${JSON.stringify(file)}: ${e.code ?? e.message}`);
  }
}

function exitOnFileError(message: string): void {
  process.stderr.write(`pump-monitor: ${message}\n`);
  process.exit(2);
}

/** Field names whose values are always hidden, wherever they appear in a log object. */
const REDACT = [
  'password',
  'apiKey',
  'api_key',
  'API_KEY',
  'DB_PASSWORD',
  'DATABASE_URL',
  '*.password',
  '*.apiKey',
];

/** Replaces every occurrence of a known secret value in a serialized log line. */
export function scrubber(secrets: (string | undefined)[]): (line: string) => string {
  const values = secrets.filter((s): s is string => typeof s === 'string' && s.length >= 3);
  const forms = [
    ...new Set(values.flatMap((s) => [s, encodeURIComponent(s), JSON.stringify(s).slice(1, -1)])),
  ];
  if (forms.length === 0) return (line) => line;
  return (line) => {
    let out = line;
    for (const f of forms) if (out.includes(f)) out = out.split(f).join('[redacted]');
    return out;
  };
}

export function createLogger(o: LoggerOptions): Logger {
  const streams: pino.StreamEntry[] = [];
  if (o.pretty) {
    streams.push({
      level: o.level as pino.Level,
      stream: pino.transport({
        target: 'pino-pretty',
        options: { destination: 1, colorize: true, translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname' },
      }),
    });
  } else {
    streams.push({ level: o.level as pino.Level, stream: pino.destination({ dest: 1, sync: false }) });
  }
  if (o.file) {
    const file = o.file;
    prepareLogFile(file);
    const transport = pino.transport({
      target: 'pino-roll',
      options: { file, size: '10m', limit: { count: 5 }, mkdir: true },
    });
    let reported = false;
    transport.on('error', (err: NodeJS.ErrnoException) => {
      if (reported) return;
      reported = true;
      (o.onFileError ?? exitOnFileError)(
        `LOG_FILE: cannot write ${JSON.stringify(file)}: ${(err.code ?? err.message).split('\n')[0]}`,
      );
    });
    streams.push({ level: o.level as pino.Level, stream: transport });
  }
  const limiter = new RepeatLimiter(o.repeatWindowMs);
  // Says the counts of warnings whose minute has passed, even when they do not come again.
  setInterval(() => limiter.sweep(), Math.max(1_000, limiter.windowMs / 4)).unref();
  return pino(loggerOptions(o.level, o.secrets, limiter), pino.multistream(streams));
}

/** The options every pump-monitor logger uses: redacted fields, known secret values scrubbed, and
 * (with a limiter) repeated warnings counted rather than written again. */
export function loggerOptions(
  level: string,
  secrets: (string | undefined)[],
  limiter?: RepeatLimiter,
): pino.LoggerOptions {
  return {
    level,
    base: { service: 'pump-monitor' },
    redact: { paths: REDACT, censor: '[redacted]' },
    hooks: {
      streamWrite: scrubber(secrets),
      ...(limiter ? { logMethod: limiter.hook() } : {}),
    },
  };
}

/** pino's number for `warn`: the level whose repeats are counted. */
const WARN = 40;
/** Most distinct warnings remembered at once; past it the oldest is said and forgotten. */
const MAX_KINDS = 500;

interface Repeat {
  since: number;
  suppressed: number;
  /** Writes the line that says how many repeats were not written (bypassing the limiter). */
  report: (n: number) => void;
}

/**
 * Counts repeated warnings. A warning is written the first time; the same warning again within the
 * window (same message with its digits set aside, same pump, stage and logbook) is only counted; when
 * the window has passed, one line says how many were not written. An operator sees each problem at
 * once, and a flood costs one line a minute.
 */
export class RepeatLimiter {
  private readonly repeats = new Map<string, Repeat>();
  /** Warnings not written since start, over all kinds. */
  suppressedTotal = 0;

  constructor(
    readonly windowMs = 60_000,
    private readonly now: () => number = Date.now,
  ) {}

  /**
   * The kind of a warning: its message with numbers (ids, times, counts) set aside, and its bindings. A
   * warning that names its `attempt` and the bound it is `of` is one step of a bounded schedule (the
   * reconnection's, which ends at MAX_RECONEXIONES): each step is a kind of its own, so the schedule is
   * written whole. An attempt with no bound (a vector's retries go on) is held back like any repeat.
   */
  static key(msg: string, bindings: Record<string, unknown>, fields: Record<string, unknown> = {}): string {
    const where = ['pump', 'stage', 'logbook'].map((k) => String(fields[k] ?? bindings[k] ?? '')).join('|');
    const step = fields.of === undefined ? '' : `|attempt ${String(fields.attempt)} of ${String(fields.of)}`;
    return `${where}|${msg.replace(/\d+/g, '#')}${step}`;
  }

  /** Whether to write this warning now; otherwise it is counted. */
  admit(key: string, report: (n: number) => void): boolean {
    const now = this.now();
    const r = this.repeats.get(key);
    if (r && now - r.since < this.windowMs) {
      r.suppressed += 1;
      r.report = report;
      this.suppressedTotal += 1;
      return false;
    }
    if (r) this.close(key, r);
    if (this.repeats.size >= MAX_KINDS) {
      const [oldest, o] = this.repeats.entries().next().value as [string, Repeat];
      this.close(oldest, o);
    }
    this.repeats.set(key, { since: now, suppressed: 0, report });
    return true;
  }

  /** Says the counts of the warnings whose window has passed, and forgets them. */
  sweep(): void {
    const now = this.now();
    for (const [key, r] of this.repeats) if (now - r.since >= this.windowMs) this.close(key, r);
  }

  private close(key: string, r: Repeat): void {
    this.repeats.delete(key);
    if (r.suppressed > 0) r.report(r.suppressed);
  }

  /** pino's logMethod hook: warnings pass through admit(). */
  hook(): NonNullable<pino.LoggerOptions['hooks']>['logMethod'] {
    const limiter = this;
    return function (this: pino.Logger, args: Parameters<pino.LogFn>, method: pino.LogFn, level: number) {
      if (level !== WARN) return method.apply(this, args as never);
      const first = args[0] as unknown;
      const msg = typeof first === 'string' ? first : typeof args[1] === 'string' ? args[1] : '';
      const fields = typeof first === 'object' && first !== null ? (first as Record<string, unknown>) : {};
      const seconds = Math.round(limiter.windowMs / 1000);
      const report = (n: number) =>
        method.call(
          this,
          { ...fields, repeated: n, window_s: seconds },
          `${msg} [repeated ${n} more time${n === 1 ? '' : 's'} within ${seconds} s; not written each time]`,
        );
      if (limiter.admit(RepeatLimiter.key(msg, this.bindings(), fields), report))
        method.apply(this, args as never);
    };
  }
}
