import { readFileSync } from 'node:fs';
import type { ConnectionOptions } from 'node:tls';
import { z } from 'zod';
import {
  type Definitions,
  type LogbookDefinition,
  lintDefinitions,
  loadDefinitions,
  type PumpDefinition,
  parseDefinition,
  profileDir,
  selectDefinitions,
} from './pumps.js';
import { type Wiring, wiringOf } from './wiring.js';

/** A start-up configuration problem: the message is one line naming the variable, never a secret's value. */
export class ConfigError extends Error {
  override name = 'ConfigError';
}

export type Env = Record<string, string | undefined>;

export interface DatabaseConfig {
  host: string;
  port: number;
  database: string;
  user: string;
  password: string | undefined;
  ssl: false | ConnectionOptions;
  sslMode: SslMode;
}

export type SslMode = 'disable' | 'require' | 'verify-ca' | 'verify-full';

export interface PumpConfig extends PumpDefinition {
  /** The base URL with its path prefix, no trailing slash (e.g. http://host:8000/sensores). */
  baseUrl: string;
}

export interface LogbookConfig extends LogbookDefinition {
  /** The base variable's URL without a trailing /sensores or /sensores_b (e.g. http://host:8000). */
  baseUrl: string;
  /** Where each row is POSTed: baseUrl + endpoint (e.g. http://host:8000/gm-bitacoras/clasificar). */
  url: string;
  /** Per-attempt timeout of one POST (LOGBOOK_TIMEOUT_MS): the backend may call an LLM, sometimes twice. */
  timeoutMs: number;
}

export interface Config {
  /** Undefined when neither DATABASE_URL nor DB_HOST is set (`start` then embeds PostgreSQL). */
  database: DatabaseConfig | undefined;
  pumps: PumpConfig[];
  /** The logbook streams selected (PUMPS, or all of the folder's); empty for the default wiring. */
  logbooks: LogbookConfig[];
  /** The built-in profile chosen with PUMPS_PROFILE, undefined for PUMPS_DIR or the default folder. */
  profile: string | undefined;
  /** Where the definitions came from, all of them (served or not), and their digest. */
  wiring: Wiring;
  /** The definitions linter's warnings, one line each naming the file; the commands log them at start. */
  warnings: string[];
  apiKey: string;
  port: number;
  host: string;
  status: StatusSurfaceConfig;
  reconnect: { maxInitialAttempts: number; maxReconnects: number; baseDelayMs: number; maxDelayMs: number };
  heartbeat: { intervalMs: number; timeoutMs: number };
  assembler: {
    settleMs: number;
    expiryMs: number;
    fillMaxAgeMs: number;
    maxOpenGroups: number;
    /** A reading for a key closed less than this long ago is late; after it the key starts a new vector. */
    lateWindowMs: number;
  };
  delivery: {
    timeoutMs: number;
    sensorPosts: boolean;
    sensorConcurrency: number;
    sensorMaxAttempts: number;
    /** Per-sensor posts held in memory; beyond it they are deferred to the database (memory bound). */
    sensorQueue: number;
    retryBaseMs: number;
    retryMaxMs: number;
    /** Consecutive failures that open a backend's circuit, and the first wait before a trial call. */
    breakerThreshold: number;
    breakerHalfOpenMs: number;
    breakerHalfOpenMaxMs: number;
    /**
     * Requests in flight on one keep-alive connection to a backend (undici's `pipelining`); 1 sends the
     * next only after the answer (docs/performance.md has the measurement behind the default).
     */
    pipelining: number;
  };
  catchUpBatch: number;
  /** How often pump leases are checked and rebalanced between replicas. */
  leaseIntervalMs: number;
  /** Client-side limit for one state query (checkpoints, outbox); a half-open socket fails instead of hanging. */
  dbQueryTimeoutMs: number;
  shutdownTimeoutMs: number;
  /** How long delivered, dead and dropped outbox rows, and dead letters, are kept; how often to clean. */
  retention: { outboxMs: number; deadLetterMs: number; intervalMs: number };
  log: { level: string; file: string | undefined };
  /** Where rows come from (SOURCE): NOTIFY and the tables, or a logical replication slot (docs/replication.md). */
  source: SourceConfig;
}

