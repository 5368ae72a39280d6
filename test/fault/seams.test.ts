import type pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { PumpConfig } from '../../src/config/env.js';
import { quoteIdent } from '../../src/store/db.js';
import { freePort } from '../../src/tools/free-port.js';
import { runSimulator, type SimulatorResult } from '../../src/tools/simulator.js';
import {
  crashReplayBound,
  expectResendsOnlyUnrecorded,
  factsAtKill,
  reportResends,
  resendsAfterKill,
} from '../helpers/bounds.js';
import { type ChildListener, spawnListener } from '../helpers/child.js';
import { type Cleanup, runCleanups } from '../helpers/cleanup.js';
import { type Harness, harness, insertTimestamp, testEnv } from '../helpers/engine.js';
import { expectExactlyOnce, expectWithinBound } from '../helpers/ledger.js';
import { type PrivateServer, startPrivateServer } from '../helpers/private-server.js';
import { waitFor } from '../helpers/wait.js';

/**
 * The seams where a reading or a vector could be lost or sent twice, each broken for real: a key text of
 * two days in one catch-up, a kill between the backend's answer and its record, the March-2026 wiring
 * (shared tables, two tables feeding one field) killed mid-stream, and a long transaction holding the
 * checkpoints back across a kill. Every count is the strict ledger's, which identifies a vector by the rows
 * the test inserted (test/helpers/ledger.ts); every resend after a kill is set against what was on record
 * at the kill (test/helpers/bounds.ts).
 */

/** SENSOR_POST_CONCURRENCY of the killed processes: the crash bound is written from it. */
const CONCURRENCY = 16;
/** VECTOR_WINDOW of the killed processes (the README's default, set explicitly): the vectors' crash bound. */
const WINDOW = 8;

const cleanups: Cleanup[] = [];
afterEach(() => runCleanups(cleanups));

async function own(prefix: string, env: Record<string, string> = {}, server?: string): Promise<Harness> {
  const h = await harness(prefix, env, { ownBackendB: true, ...(server ? { server } : {}) });
  cleanups.push(() => h.close());
  return h;
}

/** A child `pump-monitor listen` on the harness's database and backends, with a status port of its own. */
async function child(
  h: Harness,
  env: Record<string, string> = {},
): Promise<{ c: ChildListener; url: string }> {
  const port = String(await freePort());
  const c = spawnListener({
    ...testEnv(
      h.db,
      h.backend,
      {
        LOG_LEVEL: 'warn',
        SENSOR_POST_CONCURRENCY: String(CONCURRENCY),
        VECTOR_WINDOW: String(WINDOW),
        ...env,
      },
      h.backendB,
    ),
    PORT: port,
  });
  cleanups.push(async () => void c.proc.kill('SIGKILL'));
  const url = `http://127.0.0.1:${port}`;
  await waitFor(
    `the listener on port ${port} to be ready`,
    async () => {
      try {
        return (await fetch(`${url}/readyz`)).status === 200;
      } catch {
        return false;
      }
    },
    30_000,
  );
  return { c, url };
}

async function kill(c: ChildListener): Promise<void> {
  c.proc.kill('SIGKILL');
  await c.exited;
}

async function stopGracefully(c: ChildListener): Promise<void> {
  c.proc.kill('SIGTERM');
  expect(await c.exited).toBe(0);
}

function backends(h: Harness) {
  return { A: h.backend, B: h.backendB };
}

/** `table:id` of the rows `insertTimestamp` returned, sensor by sensor. */
function rowsOf(pump: PumpConfig, ids: number[]): string[] {
  return pump.sensors.map((s, i) => `${s.table}:${ids[i]}`);
}

/** The 200s at a pump's unified path. */
function vectorsAt(h: Harness, pump: 'A' | 'B') {
  const b = pump === 'A' ? h.backend : h.backendB;
  const path = pump === 'A' ? '/sensores/predecir-bomba' : '/sensores_b/predecir-bomba-b';
  return b.requests.filter((r) => r.path === path && r.status === 200);
}

/** Kills the process sending for both pumps and reads the facts at the kill. */
async function killForFacts(h: Harness, c: ChildListener) {
  await kill(c);
  return factsAtKill({
    admin: h.admin,
    pumps: [h.pumps.A, h.pumps.B],
    backends: backends(h),
    victims: ['A', 'B'],
  });
}

