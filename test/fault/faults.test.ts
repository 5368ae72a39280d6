import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type pg from 'pg';
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { type Config, type DatabaseConfig, loadConfig } from '../../src/config/env.js';
import { Monitor } from '../../src/engine/monitor.js';
import { createPool, withClient } from '../../src/store/db.js';
import { migrate } from '../../src/store/schema.js';
import { startEmbeddedPostgres } from '../../src/tools/embedded-postgres.js';
import { freePort } from '../../src/tools/free-port.js';
import { runSimulator } from '../../src/tools/simulator.js';
import { spawnListener } from '../helpers/child.js';
import { createTestDatabase } from '../helpers/db.js';
import { FakeBackend } from '../helpers/fake-backend.js';
import { settleAndReport } from '../helpers/tally.js';
import { TcpProxy } from '../helpers/tcp-proxy.js';
import { pause, waitFor } from '../helpers/wait.js';

/**
 * Each test streams readings for both pumps while it breaks something real, then checks at a backend of
 * its own that every reading got a successful per-sensor POST and every full timestamp exactly one
 * unified POST, counted by Idempotency-Key.
 */

const FAST = {
  SETTLE_MS: '300',
  GROUP_EXPIRY_MS: '3000',
  TIEMPO_ESPERA_BASE: '0.05',
  TIEMPO_ESPERA_MAX: '0.4',
  RETRY_BASE_MS: '20',
  RETRY_MAX_MS: '300',
  HTTP_TIMEOUT_MS: '1000',
  HEARTBEAT_INTERVAL_MS: '400',
  HEARTBEAT_TIMEOUT_MS: '400',
  DB_QUERY_TIMEOUT_MS: '1500',
  BREAKER_HALF_OPEN_MS: '200',
  BREAKER_HALF_OPEN_MAX_MS: '800',
  SENSOR_POST_MAX_ATTEMPTS: '40',
  LOG_LEVEL: 'silent',
  API_KEY: 'fault-key',
};

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c().catch(() => {});
});

interface Setup {
  admin: pg.Pool;
  backend: FakeBackend;
  database: DatabaseConfig;
  config: Config & { database: DatabaseConfig };
  env: Record<string, string>;
}

/** A fresh database with the tables and a backend; `dbUrl` may route the engine through a proxy. */
async function setup(prefix: string, server?: { url: string; database: DatabaseConfig }): Promise<Setup> {
  let url: string;
  let database: DatabaseConfig;
  if (server) {
    url = server.url;
    database = server.database;
  } else {
    const db = await createTestDatabase(prefix);
    cleanups.push(() => db.drop());
    url = db.url;
    database = db.config;
  }
  const backend = await new FakeBackend().start();
  cleanups.push(() => backend.stop());
  const env = { ...FAST, DATABASE_URL: url, BASE_URL: backend.url, BASE_URL_B: backend.url };
  const config = loadConfig(env, { requireDatabase: true, requireBackend: true }) as Config & {
    database: DatabaseConfig;
  };
  await withClient(database, 'test-migrate', (c) => migrate(c, config.pumps));
  const admin = createPool(database, 'test-admin', 3);
  cleanups.push(() => admin.end());
  return { admin, backend, database, config, env };
}

/** A fresh database the engine reaches through a TCP proxy of the test's own (the test itself goes direct). */
async function behindProxy(prefix: string): Promise<{ s: Setup; proxy: TcpProxy; viaProxy: string }> {
  const db = await createTestDatabase(prefix);
  cleanups.push(() => db.drop());
  const proxy = await new TcpProxy(db.config.port).start();
  cleanups.push(() => proxy.stop());
  const viaProxy = new URL(db.url);
  viaProxy.port = String(proxy.port);
  const s = await setup(prefix, { url: db.url, database: db.config });
  return { s, proxy, viaProxy: viaProxy.toString() };
}

function withEnv(s: Setup, overrides: Record<string, string>): Config & { database: DatabaseConfig } {
  return loadConfig({ ...s.env, ...overrides }, { requireDatabase: true }) as Config & {
    database: DatabaseConfig;
  };
}