export interface SourceConfig {
  kind: 'notify' | 'replication';
  /** REPLICATION_PLUGIN: the slot's output plug-in. */
  plugin: 'pgoutput' | 'wal2json';
  /** REPLICATION_SLOT; undefined: pump_monitor_<database>. */
  slot: string | undefined;
  /** REPLICATION_PUBLICATION (pgoutput); undefined: pump_monitor, made by migrate. */
  publication: string | undefined;
}

/** Names whose values are secrets: never echoed back in errors, logs or pages. */
const SECRET_VARS = new Set(['DB_PASSWORD', 'API_KEY', 'DATABASE_URL', 'DB_SSLROOTCERT']);

function fail(name: string, given: string | undefined, expected: string): never {
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

function read(env: Env, name: string): string | undefined {
  const v = env[name];
  return v === undefined || v.trim() === '' ? undefined : v.trim();
}

function num(env: Env, name: string, fallback: number, opts: { min?: number; int?: boolean } = {}): number {
  const raw = read(env, name);
  if (raw === undefined) return fallback;
  const n = Number(raw);
  const min = opts.min ?? 0;
  const kind = opts.int ? 'an integer' : 'a number';
  if (!Number.isFinite(n) || n < min || (opts.int && !Number.isInteger(n)))
    fail(name, raw, `${kind} >= ${min}`);
  return n;
}

const DAY_MS = 86_400_000;
const UNIT_MS: Record<string, number> = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000, d: DAY_MS };

/** A duration with its unit: `500ms`, `45s`, `30m`, `12h`, `7d`. */
function duration(env: Env, name: string, fallbackMs: number): number {
  const raw = read(env, name);
  if (raw === undefined) return fallbackMs;
  const m = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)$/.exec(raw);
  if (!m) return fail(name, raw, 'a duration with its unit, such as 7d, 12h, 30m or 45s');
  return Number(m[1]) * (UNIT_MS[m[2] as string] as number);
}

function bool(env: Env, name: string, fallback: boolean): boolean {
  const raw = read(env, name);
  if (raw === undefined) return fallback;
  if (/^(1|true|yes|on)$/i.test(raw)) return true;
  if (/^(0|false|no|off)$/i.test(raw)) return false;
  return fail(name, raw, 'true or false');
}

// ---- The status surface (issue 13): STATUS_AUTH and EVENTS_MAX_CLIENTS ------------------------------

export interface StatusSurfaceConfig {
  /** HTTP Basic credentials for every route but /healthz and /readyz; undefined: the surface is open. */
  auth: { user: string; password: string } | undefined;
  /** Most /events (SSE) clients at once; past it /events answers 503. */
  eventsMaxClients: number;
}

/** STATUS_AUTH=user:password. The value is a secret: a malformed one is reported without echoing it. */
function statusSurfaceConfig(env: Env): StatusSurfaceConfig {
  const raw = read(env, 'STATUS_AUTH');
  let auth: StatusSurfaceConfig['auth'];
  if (raw !== undefined) {
    const colon = raw.indexOf(':');
    const user = colon < 0 ? '' : raw.slice(0, colon);
    const password = colon < 0 ? '' : raw.slice(colon + 1);
    // RFC 7617: no control characters in either part, and the user cannot hold a ':'.
    // biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what it rejects
    if (user === '' || password === '' || /[\x00-\x1f\x7f]/.test(raw)) {
      throw new ConfigError(
        'STATUS_AUTH: got (hidden), expected user:password (a non-empty user without ":", then a non-empty password)',
      );
    }
    auth = { user, password };
  }
  return { auth, eventsMaxClients: num(env, 'EVENTS_MAX_CLIENTS', 50, { min: 1, int: true }) };
}

