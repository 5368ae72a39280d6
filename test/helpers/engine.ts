import pg from 'pg';
import pino, { type Logger } from 'pino';
import { type Config, type DatabaseConfig, loadConfig, type PumpConfig } from '../../src/config/env.js';
import { Monitor } from '../../src/engine/monitor.js';
import { migrateSource } from '../../src/source/replication/migrate.js';
import { quoteIdent } from '../../src/store/db.js';
import { migrate } from '../../src/store/schema.js';
import type { Clock } from '../../src/util/clock.js';
import { createTestDatabase, type TestDatabase } from './db.js';
import { FakeBackend } from './fake-backend.js';
import { Ledger, type LedgerOptions } from './ledger.js';
import { specPumpFor } from './spec-oracle.js';

export const API_KEY = 'test-key-7f3a9c';

/**
 * The source the acceptance and fault files run on: TEST_SOURCE=replication (CI runs them both ways), or
 * notify. Tests of the NOTIFY path itself (forged payloads, a trigger's duplicate notification) skip on
 * replication, where no notification is read.
 */
export const onReplication = process.env.TEST_SOURCE?.trim() === 'replication';

/** SOURCE for an engine a file configures itself (without the harness). */
export function sourceEnv(): Record<string, string> {
  return onReplication ? { SOURCE: 'replication' } : {};
}

/**
 * Test settings: short settle and expiry, fast retries and backoff, quiet logs. Pump B goes to `backendB`
 * (by default the same backend as pump A), spelled with its `/sensores_b` suffix.
 */
export function testEnv(
  db: TestDatabase,
  backend: FakeBackend,
  extra: Record<string, string> = {},
  backendB: FakeBackend = backend,
) {
  return {
    DATABASE_URL: db.url,
    BASE_URL: backend.url,
    BASE_URL_B: `${backendB.url}/sensores_b`,
    API_KEY,
    PORT: '0',
    SETTLE_MS: '300',
    GROUP_EXPIRY_MS: '1500',
    TIEMPO_ESPERA_BASE: '0.05',
    TIEMPO_ESPERA_MAX: '0.5',
    RETRY_BASE_MS: '20',
    RETRY_MAX_MS: '300',
    HTTP_TIMEOUT_MS: '2000',
    HEARTBEAT_INTERVAL_MS: '500',
    HEARTBEAT_TIMEOUT_MS: '500',
    LOG_LEVEL: 'silent',
    // A child engine of a file run on the replication source reads the slot too.
    ...sourceEnv(),
    ...extra,
  };
}

export interface Harness {
  db: TestDatabase;
  /** Pump A's backend (and pump B's, unless the harness was made with `ownBackendB`). */
  backend: FakeBackend;
  /** Pump B's backend. */
  backendB: FakeBackend;
  admin: pg.Pool;
  config: Config & { database: DatabaseConfig };
  pumps: { A: PumpConfig; B: PumpConfig };
  monitor: Monitor;
  startMonitor(
    env?: Record<string, string>,
    opts?: { logger?: Logger; clock?: Clock; summaryEveryMs?: number },
  ): Promise<Monitor>;
  /** A strict delivery ledger over this harness's pumps and backends. */
  ledger(opts?: Partial<LedgerOptions>): Ledger;
  close(): Promise<void>;
}

/**
 * A fresh database with the sensor tables, a fake backend (two with `ownBackendB`: pump B's apart), and
 * (when started) a monitor. The database is on the shared test server, or on `server` (an admin URL, a
 * file's private server: see private-server.ts).
 */
