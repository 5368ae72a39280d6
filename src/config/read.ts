/**
 * Reading one variable: the parsers every setting goes through (number, port, duration, flag), and the one
 * error they raise. A value is trimmed and a blank one counts as unset; a secret's value is never shown.
 */

/** A start-up configuration problem: the message is one line naming the variable, never a secret's value. */
export class ConfigError extends Error {
  override name = 'ConfigError';
}

export type Env = Record<string, string | undefined>;

/** Names whose values are secrets: never echoed back in errors, logs or pages. */
const SECRET_VARS = new Set(['DB_PASSWORD', 'API_KEY', 'DATABASE_URL', 'DB_SSLROOTCERT']);

export function fail(name: string, given: string | undefined, expected: string): never {
  const shown = given === undefined ? 'nothing' : SECRET_VARS.has(name) ? '(hidden)' : JSON.stringify(given);
  throw new ConfigError(`${name}: got ${shown}, expected ${expected}`);
}

/**
 * A URL as it may be shown: its user and password replaced. It works on text that does not parse as a URL
 * too (the part between `//` and the last `@` before the path is the credentials).
 */
export function hideUrlCredentials(raw: string): string {
  return raw.replace(/(\/\/)[^/?#]*@/, '$1(hidden)@');
}

/** A port: an integer 1..65535 (0 as well where `allowZero`: the system picks a free one). */
export function port(env: Env, name: string, fallback: number, allowZero = false): number {
  const raw = read(env, name);
  if (raw === undefined) return fallback;
  const n = Number(raw);
  const min = allowZero ? 0 : 1;
  if (!/^\d+$/.test(raw) || !Number.isInteger(n) || n < min || n > 65_535) {
    fail(name, raw, `a port, an integer ${min}..65535`);
  }
  return n;
}

export function read(env: Env, name: string): string | undefined {
  const v = env[name];
  return v === undefined || v.trim() === '' ? undefined : v.trim();
}

export function num(
  env: Env,
  name: string,
  fallback: number,
  opts: { min?: number; int?: boolean } = {},
): number {
  const raw = read(env, name);
  if (raw === undefined) return fallback;
  const n = Number(raw);
  const min = opts.min ?? 0;
  const kind = opts.int ? 'an integer' : 'a number';
  if (!Number.isFinite(n) || n < min || (opts.int && !Number.isInteger(n)))
    fail(name, raw, `${kind} >= ${min}`);
  return n;
}

export const DAY_MS = 86_400_000;
const UNIT_MS: Record<string, number> = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000, d: DAY_MS };

/** A duration with its unit: `500ms`, `45s`, `30m`, `12h`, `7d`. */
export function duration(env: Env, name: string, fallbackMs: number): number {
  const raw = read(env, name);
  if (raw === undefined) return fallbackMs;
  const m = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)$/.exec(raw);
  if (!m) return fail(name, raw, 'a duration with its unit, such as 7d, 12h, 30m or 45s');
  return Number(m[1]) * (UNIT_MS[m[2] as string] as number);
}

export function bool(env: Env, name: string, fallback: boolean): boolean {
  const raw = read(env, name);
  if (raw === undefined) return fallback;
  if (/^(1|true|yes|on)$/i.test(raw)) return true;
  if (/^(0|false|no|off)$/i.test(raw)) return false;
  return fail(name, raw, 'true or false');
}
