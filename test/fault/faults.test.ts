import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type pg from 'pg';
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { type Config, type DatabaseConfig, loadConfig } from '../../src/config/env.js';
import { Monitor } from '../../src/engine/monitor.js';
import { migrateSource } from '../../src/source/replication/migrate.js';
import { createPool, withClient } from '../../src/store/db.js';
import { migrate } from '../../src/store/schema.js';
import { freePort } from '../../src/tools/free-port.js';
import { startEmbeddedPostgres } from '../../src/tools/postgres/embedded.js';
import { runSimulator, type SimulatorResult } from '../../src/tools/simulator.js';
import {
  crashReplayBound,
  expectResendsOnlyUnrecorded,
  factsAtKill,
  reportResends,
  resendsAfterKill,
} from '../helpers/bounds.js';
import { spawnListener } from '../helpers/child.js';
import { type Cleanup, runCleanups } from '../helpers/cleanup.js';
import { createTestDatabase } from '../helpers/db.js';
import { onReplication, sourceEnv } from '../helpers/engine.js';
import { FakeBackend } from '../helpers/fake-backend.js';
import { expectExactlyOnce, expectWithinBound, Ledger } from '../helpers/ledger.js';
import { TcpProxy } from '../helpers/tcp-proxy.js';
import { waitFor } from '../helpers/wait.js';

/**
 * Each test streams readings for both pumps while it breaks something real, checks that the fault
 * landed while readings were still flowing, and then counts, at each pump's own backend, every request
 * answered 200 with the strict ledger (test/helpers/ledger.ts): every row posted once to its pump's path,
 * every full timestamp's vector once, nothing else. Where a process dies, the excess is held to a bound.
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

const cleanups: Cleanup[] = [];
afterEach(() => runCleanups(cleanups));

interface Setup {
  admin: pg.Pool;
  /** Pump A's backend. */
  backend: FakeBackend;
  /** Pump B's backend, apart from A's: routing through BASE_URL_B is part of every test. */
  backendB: FakeBackend;
  ledger: Ledger;
  database: DatabaseConfig;
  config: Config & { database: DatabaseConfig };
  env: Record<string, string>;
}

/** A fresh database with the tables and a backend per pump; `server` may be a PostgreSQL of the test's own. */
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
  const pumps = loadConfig({}).pumps;
  const served = (id: string) => ({ pumps: pumps.filter((p) => p.id === id), apiKey: FAST.API_KEY });
  const backend = await new FakeBackend(served('A')).start();
  cleanups.push(() => backend.stop());
  const backendB = await new FakeBackend(served('B')).start();
  cleanups.push(() => backendB.stop());
  // BASE_URL_B without its /sensores_b suffix: the engine appends it (both spellings occur in .env files).
  const env = { ...FAST, ...sourceEnv(), DATABASE_URL: url, BASE_URL: backend.url, BASE_URL_B: backendB.url };
  const config = loadConfig(env, { requireDatabase: true, requireBackend: true }) as Config & {
    database: DatabaseConfig;
  };
  await withClient(database, 'test-migrate', async (c) => {
    await migrate(c, config.pumps);
    await migrateSource(c, config);
  });
  const admin = createPool(database, 'test-admin', 3);
  cleanups.push(() => admin.end());
  const ledger = new Ledger({
    pumps: config.pumps,
    backends: { A: backend, B: backendB },
    apiKey: FAST.API_KEY,
  });
  return { admin, backend, backendB, ledger, database, config, env };
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
  cleanups.push(Object.assign(() => m.stop(1_000), { label: () => `monitor stop (at: ${m.stopStage})` }));
  await m.start();
  return m;
}

interface Stream {
  done: Promise<SimulatorResult>;
  /** Pump timestamps committed so far. */
  ticks(): number;
  /** Pump timestamps the stream will commit when nothing fails. */
  total: number;
  /** Failed writes the test did not allow. */
  errors: Error[];
  /** Failed writes the test allowed (a database the test stopped on purpose). */
  allowed: Error[];
  /** Notes how far the stream was when a fault landed. */
  landed(what: string): void;
  faults: { what: string; at: number }[];
}

/**
 * Streams full timestamps for both pumps (one transaction per pump timestamp), each run with its own
 * unique ISO tiempo_sensor values. A failed write fails the test unless `allowError` says it was expected.
 */