/** Both pumps' first vectors delivered (and recorded), so that what follows starts from a known state. */
async function firstVectorsOfBoth(h: Harness): Promise<void> {
  await insertTimestamp(h.admin, h.pumps.A, '2025-07-01T10:00:00');
  await insertTimestamp(h.admin, h.pumps.B, '2025-07-01T10:00:00');
  await waitFor('both first vectors', () => vectorsAt(h, 'A').length === 1 && vectorsAt(h, 'B').length === 1);
}

/** A promise the backend holds pump A's vectors on, and what lets them go. */
function holdAt(): { gate: Promise<void>; release: () => void } {
  let release: () => void = () => {};
  const gate = new Promise<void>((r) => {
    release = r;
  });
  return { gate, release };
}

/** A transaction of the test's own, cleaned up after the test; the caller locks rows in it. */
async function lockSession(h: Harness): Promise<pg.PoolClient> {
  const lock: pg.PoolClient = await h.admin.connect();
  cleanups.push(async () => {
    await lock.query('ROLLBACK').catch(() => {});
    lock.release();
  });
  await lock.query('BEGIN');
  return lock;
}

const RECORD_WAITING = `FROM pg_stat_activity
  WHERE datname = current_database() AND wait_event_type = 'Lock' AND query ILIKE '%UPDATE pump_monitor.outbox%'`;

/** Waits until a delivery record's UPDATE waits on the test's lock. */
async function recordWaitingOnLock(h: Harness, what: string): Promise<void> {
  await waitFor(what, async () => (await h.admin.query(`SELECT 1 ${RECORD_WAITING}`)).rows.length > 0);
}

/**
 * The dead process's session still waits to write its record, and would once the lock goes: ended here,
 * so the statement never reaches the database, as in a crash that takes the connection with it.
 */
async function endDeadRecord(h: Harness): Promise<void> {
  const { rows: waiting } = await h.admin.query<{ name: string }>(
    `SELECT application_name AS name ${RECORD_WAITING}`,
  );
  expect(waiting).toHaveLength(1);
  const { rows: ended } = await h.admin.query<{ ok: boolean }>(
    `SELECT pg_terminate_backend(pid) AS ok FROM pg_stat_activity
      WHERE datname = current_database() AND application_name = $1 AND wait_event_type = 'Lock'`,
    [waiting[0]?.name],
  );
  expect(ended).toEqual([{ ok: true }]);
  await waitFor("the dead process's statement gone", async () => {
    const { rows } = await h.admin.query(
      `SELECT 1 FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() AND query ILIKE '%UPDATE pump_monitor.outbox%' AND state = 'active'`,
    );
    return rows.length === 0;
  });
}

/**
 * A second process on the same database after a kill (with the killed one's window), delivering until the
 * ledger settles: the ledger's count, and the resends set against the facts at the kill.
 */
async function restartAndCount(
  h: Harness,
  facts: Awaited<ReturnType<typeof factsAtKill>>,
  name: string,
  window: number,
  meanwhile: () => Promise<unknown> = async () => {},
) {
  const { c: second, url } = await child(h, { VECTOR_WINDOW: String(window) });
  await meanwhile();
  const ledger = h.ledger();
  const c = await ledger.settle({ admin: h.admin, statusUrls: [url], timeoutMs: 30_000 });
  const bound = crashReplayBound({ sensorPostConcurrency: CONCURRENCY, pumps: 2, vectorWindow: window });
  ledger.report(name, bound);
  const resends = resendsAfterKill(facts);
  reportResends(name, resends);
  await stopGracefully(second);
  return { c, bound, resends };
}

