import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import pino, { type Logger } from 'pino';

export interface LoggerOptions {
  level: string;
  /** Optional file besides stdout (e.g. logs/bomba_a.log). */
  file?: string | undefined;
  /** Values that must never be written: the API key, the database password. */
  secrets: (string | undefined)[];
  /** Human-readable lines instead of JSON (a terminal); JSON otherwise. */
  pretty?: boolean;
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
    mkdirSync(dirname(o.file), { recursive: true });
    streams.push({
      level: o.level as pino.Level,
      stream: pino.transport({
        target: 'pino-roll',
        options: { file: o.file, size: '10m', limit: { count: 5 }, mkdir: true },
      }),
    });
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