function stream(
  s: Setup,
  count: number,
  rate = 25,
  allowError: (err: Error) => boolean = () => false,
): Stream {
  let ticks = 0;
  const errors: Error[] = [];
  const allowed: Error[] = [];
  const faults: { what: string; at: number }[] = [];
  const done = runSimulator({
    pool: s.admin,
    pumps: s.config.pumps,
    rate,
    count,
    startTime: new Date(Date.UTC(2025, 0, 1) + Math.floor(Math.random() * 1e9) * 1000),
    onTick: () => {
      ticks += 1;
    },
    onError: (err) => (allowError(err) ? allowed : errors).push(err),
  });
  return {
    done,
    ticks: () => ticks,
    total: count * s.config.pumps.length,
    errors,
    allowed,
    faults,
    landed: (what) => faults.push({ what, at: ticks }),
  };
}

const untilTicks = (st: Stream, n: number) =>
  waitFor(`the stream to reach ${n} pump timestamps`, () => st.ticks() >= n, 60_000);

/**
 * The stream wrote everything it meant to (or reported each failure), the test's expectations match what
 * it wrote, and each fault landed after some readings and before the last ones.
 */
async function finished(st: Stream, opts: { allowedErrors?: boolean } = {}): Promise<SimulatorResult> {
  const result = await st.done;
  expect(st.errors).toEqual([]);
  if (!opts.allowedErrors) expect(st.allowed).toEqual([]);
  expect(result.timestamps + result.errors).toBe(st.total);
  expect(result.errors).toBe(st.errors.length + st.allowed.length);
  expect(st.faults.length).toBeGreaterThan(0);
  for (const f of st.faults) {
    expect(f.at, `${f.what}: pump timestamps committed before it`).toBeGreaterThan(0);
    expect(f.at, `${f.what}: pump timestamps committed after it`).toBeLessThan(result.timestamps);
  }
  return result;
}

/** The ledger's expectations are what the stream wrote: every row a reading, every pump timestamp a vector. */
function matchesStream(c: { readings: number; vectors: number }, result: SimulatorResult): void {
  expect({ readings: c.readings, vectors: c.vectors }).toEqual({
    readings: result.rows,
    vectors: result.timestamps,
  });
}

/** SENSOR_POST_CONCURRENCY of the tests whose process dies: the crash bound is written from it. */
const CONCURRENCY = 16;
/** VECTOR_WINDOW of the killed processes (the README's default, set explicitly): the vectors' crash bound. */
const WINDOW = 8;

/** What `factsAtKill` reads: the direct pool, the pumps and each pump's backend. */
function killed(s: Setup) {
  return { admin: s.admin, pumps: s.config.pumps, backends: { A: s.backend, B: s.backendB } };
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

/** The JSON log lines of a child with the message `msg`. */
function logLines(output: string[], msg: string): Record<string, unknown>[] {
  return output
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as Record<string, unknown>)
    .filter((l) => l.msg === msg);
}