/**
 * A backend URL, checked: http(s), no query or fragment, and no user or password. The backend takes its key
 * in X-API-Key (API_KEY); credentials in the URL would be sent nowhere useful and end up in logs and pages.
 * Every message shows the URL with its credentials hidden.
 */
function backendUrl(name: string, raw: string, example: string): URL {
  const shown = hideUrlCredentials(raw);
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    return fail(name, shown, example);
  }
  if (url.username !== '' || url.password !== '') {
    fail(name, shown, 'a URL without a user or password (the backend key goes in API_KEY)');
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') fail(name, shown, 'an http:// or https:// URL');
  if (url.search || url.hash) fail(name, shown, 'a URL without ?query or #fragment');
  return url;
}

/**
 * Makes a base URL end with the pump's path prefix. Real `.env` files hold both
 * `http://host:8000` and `http://host:8000/sensores`; both mean the same base.
 */
export function normalizeBaseUrl(name: string, raw: string, prefix: string): string {
  const url = backendUrl(name, raw, `an http(s) URL such as http://host:8000${prefix}`);
  let path = url.pathname.replace(/\/+$/, '');
  if (!path.endsWith(prefix)) path += prefix;
  return `${url.origin}${path}`;
}

/**
 * The logbook base: the variable's URL with a trailing /sensores or /sensores_b removed, as the original
 * logbook listener derives it from BASE_URL (http://host:8000/sensores → http://host:8000).
 */
export function logbookBaseUrl(name: string, raw: string): string {
  const url = backendUrl(name, raw, 'an http(s) URL such as http://host:8000/sensores');
  const path = url.pathname.replace(/\/+$/, '').replace(/\/sensores(_b)?$/, '');
  return `${url.origin}${path}`;
}

const sslModes = z.enum(['disable', 'require', 'verify-ca', 'verify-full']);

function sslOptions(env: Env, mode: SslMode): false | ConnectionOptions {
  if (mode === 'disable') return false;
  const rootCert = read(env, 'DB_SSLROOTCERT');
  let ca: string | undefined;
  if (rootCert !== undefined) {
    if (rootCert.includes('-----BEGIN')) ca = rootCert.replace(/\\n/g, '\n');
    else {
      // A directory or a file this user may not read (a secret mounted for root) is a config error too.
      try {
        ca = readFileSync(rootCert, 'utf8');
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        fail('DB_SSLROOTCERT', rootCert, `a readable CA certificate file, or the PEM text itself (${code})`);
      }
    }
  }
  if (mode === 'require') return { rejectUnauthorized: false };
  if (ca === undefined) fail('DB_SSLROOTCERT', undefined, `a CA certificate when DB_SSLMODE=${mode}`);
  // verify-ca checks the chain but not the host name; verify-full checks both.
  return mode === 'verify-ca'
    ? { ca, rejectUnauthorized: true, checkServerIdentity: () => undefined }
    : { ca };
}