async function monitor(config: Config & { database: DatabaseConfig }): Promise<Monitor> {
  // FAULT_LOG=path writes the engine's debug log there, for investigating a failure.
  const logger = process.env.FAULT_LOG
    ? pino({ level: 'debug' }, pino.destination(process.env.FAULT_LOG))
    : pino({ level: 'silent' });
  const m = new Monitor({ config, logger });
  cleanups.push(() => m.stop(1_000));
  await m.start();
  return m;
}

/** Streams full timestamps for both pumps (one transaction per pump timestamp). */
function stream(s: Setup, count: number, rate = 25, signal?: AbortSignal) {
  return runSimulator({
    pool: s.admin,
    pumps: s.config.pumps,
    rate,
    count,
    ...(signal ? { signal } : {}),
    startTime: new Date(Date.UTC(2025, 0, 1) + Math.floor(Math.random() * 1e9) * 1000),
    onError: () => {},
  });
}

/** Waits until a child listener answers /readyz with 200. */
async function ready(port: string): Promise<void> {
  await waitFor(
    `the listener on port ${port} to be ready`,
    async () => {
      try {
        return (await fetch(`http://127.0.0.1:${port}/readyz`)).status === 200;
      } catch {
        return false;
      }
    },
    30_000,
  );
}

function expectClean(t: { lost: number; duplicated: number; replays: number; vectors: number }) {
  expect(t.vectors).toBeGreaterThan(0);
  expect(t.lost).toBe(0);
  expect(t.duplicated).toBe(0);
}

