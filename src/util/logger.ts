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
  return pino(loggerOptions(o.level, o.secrets), pino.multistream(streams));
}

/** The options every pump-monitor logger uses: redacted fields, and known secret values scrubbed. */
export function loggerOptions(level: string, secrets: (string | undefined)[]): pino.LoggerOptions {
  return {
    level,
    base: { service: 'pump-monitor' },
    redact: { paths: REDACT, censor: '[redacted]' },
    hooks: { streamWrite: scrubber(secrets) },
  };
}