describe('seams', { timeout: 180_000 }, () => {
  it('HH:MM keys of two days committed while the engine is down meet in one catch-up: one vector per day, by its rows', async () => {
    const h = await own('seam_hhmm');
    // A first run sets the checkpoints; both days are then committed while no engine runs.
    const first = await h.startMonitor();
    await first.stop(2_000);
    const day1 = new Set<string>();
    const keys = ['23:58', '23:59', '00:00'];
    for (const [day, mark] of [
      [1, day1],
      [2, undefined],
    ] as const) {
      for (const p of [h.pumps.A, h.pumps.B]) {
        for (const [i, key] of keys.entries()) {
          // The last key's two days carry identical bodies: only their rows tell them apart.
          const value = (f: string) =>
            100 +
            p.sensors.findIndex((s) => s.field === f) +
            (i === keys.length - 1 ? 0 : day / 10 + i / 100);
          const ids = await insertTimestamp(h.admin, p, key, { value });
          if (mark) for (const r of rowsOf(p, ids)) mark.add(r);
        }
      }
    }
    const m = await h.startMonitor();
    const ledger = h.ledger({
      occurrence: (_pump, table, id) => (day1.has(`${table}:${id}`) ? 'day 1' : 'day 2'),
    });
    const c = await ledger.settle({ admin: h.admin, monitors: [m], timeoutMs: 30_000 });
    ledger.report('hhmm-two-days-one-catch-up');
    expect({ readings: c.readings, vectors: c.vectors }).toEqual({
      readings: 2 * keys.length * (h.pumps.A.sensors.length + h.pumps.B.sensors.length),
      vectors: 2 * keys.length * 2,
    });
    expectExactlyOnce(c);
  });

  it('a partial vector is filled with the last value the engine had, exactly', async () => {
    const h = await own('seam_fills');
    const m = await h.startMonitor();
    const A = h.pumps.A;
    // Four of pump A's fields are left out of the partial timestamps; salida_bomba is one the backend
    // makes optional, so the policy fills it with its last value too when it has one.
    const left = [
      A.sensors[1],
      A.sensors[4],
      A.sensors[7],
      A.sensors.find((s) => s.field === 'salida_bomba'),
    ].map((s) => s?.field as string);
    expect(new Set(left).size).toBe(4);
    const partial = A.sensors.map((s) => s.field).filter((f) => !left.includes(f));
    const at = (n: number) => `2025-09-01T10:00:0${n}`;
    const answered = (n: number) => () => vectorsAt(h, 'A').length === n;
    // Each timestamp is delivered before the next is written: the engine's last values are known.
    await insertTimestamp(h.admin, A, at(0), { value: (f) => 1000 + f.length });
    await waitFor('vector 1', answered(1));
    await insertTimestamp(h.admin, A, at(1), { fields: partial, value: (f) => 2000 + f.length });
    await waitFor('vector 2', answered(2));
    await insertTimestamp(h.admin, A, at(2), { value: (f) => 3000 + f.length });
    await waitFor('vector 3', answered(3));
    await insertTimestamp(h.admin, A, at(3), { fields: partial, value: (f) => 4000 + f.length });
    await waitFor('vector 4', answered(4));
    const ledger = h.ledger({ fills: 'exact' });
    const c = await ledger.settle({ admin: h.admin, monitors: [m], timeoutMs: 30_000 });
    ledger.report('exact-fills');
    expect({ readings: c.readings, vectors: c.vectors, ambiguousFills: c.ambiguousFills }).toEqual({
      readings: 2 * A.sensors.length + 2 * partial.length,
      vectors: 4,
      ambiguousFills: 0,
    });
    expectExactlyOnce(c);
    // What the ledger held the fills to, written out: timestamp 4's gaps hold timestamp 3's values.
    const last = vectorsAt(h, 'A').at(-1)?.body as Record<string, number>;
    for (const f of left) expect(last[f], f).toBe(3000 + f.length);
  });

  it('a vector answered 200 whose record was not written when the process was killed: sent again once, under the same key', async () => {
    const h = await own('seam_unrecorded');
    const { c: first } = await child(h);
    await firstVectorsOfBoth(h);

    // The next vector of A is held at the backend until the test has locked its outbox row.
    const { gate, release } = holdAt();
    h.backend.behaviour = (r) => (r.path === '/sensores/predecir-bomba' ? { gate } : undefined);
    await insertTimestamp(h.admin, h.pumps.A, '2025-07-01T10:00:01', { value: (f) => 200 + f.length });
    await waitFor('the second vector held at the backend', () =>
      h.backend.requests.some((r) => r.path === '/sensores/predecir-bomba' && r.status === 0),
    );
    const lock = await lockSession(h);
    const { rows: held } = await lock.query<{ id: string; key: string }>(
      `SELECT id, idempotency_key AS key FROM pump_monitor.outbox WHERE pump = 'A' AND status = 'pending' FOR UPDATE`,
    );
    expect(held).toHaveLength(1);
    const key = held[0]?.key as string;
    // The backend answers 200; the engine's record of it waits on the test's lock: the answer has
    // arrived and the record has not. Then the process dies.
    release();
    await recordWaitingOnLock(h, 'the record of the answer waiting on the lock');
    const answered = vectorsAt(h, 'A').filter((r) => r.idempotencyKey === key);
    expect(answered).toHaveLength(1);
    const facts = await killForFacts(h, first);
    await endDeadRecord(h);
    await lock.query('ROLLBACK');
    h.backend.behaviour = () => undefined;
    const { rows: status } = await h.admin.query<{ status: string }>(
      'SELECT status FROM pump_monitor.outbox WHERE idempotency_key = $1',
      [key],
    );
    expect(status).toEqual([{ status: 'pending' }]);

    const { c, bound, resends } = await restartAndCount(h, facts, 'answered-not-recorded', WINDOW, () =>
      insertTimestamp(h.admin, h.pumps.A, '2025-07-01T10:00:02'),
    );
    // The one vector that was answered and unrecorded is the one sent again, once, under its own key.
    expect(resends.unrecordedVectors).toEqual(new Map([['A', 1]]));
    expect(resends.resentVectors).toBe(1);
    expect(c.excessVectors).toBe(1);
    expect(vectorsAt(h, 'A').filter((r) => r.idempotencyKey === key)).toHaveLength(2);
    expect({ readings: c.readings, vectors: c.vectors }).toEqual({
      readings: 3 * h.pumps.A.sensors.length + h.pumps.B.sensors.length,
      vectors: 4,
    });
    expectWithinBound(c, bound);
    expectResendsOnlyUnrecorded(resends, bound);
  });

  it('the window full of answered, unrecorded vectors when the process is killed: exactly VECTOR_WINDOW sent again, nothing beyond it', async () => {
    // A window of its own, below the default, so that "exactly W" is not the default's figure by chance.
    const W = 3;
    const EXTRA = 3;
    const h = await own('seam_window');
    const { c: first } = await child(h, { VECTOR_WINDOW: String(W) });
    await firstVectorsOfBoth(h);

    // Pump A's next vectors are held at the backend until the test has locked the first one's outbox row.
    const { gate, release } = holdAt();
    let locked = false;
    /** Arrivals of A's vectors while the lock holds every record, after the gate opened. */
    const whileLocked: string[] = [];
    h.backend.behaviour = (r) => {
      if (r.path !== '/sensores/predecir-bomba') return undefined;
      if (locked) whileLocked.push(r.idempotencyKey as string);
      return { gate };
    };
    const tiempos = Array.from(
      { length: W + EXTRA },
      (_, i) => `2025-07-01T10:00:${String(i + 1).padStart(2, '0')}`,
    );
    for (const t of tiempos) await insertTimestamp(h.admin, h.pumps.A, t, { value: (f) => 200 + f.length });
    await waitFor('the second vector held at the backend', () =>
      h.backend.requests.some((r) => r.path === '/sensores/predecir-bomba' && r.status === 0),
    );
    await waitFor(`all ${tiempos.length} new vectors of A in the outbox`, async () => {
      const { rows } = await h.admin.query(
        `SELECT 1 FROM pump_monitor.outbox WHERE pump = 'A' AND status = 'pending'`,
      );
      return rows.length === tiempos.length;
    });
    const lock = await lockSession(h);
    // The first of them: its record is the next one written, and every record after it (of either
    // pump: the records are batched together) waits behind it.
    const { rows: held } = await lock.query<{ id: string }>(
      `SELECT id FROM pump_monitor.outbox WHERE pump = 'A' AND status = 'pending' ORDER BY id LIMIT 1 FOR UPDATE`,
    );
    expect(held).toHaveLength(1);
    locked = true;
    const before = vectorsAt(h, 'A').length;
    release();
    await recordWaitingOnLock(h, 'the record of the first answer waiting on the lock');
    // The window fills: W vectors answered with no record, and the sender waits for room.
    await waitFor(
      `${W} vectors of A answered while the records wait`,
      () => vectorsAt(h, 'A').length >= before + W,
    );
    const facts = await killForFacts(h, first);
    // Every arrival while the lock held was counted as it came: the first vector had arrived before (held
    // at the gate), so W - 1 more, never beyond the window.
    expect(whileLocked.length, `arrivals while the records waited: ${whileLocked.join(', ')}`).toBe(W - 1);
    expect(vectorsAt(h, 'A').length - before).toBe(W);
    await endDeadRecord(h);
    await lock.query('ROLLBACK');
    locked = false;
    h.backend.behaviour = () => undefined;
    const { rows: pendingNow } = await h.admin.query<{ n: string }>(
      `SELECT count(*) AS n FROM pump_monitor.outbox WHERE pump = 'A' AND status = 'pending'`,
    );
    // All of them: the W answered were never recorded, the rest never sent.
    expect(Number(pendingNow[0]?.n)).toBe(tiempos.length);

    const { c, bound, resends } = await restartAndCount(h, facts, 'window-full-killed', W);
    // Exactly the window was unrecorded at the kill, and exactly those W are sent again, once each.
    expect(resends.unrecordedVectors).toEqual(new Map([['A', W]]));
    expect(resends.resentVectorsByPump).toEqual(new Map([['A', W]]));
    expect(c.excessVectors).toBe(W);
    expect({ readings: c.readings, vectors: c.vectors }).toEqual({
      readings: (1 + tiempos.length) * h.pumps.A.sensors.length + h.pumps.B.sensors.length,
      vectors: 2 + tiempos.length,
    });
    expectWithinBound(c, bound);
    expectResendsOnlyUnrecorded(resends, bound);
  });

  it('plant-2026-03, shared tables, SIGKILL mid-stream and restart: every reading and vector delivered, to its own pump, resends bounded by the facts', async () => {
    const h = await own('seam_plant_kill', { PUMPS_PROFILE: 'plant-2026-03' });
    const env = { PUMPS_PROFILE: 'plant-2026-03' };
    const pumps = [h.pumps.A, h.pumps.B];
    const { c: first } = await child(h, env);
    let ticks = 0;
    const errors: Error[] = [];
    // The stream runs until the test stops it, after the restart: the kill lands mid-stream however
    // slowly a loaded machine lets the engine deliver (2,000 timestamps per pump at most).
    const stream = new AbortController();
    const run = runSimulator({
      pool: h.admin,
      pumps,
      rate: 25,
      count: 2_000,
      signal: stream.signal,
      startTime: new Date('2026-03-02T00:00:00Z'),
      onTick: () => {
        ticks += 1;
      },
      onError: (e) => errors.push(e),
    });
    await waitFor('80 pump timestamps', () => ticks >= 80, 60_000);
    await waitFor(
      'the first process delivering vectors of both pumps',
      () => vectorsAt(h, 'A').length > 5 && vectorsAt(h, 'B').length > 5,
      60_000,
    );
    await kill(first);
    const killedAt = ticks;
    const facts = await factsAtKill({ admin: h.admin, pumps, backends: backends(h), victims: ['A', 'B'] });
    const { c: second, url } = await child(h, env);
    await waitFor('40 more pump timestamps after the restart', () => ticks >= killedAt + 40, 60_000);
    stream.abort();
    const result: SimulatorResult = await run;
    expect(errors).toEqual([]);
    // The kill landed mid-stream: timestamps were committed before it and after it.
    expect(killedAt).toBeGreaterThan(0);
    expect(killedAt).toBeLessThan(result.timestamps);
    const ledger = h.ledger();
    const c = await ledger.settle({ admin: h.admin, statusUrls: [url], timeoutMs: 60_000 });
    const bound = crashReplayBound({ sensorPostConcurrency: CONCURRENCY, pumps: 2, vectorWindow: WINDOW });
    ledger.report('plant-2026-03-sigkill', bound);
    const resends = resendsAfterKill(facts);
    reportResends('plant-2026-03-sigkill', resends);
    await stopGracefully(second);
    // Every row is a reading of each pump that reads its table; every pump timestamp a vector.
    let readings = 0;
    for (const p of pumps)
      for (const s of p.sensors) {
        const { rows } = await h.admin.query<{ n: number }>(
          `SELECT count(*)::int AS n FROM ${quoteIdent(s.table)}`,
        );
        readings += rows[0]?.n ?? 0;
      }
    expect({ readings: c.readings, vectors: c.vectors }).toEqual({ readings, vectors: result.timestamps });
    expectWithinBound(c, bound);
    expectResendsOnlyUnrecorded(resends, bound);
  });
});