function databaseConfig(env: Env): DatabaseConfig | undefined {
  const url = read(env, 'DATABASE_URL');
  const modeRaw = read(env, 'DB_SSLMODE');
  let mode: SslMode = 'disable';
  if (modeRaw !== undefined) {
    const parsed = sslModes.safeParse(modeRaw);
    if (!parsed.success) fail('DB_SSLMODE', modeRaw, 'disable, require, verify-ca or verify-full');
    mode = parsed.data;
  }
  if (url !== undefined) {
    let u: URL;
    try {
      u = new URL(url);
    } catch {
      return fail('DATABASE_URL', url, 'postgres://user:password@host:port/database');
    }
    if (u.protocol !== 'postgres:' && u.protocol !== 'postgresql:') {
      fail('DATABASE_URL', url, 'a postgres:// or postgresql:// URL');
    }
    const urlMode = u.searchParams.get('sslmode');
    if (modeRaw === undefined && urlMode !== null) {
      const parsed = sslModes.safeParse(urlMode === 'prefer' || urlMode === 'allow' ? 'require' : urlMode);
      if (!parsed.success) fail('DATABASE_URL', url, 'sslmode=disable, require, verify-ca or verify-full');
      mode = parsed.data;
    }
    // The URL parser refuses ports above 65535; 0 is left to refuse here.
    const urlPort = u.port ? Number(u.port) : 5432;
    if (urlPort < 1)
      fail('DATABASE_URL', url, 'a port 1..65535 in postgres://user:password@host:port/database');
    return {
      host: decodeURIComponent(u.hostname) || 'localhost',
      port: urlPort,
      database:
        decodeURIComponent(u.pathname.replace(/^\//, '')) || decodeURIComponent(u.username) || 'postgres',
      user: decodeURIComponent(u.username) || 'postgres',
      password: u.password ? decodeURIComponent(u.password) : read(env, 'DB_PASSWORD'),
      ssl: sslOptions(env, mode),
      sslMode: mode,
    };
  }
  const host = read(env, 'DB_HOST');
  if (host === undefined) return undefined;
  return {
    host,
    port: port(env, 'DB_PORT', 5432),
    database: read(env, 'DB_NAME') ?? fail('DB_NAME', undefined, 'the database name when DB_HOST is set'),
    user: read(env, 'DB_USER') ?? fail('DB_USER', undefined, 'the database user when DB_HOST is set'),
    password: env.DB_PASSWORD,
    ssl: sslOptions(env, mode),
    sslMode: mode,
  };
}

export interface LoadOptions {
  /** Fail when no database is configured (listen, migrate, diagnose). */
  requireDatabase?: boolean;
  /** Fail when the backend variables are missing (listen). */
  requireBackend?: boolean;
  /**
   * The definitions as `listen` recorded them (pump_monitor.wiring), used instead of PUMPS_PROFILE and
   * PUMPS_DIR: checked again as a folder's would be.
   */
  recorded?: { profile: string | undefined; folder: string | undefined; definitions: unknown[] };
}

/**
 * The definitions folder: PUMPS_PROFILE names a built-in one, PUMPS_DIR any folder (not both); by default
 * the top of the built-in pumps/ folder (a.json, b.json).
 */
function readDefinitions(
  env: Env,
  recorded: LoadOptions['recorded'],
): {
  definitions: Definitions;
  source: string;
  profile: string | undefined;
  folder: string | undefined;
} {
  if (recorded !== undefined) {
    const source = 'the wiring recorded by listen';
    try {
      const located = recorded.definitions.map((raw) => ({
        definition: parseDefinition(raw, source),
        source,
      }));
      const warnings = lintDefinitions(located);
      const all = located.map((l) => l.definition);
      return {
        definitions: {
          pumps: all.filter((d): d is PumpDefinition => d.kind === 'pump'),
          logbooks: all.filter((d): d is LogbookDefinition => d.kind === 'logbook'),
          warnings,
        },
        source,
        profile: recorded.profile,
        folder: recorded.folder,
      };
    } catch (err) {
      throw new ConfigError((err as Error).message);
    }
  }
  const dir = read(env, 'PUMPS_DIR');
  const profile = read(env, 'PUMPS_PROFILE');
  if (dir !== undefined && profile !== undefined) {
    fail(
      'PUMPS_PROFILE',
      profile,
      'unset when PUMPS_DIR is set (choose one: a built-in profile or a folder)',
    );
  }
  const variable = profile !== undefined ? 'PUMPS_PROFILE' : 'PUMPS_DIR';
  try {
    const folder = profile !== undefined ? profileDir(profile) : dir;
    return {
      definitions: loadDefinitions(folder),
      source: folder ?? 'the built-in pumps/',
      profile,
      folder: profile === undefined ? dir : undefined,
    };
  } catch (err) {
    throw new ConfigError(`${variable}: ${(err as Error).message}`);
  }
}

/** Validates the whole environment at once; throws ConfigError with a one-line message. */
export function loadConfig(env: Env, opts: LoadOptions = {}): Config {
  const database = databaseConfig(env);
  if (opts.requireDatabase && !database) {
    fail('DB_HOST', undefined, 'a database host (or DATABASE_URL=postgres://user:password@host:port/db)');
  }
  const { definitions, source, profile, folder } = readDefinitions(env, opts.recorded);
  const ids = (
    read(env, 'PUMPS') ?? [...definitions.pumps, ...definitions.logbooks].map((d) => d.id).join(',')
  )
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  if (ids.length === 0) fail('PUMPS', env.PUMPS, 'a comma-separated list of pump ids such as A,B');
  let selected: { pumps: PumpDefinition[]; logbooks: LogbookDefinition[] };
  try {
    selected = selectDefinitions(definitions, [...new Set(ids)]);
  } catch (err) {
    throw new ConfigError(`${(err as Error).message} (definitions from ${source})`);
  }
  /** A base URL from its variable; without it, an error when a backend is required, else the local default. */
  const baseFrom = (name: string, what: string, fallback: string, normalize: (raw: string) => string) => {
    const raw = read(env, name);
    if (raw !== undefined) return normalize(raw);
    return opts.requireBackend ? fail(name, undefined, what) : fallback;
  };
  const pumps = selected.pumps.map((p) => {
    const baseUrl = baseFrom(
      p.baseUrlEnv,
      `the ${p.name} backend base URL, e.g. http://host:8000${p.pathPrefix}`,
      `http://127.0.0.1:8000${p.pathPrefix}`,
      (raw) => normalizeBaseUrl(p.baseUrlEnv, raw, p.pathPrefix),
    );
    return { ...p, baseUrl };
  });
  const logbookTimeoutMs = num(env, 'LOGBOOK_TIMEOUT_MS', 120_000, { min: 1 });
  const logbooks = selected.logbooks.map((l): LogbookConfig => {
    const baseUrl = baseFrom(
      l.baseUrlEnv,
      `the backend base URL for ${l.name}, e.g. http://host:8000/sensores`,
      'http://127.0.0.1:8000',
      (raw) => logbookBaseUrl(l.baseUrlEnv, raw),
    );
    return { ...l, baseUrl, url: `${baseUrl}${l.endpoint}`, timeoutMs: logbookTimeoutMs };
  });
  const apiKey = read(env, 'API_KEY');
  if (opts.requireBackend && apiKey === undefined)
    fail('API_KEY', undefined, 'the backend API key (X-API-Key)');
  const level = read(env, 'LOG_LEVEL') ?? 'info';
  if (!['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'].includes(level)) {
    fail('LOG_LEVEL', level, 'fatal, error, warn, info, debug, trace or silent');
  }
  return {
    database,
    pumps,
    logbooks,
    profile,
    wiring: wiringOf(profile, folder, { pumps: definitions.pumps, logbooks: definitions.logbooks }),
    warnings: definitions.warnings,
    apiKey: apiKey ?? '',
    port: port(env, 'PORT', 8080, true),
    host: read(env, 'HOST') ?? '0.0.0.0',
    status: statusSurfaceConfig(env),
    reconnect: {
      maxInitialAttempts: num(env, 'MAX_INTENTOS_INICIAL', 10, { min: 1, int: true }),
      maxReconnects: num(env, 'MAX_RECONEXIONES', 50, { min: 1, int: true }),
      baseDelayMs: num(env, 'TIEMPO_ESPERA_BASE', 5, { min: 0 }) * 1000,
      maxDelayMs: num(env, 'TIEMPO_ESPERA_MAX', 60, { min: 0 }) * 1000,
    },
    heartbeat: {
      intervalMs: num(env, 'HEARTBEAT_INTERVAL_MS', 10_000, { min: 10 }),
      timeoutMs: num(env, 'HEARTBEAT_TIMEOUT_MS', 5_000, { min: 10 }),
    },
    assembler: {
      settleMs: num(env, 'SETTLE_MS', 2_000),
      expiryMs: num(env, 'GROUP_EXPIRY_MS', 30_000, { min: 1 }),
      fillMaxAgeMs: num(env, 'FILL_MAX_AGE_MS', 60_000),
      maxOpenGroups: num(env, 'MAX_OPEN_GROUPS', 2_000, { min: 1, int: true }),
      lateWindowMs: num(env, 'LATE_WINDOW_MS', 600_000, { min: 0 }),
    },
    delivery: {
      timeoutMs: num(env, 'HTTP_TIMEOUT_MS', 10_000, { min: 1 }),
      sensorPosts: bool(env, 'SENSOR_POSTS', true),
      sensorConcurrency: num(env, 'SENSOR_POST_CONCURRENCY', 16, { min: 1, int: true }),
      sensorMaxAttempts: num(env, 'SENSOR_POST_MAX_ATTEMPTS', 8, { min: 1, int: true }),
      sensorQueue: num(env, 'SENSOR_POST_QUEUE', 20_000, { min: 1, int: true }),
      retryBaseMs: num(env, 'RETRY_BASE_MS', 200, { min: 1 }),
      retryMaxMs: num(env, 'RETRY_MAX_MS', 30_000, { min: 1 }),
      breakerThreshold: num(env, 'BREAKER_THRESHOLD', 5, { min: 1, int: true }),
      breakerHalfOpenMs: num(env, 'BREAKER_HALF_OPEN_MS', 1_000, { min: 1 }),
      breakerHalfOpenMaxMs: num(env, 'BREAKER_HALF_OPEN_MAX_MS', 30_000, { min: 1 }),
      pipelining: num(env, 'BACKEND_PIPELINING', 1, { min: 1, int: true }),
    },
    catchUpBatch: num(env, 'CATCHUP_BATCH', 500, { min: 1, int: true }),
    leaseIntervalMs: num(env, 'LEASE_INTERVAL_MS', 2_000, { min: 50 }),
    dbQueryTimeoutMs: num(env, 'DB_QUERY_TIMEOUT_MS', 15_000, { min: 100 }),
    shutdownTimeoutMs: num(env, 'SHUTDOWN_TIMEOUT_MS', 10_000, { min: 0 }),
    retention: {
      outboxMs: duration(env, 'OUTBOX_RETENTION', 7 * DAY_MS),
      deadLetterMs: duration(env, 'DEAD_LETTER_RETENTION', 30 * DAY_MS),
      intervalMs: num(env, 'RETENTION_INTERVAL_MS', 60_000, { min: 100 }),
    },
    log: { level, file: read(env, 'LOG_FILE') },
    source: sourceConfig(env),
  };
}

const IDENTIFIER = /^[a-z_][a-z0-9_]{0,62}$/;

function sourceConfig(env: Env): SourceConfig {
  const kind = read(env, 'SOURCE') ?? 'notify';
  if (kind !== 'notify' && kind !== 'replication') fail('SOURCE', kind, 'notify or replication');
  const plugin = read(env, 'REPLICATION_PLUGIN') ?? 'pgoutput';
  if (plugin !== 'pgoutput' && plugin !== 'wal2json')
    fail('REPLICATION_PLUGIN', plugin, 'pgoutput or wal2json');
  const slot = read(env, 'REPLICATION_SLOT');
  if (slot !== undefined && !IDENTIFIER.test(slot)) {
    fail('REPLICATION_SLOT', slot, 'a slot name: lower-case letters, digits and _, at most 63');
  }
  const publication = read(env, 'REPLICATION_PUBLICATION');
  if (publication !== undefined && !IDENTIFIER.test(publication)) {
    fail(
      'REPLICATION_PUBLICATION',
      publication,
      'a publication name: lower-case letters, digits and _, at most 63',
    );
  }
  return { kind, plugin, slot, publication };
}

/** A database target for messages: host, port, database and user, never the password. */
export function describeDatabase(db: DatabaseConfig): string {
  return `${db.user}@${db.host}:${db.port}/${db.database}${db.sslMode === 'disable' ? '' : ` (ssl ${db.sslMode})`}`;
}