describe('fault injection', () => {
  it('the LISTEN connection is terminated several times', async () => {
    const s = await setup('fault_terminate');
    const m = await monitor(s.config);
    const streaming = stream(s, 100);
    for (let i = 0; i < 4; i++) {
      await pause(700);
      await waitFor('listening again', () => m.listener.listening);
      const { rows } = await s.admin.query(
        "SELECT pg_terminate_backend(pid) AS ok FROM pg_stat_activity WHERE application_name LIKE 'pm-listen:%' AND datname = current_database()",
      );
      expect(rows).toHaveLength(1);
    }
    await streaming;
    const t = await settleAndReport('listen-connection-terminated', s.admin, s.config.pumps, s.backend);
    expectClean(t);
    expect(t.replays).toBe(0);
    expect(m.listener.reconnects).toBeGreaterThanOrEqual(4);
  });

  it('PostgreSQL stops and comes back mid-stream', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'pm-fault-pg-'));
    chmodSync(dir, 0o755);
    const server = await startEmbeddedPostgres({ dataDir: join(dir, 'data') });
    cleanups.push(async () => {
      await server.stop();
      rmSync(dir, { recursive: true, force: true });
    });
    await server.createDatabase('plant');
    const database = server.database('plant');
    const url = `postgres://${database.user}:${encodeURIComponent(database.password ?? '')}@127.0.0.1:${server.port}/plant`;
    const s = await setup('fault_restart', { url, database });
    const m = await monitor(s.config);
    const streaming = stream(s, 120);
    await pause(1_200);
    await server.stop();
    await pause(1_500);
    await server.start();
    await streaming;
    await waitFor('listening again', () => m.listener.listening, 30_000);
    const t = await settleAndReport('postgres-restarted', s.admin, s.config.pumps, s.backend);
    expectClean(t);
    expect(t.replays).toBe(0);
    expect(m.listener.reconnects).toBeGreaterThanOrEqual(1);
  });

  it('a half-open socket: the network stops forwarding without closing', async () => {
    const { s, proxy, viaProxy } = await behindProxy('fault_halfopen');
    const m = await monitor(withEnv(s, { DATABASE_URL: viaProxy }));
    const streaming = stream(s, 100);
    await pause(1_200);
    proxy.blackhole();
    await streaming;
    await waitFor(
      'listening again after the dead socket is noticed',
      () => m.listener.reconnects >= 1,
      30_000,
    );
    const t = await settleAndReport('half-open-socket', s.admin, s.config.pumps, s.backend);
    expectClean(t);
    expect(t.replays).toBe(0);
  });

  it('the backend answers 500/503, then times out, then recovers', async () => {
    const s = await setup('fault_backend');
    let phase: 'ok' | 'errors' | 'hang' = 'ok';
    let n = 0;
    s.backend.behaviour = () => {
      if (phase === 'errors') return { status: n++ % 2 ? 500 : 503 };
      if (phase === 'hang') return 'hang';
      return undefined;
    };
    const m = await monitor(s.config);
    const streaming = stream(s, 150);
    await pause(800);
    phase = 'errors';
    await pause(1_500);
    phase = 'hang';
    await pause(1_500);
    phase = 'ok';
    await streaming;
    const t = await settleAndReport('backend-5xx-then-timeouts', s.admin, s.config.pumps, s.backend);
    expectClean(t);
    expect(s.backend.requests.some((r) => r.status === 500)).toBe(true);
    expect(s.backend.requests.some((r) => r.status === 0)).toBe(true);
    // Vectors go out in order once the backend is back.
    const order = s.backend.requests
      .filter((r) => r.status === 200 && r.path === '/sensores/predecir-bomba')
      .map((r) => r.idempotencyKey);
    // Deliveries are recorded in batches, a moment after the backend's answer.
    const recorded = async () =>
      (
        await s.admin.query<{ k: string }>(
          "SELECT idempotency_key AS k FROM pump_monitor.outbox WHERE pump = 'A' AND status = 'sent' ORDER BY id",
        )
      ).rows.map((r) => r.k);
    await waitFor(
      'every delivered vector recorded as sent',
      async () => (await recorded()).length >= order.length,
    );
    expect(order).toEqual(await recorded());
    expect(m.status().pumps).toBeDefined();
  });

  it('a long backend outage overflows the per-sensor queue: posts wait in the database, no vector is lost', async () => {
    const s = await setup('fault_overflow');
    let down = true;
    s.backend.behaviour = (r) => (down && r.path.includes('/prediccion') ? { status: 503 } : undefined);
    const m = await monitor(withEnv(s, { SENSOR_POST_QUEUE: '200', SENSOR_POST_CONCURRENCY: '4' }));
    await stream(s, 80);
    await waitFor('posts deferred to the database', async () => {
      const { rows } = await s.admin.query('SELECT count(*)::int AS n FROM pump_monitor.deferred_posts');
      return (rows[0]?.n ?? 0) > 1_000;
    });
    expect((m.status() as { overloaded: boolean }).overloaded).toBe(true);
    down = false;
    const t = await settleAndReport('per-sensor-queue-overflow', s.admin, s.config.pumps, s.backend);
    expectClean(t);
    expect(t.replays).toBe(0);
    const pumps = m.status().pumps as Record<string, { vectors_dropped: number }>;
    expect((pumps.A?.vectors_dropped ?? 0) + (pumps.B?.vectors_dropped ?? 0)).toBe(0);
    await waitFor('the deferred table emptied', async () => {
      const { rows } = await s.admin.query('SELECT count(*)::int AS n FROM pump_monitor.deferred_posts');
      return rows[0]?.n === 0;
    });
  });

  it('the backend answers 429 with Retry-After, and the wait is honoured', async () => {
    const s = await setup('fault_429');
    let limited = 60;
    const limitedAt = new Map<string, number>();
    const retriedAfter: number[] = [];
    s.backend.behaviour = (r) => {
      const key = r.idempotencyKey ?? '';
      const first = limitedAt.get(key);
      if (first !== undefined && !retriedAfter.includes(first)) retriedAfter.push(Date.now() - first);
      if (limited > 0) {
        limited -= 1;
        limitedAt.set(key, Date.now());
        return { status: 429, headers: { 'retry-after': '1' } };
      }
      return undefined;
    };
    await monitor(s.config);
    await stream(s, 60);
    const t = await settleAndReport('backend-429-retry-after', s.admin, s.config.pumps, s.backend);
    expectClean(t);
    expect(t.replays).toBe(0);
    expect(retriedAfter.length).toBeGreaterThan(0);
    // Retry-After: 1 means no retry of that request sooner than a second later.
    expect(Math.min(...retriedAfter)).toBeGreaterThanOrEqual(950);
  });

  it('the process is SIGKILLed mid-stream and restarted', async () => {
    const s = await setup('fault_sigkill');
    const env = { ...s.env, PORT: String(await freePort()), LOG_LEVEL: 'warn' };
    const first = spawnListener(env);
    cleanups.push(async () => void first.proc.kill('SIGKILL'));
    await ready(env.PORT);
    const streaming = stream(s, 150);
    await waitFor('the first process delivering', () => s.backend.ok('/predecir-bomba').length > 5, 30_000);
    first.proc.kill('SIGKILL');
    await first.exited;
    await pause(500);
    const second = spawnListener(env);
    cleanups.push(async () => void second.proc.kill('SIGKILL'));
    await streaming;
    const t = await settleAndReport('sigkill-and-restart', s.admin, s.config.pumps, s.backend);
    second.proc.kill('SIGTERM');
    expect(await second.exited).toBe(0);
    expectClean(t);
  });

  it('a burst of malformed notifications among good ones', async () => {
    const s = await setup('fault_malformed');
    const m = await monitor(s.config);
    const streaming = stream(s, 100);
    const bad = [
      '{',
      '[]',
      '"x"',
      '{"id_sensor": 1}',
      '{"id_sensor": "a", "valor": 1, "tiempo_sensor": "t"}',
    ];
    const channels = s.config.pumps.flatMap((p) => p.sensors.map((x) => x.channel));
    let sent = 0;
    for (let round = 0; round < 10; round++) {
      for (const payload of bad) {
        await s.admin.query('SELECT pg_notify($1, $2)', [channels[sent % channels.length], payload]);
        sent += 1;
      }
      await pause(100);
    }
    await streaming;
    const t = await settleAndReport('malformed-burst', s.admin, s.config.pumps, s.backend);
    expectClean(t);
    const status = m.status().pumps as Record<string, { readings_invalid: number }>;
    expect((status.A?.readings_invalid ?? 0) + (status.B?.readings_invalid ?? 0)).toBe(sent);
    const { rows } = await s.admin.query(
      "SELECT count(*)::int AS n FROM pump_monitor.dead_letters WHERE kind = 'notification'",
    );
    expect(rows[0]?.n).toBe(sent);
  });

  it('the network to the database is gone past the reconnection limit: exit non-zero, lose nothing after a restart', async () => {
    const { s, proxy, viaProxy } = await behindProxy('fault_netgone');
    const env = {
      ...s.env,
      DATABASE_URL: viaProxy,
      PORT: String(await freePort()),
      LOG_LEVEL: 'warn',
      MAX_RECONEXIONES: '3',
    };
    const first = spawnListener(env);
    cleanups.push(async () => void first.proc.kill('SIGKILL'));
    await ready(env.PORT);
    const streaming = stream(s, 150);
    await waitFor('the first process delivering', () => s.backend.ok('/predecir-bomba').length > 3, 30_000);
    await proxy.refuse();
    const code = await first.exited;
    expect(code).toBe(1);
    const last = first.output.filter((l) => l.startsWith('{')).at(-1) ?? '';
    expect(last).toContain('MAX_RECONEXIONES');
    await proxy.restore();
    const second = spawnListener(env);
    cleanups.push(async () => void second.proc.kill('SIGKILL'));
    await streaming;
    const t = await settleAndReport('network-gone-past-limit', s.admin, s.config.pumps, s.backend);
    second.proc.kill('SIGTERM');
    expect(await second.exited).toBe(0);
    expectClean(t);
  });
});