describe('a long transaction holds the checkpoints back, then the process is killed', {
  timeout: 180_000,
}, () => {
  // The horizon is the cluster's oldest running transaction: on a server of this file's own it is the
  // test's, and the test checks that it is.
  let server: PrivateServer | undefined;
  beforeAll(async () => {
    server = await startPrivateServer();
  });
  afterAll(async () => {
    await server?.stop();
  });

  it('nothing lost, the late rows delivered once after the restart, resends bounded by the facts', async () => {
    const h = await own('seam_late_kill', {}, server?.url);
    const pumps = [h.pumps.A, h.pumps.B];
    const { c: first } = await child(h);
    let ticks = 0;
    const errors: Error[] = [];
    // Stopped by the test after the restart (2,000 timestamps per pump at most).
    const stream = new AbortController();
    const run = runSimulator({
      pool: h.admin,
      pumps,
      rate: 20,
      count: 2_000,
      signal: stream.signal,
      startTime: new Date('2025-08-01T00:00:00Z'),
      onTick: () => {
        ticks += 1;
      },
      onError: (e) => errors.push(e),
    });
    await waitFor('20 pump timestamps', () => ticks >= 20, 60_000);
    // A writer takes ids in every table of pump A and does not commit.
    const open: pg.PoolClient = await h.admin.connect();
    cleanups.push(async () => {
      await open.query('ROLLBACK').catch(() => {});
      open.release();
    });
    await open.query('BEGIN');
    const heldIds: number[] = [];
    for (const [i, s] of h.pumps.A.sensors.entries()) {
      const { rows } = await open.query<{ id: number }>(
        `INSERT INTO ${quoteIdent(s.table)} (tiempo_sensor, valor_sensor) VALUES ($1, $2) RETURNING id`,
        ['2025-08-01T23:59:59', 300 + i],
      );
      heldIds.push(rows[0]?.id as number);
    }
    const { rows: mine } = await open.query<{ xid: string }>(
      'SELECT pg_current_xact_id()::text::bigint % 4294967296 AS xid',
    );
    const xid = Number(mine[0]?.xid);
    // Rows committed after it are delivered and settled, so each table's checkpoint wants to pass it.
    const settledPast = async () => {
      const { rows } = await h.admin.query<{ n: number }>(
        `SELECT count(DISTINCT p.table_name)::int AS n FROM pump_monitor.sensor_posts p
           JOIN unnest($1::text[], $2::bigint[]) AS h(t, id) ON p.table_name = h.t AND p.row_id > h.id
          WHERE p.pump = 'A'`,
        [h.pumps.A.sensors.map((s) => s.table), heldIds],
      );
      return rows[0]?.n === h.pumps.A.sensors.length;
    };
    await waitFor('rows past the open transaction settled in every table of A', settledPast, 60_000);
    const start = ticks;
    await waitFor('40 more pump timestamps', () => ticks >= start + 40, 60_000);
    // What holds the checkpoints back is this test's transaction: the cluster's oldest running one.
    const { rows: horizon } = await h.admin.query<{ xmin: string }>(
      'SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint % 4294967296 AS xmin',
    );
    expect(Number(horizon[0]?.xmin)).toBe(xid);
    await kill(first);
    const killedAt = ticks;
    const facts = await factsAtKill({ admin: h.admin, pumps, backends: backends(h), victims: ['A', 'B'] });
    const { rows: cps } = await h.admin.query<{ table_name: string; last_id: string }>(
      `SELECT table_name, last_id FROM pump_monitor.checkpoints WHERE pump = 'A' AND table_name = ANY($1)`,
      [h.pumps.A.sensors.map((s) => s.table)],
    );
    const cp = new Map(cps.map((r) => [r.table_name, Number(r.last_id)]));
    for (const [i, s] of h.pumps.A.sensors.entries())
      expect(cp.get(s.table), `${s.table}: checkpoint below the open transaction's row`).toBeLessThan(
        heldIds[i] as number,
      );
    // It commits while no engine runs; the restart must find its rows.
    await open.query('COMMIT');
    const { c: second, url } = await child(h);
    await waitFor('40 more pump timestamps after the restart', () => ticks >= killedAt + 40, 60_000);
    stream.abort();
    const result = await run;
    expect(errors).toEqual([]);
    expect(killedAt).toBeLessThan(result.timestamps);
    const ledger = h.ledger();
    const c = await ledger.settle({ admin: h.admin, statusUrls: [url], timeoutMs: 60_000 });
    const bound = crashReplayBound({ sensorPostConcurrency: CONCURRENCY, pumps: 2, vectorWindow: WINDOW });
    ledger.report('long-transaction-then-sigkill', bound);
    const resends = resendsAfterKill(facts);
    reportResends('long-transaction-then-sigkill', resends);
    await stopGracefully(second);
    expect({ readings: c.readings, vectors: c.vectors }).toEqual({
      readings: result.rows + h.pumps.A.sensors.length,
      vectors: result.timestamps + 1,
    });
    expectWithinBound(c, bound);
    expectResendsOnlyUnrecorded(resends, bound);
  });
});