export async function harness(
  prefix: string,
  given: Record<string, string> = {},
  opts: { ownBackendB?: boolean; server?: string } = {},
): Promise<Harness> {
  // TEST_SOURCE=replication runs a file on the replication source: no triggers, rows from a slot.
  const source = given.SOURCE ?? process.env.TEST_SOURCE?.trim();
  const env = source ? { ...given, SOURCE: source } : given;
  const db = await createTestDatabase(prefix, opts.server);
  const defaults = loadConfig(env).pumps;
  const key = env.API_KEY ?? API_KEY;
  const backend = await new FakeBackend(
    opts.ownBackendB
      ? { pumps: defaults.filter((p) => p.id !== 'B'), apiKey: key }
      : { pumps: defaults, apiKey: key },
  ).start();
  const backendB = opts.ownBackendB
    ? await new FakeBackend({ pumps: defaults.filter((p) => p.id === 'B'), apiKey: key }).start()
    : backend;
  const admin = new pg.Pool({ connectionString: db.url, max: 4 });
  admin.on('error', () => {});
  const config = loadConfig(testEnv(db, backend, env, backendB), {
    requireDatabase: true,
    requireBackend: true,
  });
  // The built-in wirings are the specification's, table for table and field for field (a test's own
  // PUMPS_DIR is not): otherwise the backends and the ledger would not hold the engine to the spec's paths.
  if (!env.PUMPS_DIR) {
    const unknown = config.pumps.filter((p) => !specPumpFor(p)).map((p) => p.id);
    if (unknown.length > 0)
      throw new Error(`pumps ${unknown.join(', ')} are not wired as ../shared/spec says`);
  }
  const client = await admin.connect();
  // The whole wiring: a profile with logbooks gets their tables too.
  await migrate(client, config);
  await migrateSource(client, config);
  client.release();
  const pumps = {
    A: config.pumps.find((p) => p.id === 'A') as PumpConfig,
    B: config.pumps.find((p) => p.id === 'B') as PumpConfig,
  };
  const monitors: Monitor[] = [];
  const h: Harness = {
    db,
    backend,
    backendB,
    admin,
    config: config as Config & { database: DatabaseConfig },
    pumps,
    monitor: undefined as unknown as Monitor,
    async startMonitor(more = {}, o: { logger?: Logger; clock?: Clock; summaryEveryMs?: number } = {}) {
      const c = loadConfig(testEnv(db, backend, { ...env, ...more }, backendB), {
        requireDatabase: true,
        requireBackend: true,
      });
      const m = new Monitor({
        config: c as Config & { database: DatabaseConfig },
        logger: o.logger ?? pino({ level: 'silent' }),
        ...(o.clock ? { clock: o.clock } : {}),
        ...(o.summaryEveryMs !== undefined ? { summaryEveryMs: o.summaryEveryMs } : {}),
      });
      monitors.push(m);
      await m.start();
      h.monitor = m;
      return m;
    },
    ledger(o = {}) {
      return new Ledger({
        pumps: config.pumps,
        backends: Object.fromEntries(config.pumps.map((p) => [p.id, p.id === 'B' ? backendB : backend])),
        apiKey: key,
        ...o,
      });
    },
    async close() {
      for (const m of monitors) await m.stop(1_000).catch(() => {});
      await backend.stop();
      if (backendB !== backend) await backendB.stop();
      await admin.end();
      await db.drop();
    },
  };
  return h;
}

/** Inserts one timestamp of a pump in one transaction; `fields` limits which sensors report. */
export async function insertTimestamp(
  pool: pg.Pool,
  pump: PumpConfig,
  tiempo: string,
  opts: { fields?: string[]; value?: (field: string) => number | null } = {},
): Promise<number[]> {
  const sensors = opts.fields ? pump.sensors.filter((s) => opts.fields?.includes(s.field)) : pump.sensors;
  const client = await pool.connect();
  const ids: number[] = [];
  try {
    await client.query('BEGIN');
    for (const s of sensors) {
      const v = opts.value ? opts.value(s.field) : 100 + sensors.indexOf(s);
      const { rows } = await client.query<{ id: number }>(
        `INSERT INTO ${quoteIdent(s.table)} (tiempo_sensor, valor_sensor) VALUES ($1, $2) RETURNING id`,
        [tiempo, v],
      );
      ids.push(rows[0]?.id as number);
    }
    await client.query('COMMIT');
  } catch (err) {
    await client.query('ROLLBACK').catch(() => {});
    throw err;
  } finally {
    client.release();
  }
  return ids;
}