describe('fault injection', { timeout: 180_000 }, () => {
  it('the LISTEN connection is terminated several times', async () => {
    const s = await setup('fault_terminate');
    const m = await monitor(s.config);
    const st = stream(s, 100);
    for (let i = 1; i <= 4; i++) {
      await untilTicks(st, i * 35);
      await waitFor('listening again', () => m.units.listener.listening);
      const { rows } = await s.admin.query(
        'SELECT pg_terminate_backend(pid) AS ok FROM pg_stat_activity WHERE application_name = $1 AND datname = current_database()',
        [`pm-listen:${m.replicaId}`],
      );
      expect(rows).toEqual([{ ok: true }]);
      st.landed(`termination ${i}`);
    }
    const result = await finished(st);
    const c = await s.ledger.settle({ admin: s.admin, monitors: [m] });
    s.ledger.report('listen-connection-terminated');
    matchesStream(c, result);
    expectExactlyOnce(c);
    expect(m.units.listener.counters().reconnects).toBeGreaterThanOrEqual(4);
  });

  it('PostgreSQL stops and comes back mid-stream', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'pm-fault-pg-'));
    chmodSync(dir, 0o755);
    const server = await startEmbeddedPostgres({
      dataDir: join(dir, 'data'),
      ...(onReplication ? { postgresFlags: ['-c', 'wal_level=logical'] } : {}),
    });
    cleanups.push(async () => {
      await server.stop();
      rmSync(dir, { recursive: true, force: true });
    });
    await server.createDatabase('plant');
    const database = server.database('plant');
    const url = `postgres://${database.user}:${encodeURIComponent(database.password ?? '')}@127.0.0.1:${server.port}/plant`;
    const s = await setup('fault_restart', { url, database });
    const m = await monitor(s.config);
    // The stream's own writes fail while the server is down, and until its pool has new connections:
    // from the stop until the first timestamp committed after the start. Any other failure fails the test.
    let outage: 'before' | 'down' | 'after' = 'before';
    let ticksAtStart = Number.POSITIVE_INFINITY;
    const allow = () =>
      outage === 'down' || (outage === 'after' && st.ticks() < ticksAtStart + s.config.pumps.length);
    const st = stream(s, 120, 25, allow);
    await untilTicks(st, 60);
    outage = 'down';
    await server.stop();
    st.landed('server stopped');
    await waitFor(
      'the stream and the engine to hit the outage',
      () =>
        st.allowed.length >= 3 &&
        !m.units.listener.listening &&
        m.units.listener.counters().reconexionesConsecutivas >= 2,
      30_000,
    );
    ticksAtStart = st.ticks();
    outage = 'after';
    await server.start();
    await waitFor('the stream to write again', () => st.ticks() > ticksAtStart, 30_000);
    st.landed('server started');
    const result = await finished(st, { allowedErrors: true });
    expect(st.allowed.length).toBeGreaterThan(0);
    await waitFor('listening again', () => m.units.listener.listening, 30_000);
    const c = await s.ledger.settle({ admin: s.admin, monitors: [m] });
    s.ledger.report('postgres-restarted');
    matchesStream(c, result);
    expectExactlyOnce(c);
    expect(m.units.listener.counters().reconnects).toBeGreaterThanOrEqual(1);
  });

  it('a half-open socket: the network stops forwarding without closing', async () => {
    const { s, proxy, viaProxy } = await behindProxy('fault_halfopen');
    // On SOURCE=replication the silenced session's walsender would go on holding the slot until the
    // server's own timeout: disabled here, so only the engine can free the slot for its next session.
    if (onReplication) {
      const { rows } = await s.admin.query<{ db: string }>('SELECT current_database() AS db');
      await s.admin.query(`ALTER DATABASE "${rows[0]?.db}" SET wal_sender_timeout = 0`);
    }
    // The settle time longer than the heartbeat's detection (interval + timeout): a group cut by the dead
    // socket waits for the hold its detection sets, and then for the catch-up, instead of going out filled
    // (docs/reliability.md, "What the figures do not hide").
    const config = withEnv(s, { DATABASE_URL: viaProxy, SETTLE_MS: '1200' });
    const m = await monitor(config);
    const st = stream(s, 100);
    await untilTicks(st, 60);
    await waitFor('listening', () => m.units.listener.listening);
    const detected = new Promise<{ sent: number; state: string; error: string | undefined }>((resolve) =>
      m.units.listener.once('disconnected', (reason) =>
        resolve({
          sent: m.units.listener.counters().heartbeatsSent,
          state: m.units.listener.state,
          error: reason,
        }),
      ),
    );
    const sentAtFault = m.units.listener.counters().heartbeatsSent;
    proxy.blackhole();
    st.landed('blackhole');
    const d = await detected;
    // Within one interval plus its timeout: the heartbeat in flight, or one of those started within the
    // next interval + timeout, noticed it. Counted in heartbeats, so a loaded machine cannot fake it.
    const { intervalMs, timeoutMs } = config.heartbeat;
    expect(d.sent - sentAtFault).toBeLessThanOrEqual(Math.ceil((intervalMs + timeoutMs) / intervalMs));
    expect(d.error).toContain(`heartbeat got no answer within ${timeoutMs} ms`);
    expect(d.state).not.toBe('listening');
    const result = await finished(st);
    await waitFor(
      'listening again after the dead socket is noticed',
      () => m.units.listener.listening,
      30_000,
    );
    if (onReplication) {
      await waitFor('the slot read again', () => m.units.replication?.isStreaming === true, 30_000);
    }
    const c = await s.ledger.settle({ admin: s.admin, monitors: [m] });
    s.ledger.report('half-open-socket');
    matchesStream(c, result);
    expectExactlyOnce(c);
    expect(m.units.listener.counters().reconnects).toBeGreaterThanOrEqual(1);
  });

  it('the backend answers 500/503, then times out, then recovers', async () => {
    const s = await setup('fault_backend');
    let phase: 'ok' | 'errors' | 'hang' = 'ok';
    // A count per backend: one shared by both could hand one backend every 500 and the other every 503.
    const behaviour = () => {
      let n = 0;
      return () => {
        if (phase === 'errors') return { status: n++ % 2 ? 500 : 503 };
        if (phase === 'hang') return 'hang' as const;
        return undefined;
      };
    };
    s.backend.behaviour = behaviour();
    s.backendB.behaviour = behaviour();
    const m = await monitor(s.config);
    const st = stream(s, 150);
    await untilTicks(st, 40);
    phase = 'errors';
    st.landed('5xx');
    // Enough to open each pump's circuit (BREAKER_THRESHOLD 5) and fail a few of its trial calls.
    await waitFor('each backend answering 5xx to 8 requests', () =>
      [s.backend, s.backendB].every((b) => b.requests.filter((r) => r.status >= 500).length >= 8),
    );
    phase = 'hang';
    st.landed('no answers');
    await waitFor('both backends holding a request unanswered', () =>
      [s.backend, s.backendB].every((b) => b.requests.some((r) => r.status === 0)),
    );
    phase = 'ok';
    const result = await finished(st);
    const c = await s.ledger.settle({ admin: s.admin, monitors: [m] });
    s.ledger.report('backend-5xx-then-timeouts');
    matchesStream(c, result);
    expectExactlyOnce(c);
    for (const b of [s.backend, s.backendB]) {
      expect(b.requests.some((r) => r.status === 500)).toBe(true);
      expect(b.requests.some((r) => r.status === 503)).toBe(true);
    }
    // Vectors go out in outbox order, for each pump, once the backend is back.
    for (const [pump, backend] of [
      ['A', s.backend],
      ['B', s.backendB],
    ] as const) {
      const p = s.config.pumps.find((x) => x.id === pump);
      const arrived = backend
        .answered(`${p?.pathPrefix}${p?.unifiedPath}`)
        .map((r) => JSON.stringify(r.body));
      const { rows } = await s.admin.query<{ body: Record<string, number> }>(
        "SELECT body FROM pump_monitor.outbox WHERE pump = $1 AND status = 'sent' ORDER BY id",
        [pump],
      );
      expect(arrived.length, pump).toBe(result.timestamps / 2);
      expect(arrived, pump).toEqual(rows.map((r) => JSON.stringify(r.body)));
    }
    // The engine's own counts agree with the backends', and the breakers closed again.
    const pumps = m.status().pumps as Record<string, Record<string, unknown>>;
    for (const pump of ['A', 'B']) {
      expect(pumps[pump], pump).toMatchObject({
        vectors_sent: result.timestamps / 2,
        vectors_dead: 0,
        sensor_posts_failed: 0,
        breaker: 'closed',
      });
    }
  });

  it('a long backend outage overflows the per-sensor queue: posts wait in the database, no vector is lost', async () => {
    const s = await setup('fault_overflow');
    let down = true;
    const behaviour = (r: { path: string }) =>
      down && r.path.includes('/prediccion') ? { status: 503 } : undefined;
    s.backend.behaviour = behaviour;
    s.backendB.behaviour = behaviour;
    const m = await monitor(withEnv(s, { SENSOR_POST_QUEUE: '200', SENSOR_POST_CONCURRENCY: '4' }));
    const st = stream(s, 80);
    await waitFor(
      'posts deferred to the database',
      async () => {
        const { rows } = await s.admin.query('SELECT count(*)::int AS n FROM pump_monitor.deferred_posts');
        return (rows[0]?.n ?? 0) > 1_000;
      },
      60_000,
    );
    expect((m.status() as { overloaded: boolean }).overloaded).toBe(true);
    st.landed('over a thousand posts deferred');
    const result = await finished(st);
    down = false;
    const c = await s.ledger.settle({ admin: s.admin, monitors: [m] });
    s.ledger.report('per-sensor-queue-overflow');
    matchesStream(c, result);
    expectExactlyOnce(c);
    const pumps = m.status().pumps as Record<string, { vectors_dropped: number }>;
    expect((pumps.A?.vectors_dropped ?? 0) + (pumps.B?.vectors_dropped ?? 0)).toBe(0);
    expect((m.status() as { overloaded: boolean }).overloaded).toBe(false);
  });

  it('the backend answers 429 with Retry-After, and the wait is honoured', async () => {
    const s = await setup('fault_429');
    // Every request that arrives while the stream is between its 30th and 60th pump timestamps gets 429.
    let ticksAtFirst: number | undefined;
    let ticksAtLast: number | undefined;
    /** Per request (path and body): when its last 429 was answered. */
    const limitedAt = new Map<string, number>();
    /** For each 429: how long after it the same request came again. */
    const waits: number[] = [];
    let limited = 0;
    const behaviour = (r: { path: string; raw: string }) => {
      const key = `${r.path} ${r.raw}`;
      const at = limitedAt.get(key);
      if (at !== undefined) {
        waits.push(Date.now() - at);
        limitedAt.delete(key);
      }
      const ticks = st.ticks();
      if (ticks < 30 || ticks >= 60) return undefined;
      ticksAtFirst ??= ticks;
      ticksAtLast = ticks;
      limited += 1;
      limitedAt.set(key, Date.now());
      return { status: 429, headers: { 'retry-after': '1' } };
    };
    s.backend.behaviour = behaviour;
    s.backendB.behaviour = behaviour;
    const m = await monitor(s.config);
    const st = stream(s, 100);
    await untilTicks(st, 60);
    st.faults.push(
      { what: 'the first 429', at: ticksAtFirst ?? 0 },
      { what: 'the last 429', at: ticksAtLast ?? 0 },
    );
    const result = await finished(st);
    const c = await s.ledger.settle({ admin: s.admin, monitors: [m] });
    s.ledger.report('backend-429-retry-after');
    matchesStream(c, result);
    expectExactlyOnce(c);
    const answered429 = [...s.backend.requests, ...s.backendB.requests].filter((r) => r.status === 429);
    expect(answered429.length).toBe(limited);
    expect(limited).toBeGreaterThan(0);
    // Every limited request came again, and none sooner than Retry-After: 1 allows (a lower bound only:
    // a loaded machine makes retries later, never earlier).
    expect(waits).toHaveLength(limited);
    expect(Math.min(...waits)).toBeGreaterThanOrEqual(950);
  });

  it('the process is SIGKILLed mid-stream and restarted', async () => {
    const s = await setup('fault_sigkill');
    const env = {
      ...s.env,
      PORT: String(await freePort()),
      LOG_LEVEL: 'warn',
      SENSOR_POST_CONCURRENCY: String(CONCURRENCY),
      VECTOR_WINDOW: String(WINDOW),
    };
    const first = spawnListener(env);
    cleanups.push(async () => void first.proc.kill('SIGKILL'));
    await ready(env.PORT);
    const st = stream(s, 150);
    await untilTicks(st, 80);
    await waitFor(
      'the first process delivering vectors',
      () => s.backend.answered('/sensores/predecir-bomba').length > 5,
    );
    first.proc.kill('SIGKILL');
    await first.exited;
    st.landed('SIGKILL');
    const facts = await factsAtKill({ ...killed(s), victims: ['A', 'B'] });
    const second = spawnListener(env);
    cleanups.push(async () => void second.proc.kill('SIGKILL'));
    await ready(env.PORT);
    const result = await finished(st);
    const c = await s.ledger.settle({ admin: s.admin, statusUrls: [`http://127.0.0.1:${env.PORT}`] });
    const bound = crashReplayBound({ sensorPostConcurrency: CONCURRENCY, pumps: 2, vectorWindow: WINDOW });
    s.ledger.report('sigkill-and-restart', bound);
    const resends = resendsAfterKill(facts);
    reportResends('sigkill-and-restart', resends);
    second.proc.kill('SIGTERM');
    // A stop that outlives its bound exits 1 and names its stage (cli/runtime.ts): show the last lines.
    expect(await second.exited, second.output.slice(-15).join('\n')).toBe(0);
    matchesStream(c, result);
    expectWithinBound(c, bound);
    expectResendsOnlyUnrecorded(resends, bound);
  });

  it.skipIf(onReplication)('a burst of malformed notifications among good ones', async () => {
    const s = await setup('fault_malformed');
    const m = await monitor(s.config);
    const st = stream(s, 100);
    const bad = [
      '{',
      '[]',
      '"x"',
      '{"id_sensor": 999999999}', // an id no row has
      '{"id_sensor": "a", "valor": 1, "tiempo_sensor": "t"}',
    ];
    const channels = s.config.pumps.flatMap((p) => p.sensors.map((x) => x.channel));
    const invalid = () => {
      const status = m.status().pumps as Record<string, { readings_invalid: number }>;
      return (status.A?.readings_invalid ?? 0) + (status.B?.readings_invalid ?? 0);
    };
    let sent = 0;
    await untilTicks(st, 20);
    for (let round = 0; round < 10; round++) {
      // One burst per four pump timestamps of the stream: spread over it, paced by the stream itself.
      await untilTicks(st, 20 + 4 * round);
      for (const payload of bad) {
        await s.admin.query('SELECT pg_notify($1, $2)', [channels[sent % channels.length], payload]);
        sent += 1;
      }
      await waitFor(`burst ${round + 1} counted`, () => invalid() === sent);
      st.landed(`burst ${round + 1}`);
    }
    const result = await finished(st);
    const c = await s.ledger.settle({ admin: s.admin, monitors: [m] });
    s.ledger.report('malformed-burst');
    matchesStream(c, result);
    expectExactlyOnce(c);
    expect(invalid()).toBe(sent);
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
      SENSOR_POST_CONCURRENCY: String(CONCURRENCY),
      VECTOR_WINDOW: String(WINDOW),
      // Its drain cannot reach the database: give up on it soon, so the restart lands mid-stream too.
      SHUTDOWN_TIMEOUT_MS: '2000',
    };
    const first = spawnListener(env);
    cleanups.push(async () => void first.proc.kill('SIGKILL'));
    await ready(env.PORT);
    const st = stream(s, 150);
    await untilTicks(st, 80);
    await waitFor(
      'the first process delivering vectors',
      () => s.backend.answered('/sensores/predecir-bomba').length > 3,
    );
    await proxy.refuse();
    st.landed('network gone');
    const code = await first.exited;
    st.landed('first process exited');
    const facts = await factsAtKill({ ...killed(s), victims: ['A', 'B'] });
    expect(code).toBe(1);
    const last = first.output.filter((l) => l.startsWith('{')).at(-1) ?? '';
    expect(last).toContain('MAX_RECONEXIONES=3');
    // The original's schedule: TIEMPO_ESPERA_BASE (50 ms here) doubling, per consecutive failure; the
    // third failure reaches MAX_RECONEXIONES and ends the process instead of waiting again.
    expect(
      logLines(first.output, 'connection to PostgreSQL failed; retrying').map((l) => [
        l.reconexiones_consecutivas,
        l.delay_ms,
      ]),
    ).toEqual([
      [1, 50],
      [2, 100],
    ]);
    await proxy.restore();
    const second = spawnListener(env);
    cleanups.push(async () => void second.proc.kill('SIGKILL'));
    await ready(env.PORT);
    const result = await finished(st);
    const c = await s.ledger.settle({ admin: s.admin, statusUrls: [`http://127.0.0.1:${env.PORT}`] });
    const bound = crashReplayBound({ sensorPostConcurrency: CONCURRENCY, pumps: 2, vectorWindow: WINDOW });
    s.ledger.report('network-gone-past-limit', bound);
    const resends = resendsAfterKill(facts);
    reportResends('network-gone-past-limit', resends);
    second.proc.kill('SIGTERM');
    // A stop that outlives its bound exits 1 and names its stage (cli/runtime.ts): show the last lines.
    expect(await second.exited, second.output.slice(-15).join('\n')).toBe(0);
    matchesStream(c, result);
    expectWithinBound(c, bound);
    expectResendsOnlyUnrecorded(resends, bound);
  });
});
