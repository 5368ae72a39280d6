import { type DatabaseConfig, databaseConfig } from './database.js';
import { bool, DAY_MS, duration, type Env, fail, num, port, read } from './read.js';
import { type LogbookConfig, type PumpConfig, type RecordedWiring, servedDefinitions } from './selection.js';
import { type SourceConfig, sourceConfig } from './source.js';
import { type StatusSurfaceConfig, statusSurfaceConfig } from './status-surface.js';
import type { Wiring } from './wiring.js';

/**
 * The whole configuration, validated at once from the environment. Each concern reads its own variables
 * (read.ts holds the parsers and ConfigError; database.ts, selection.ts, urls.ts, status-surface.ts and
 * source.ts the rest); this file holds the tunables and puts the pieces together. Everything the callers
 * import from here is re-exported below.
 */

export { type DatabaseConfig, describeDatabase } from './database.js';
export { ConfigError, type Env, hideUrlCredentials, port } from './read.js';
export type { LogbookConfig, PumpConfig } from './selection.js';
export type { SourceConfig } from './source.js';
export type { StatusSurfaceConfig } from './status-surface.js';

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
    /** VECTOR_WINDOW: vectors of a pump sent before their delivery records are written (crash resends). */
    vectorWindow: number;
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

export interface LoadOptions {
  /** Fail when no database is configured (listen, migrate, diagnose). */
  requireDatabase?: boolean;
  /** Fail when the backend variables are missing (listen). */
  requireBackend?: boolean;
  /**
   * The definitions as `listen` recorded them (pump_monitor.wiring), used instead of PUMPS_PROFILE and
   * PUMPS_DIR: checked again as a folder's would be.
   */
  recorded?: RecordedWiring;
}

/** Validates the whole environment at once; throws ConfigError with a one-line message. */
export function loadConfig(env: Env, opts: LoadOptions = {}): Config {
  const database = databaseConfig(env);
  if (opts.requireDatabase && !database) {
    fail('DB_HOST', undefined, 'a database host (or DATABASE_URL=postgres://user:password@host:port/db)');
  }
  const { pumps, logbooks, profile, wiring, warnings } = servedDefinitions(
    env,
    opts.recorded,
    opts.requireBackend,
  );
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
    wiring,
    warnings,
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
      vectorWindow: num(env, 'VECTOR_WINDOW', 8, { min: 1, int: true }),
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
