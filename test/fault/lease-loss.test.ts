import pg from 'pg';
import pino from 'pino';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { PumpConfig } from '../../src/config/env.js';
import type { Monitor } from '../../src/engine/monitor.js';
import { quoteIdent } from '../../src/store/db.js';
import { ENGINE_SCHEMA } from '../../src/store/schema.js';
import { type Cleanup, runCleanups } from '../helpers/cleanup.js';
import { type Harness, harness, insertTimestamp, onReplication } from '../helpers/engine.js';
import { expectExactlyOnce } from '../helpers/ledger.js';
import { type PrivateServer, startPrivateServer } from '../helpers/private-server.js';
import { pause, waitFor } from '../helpers/wait.js';

/**
 * The lease session dies while the LISTEN connection stays up. The engine loses its pumps' leases, and
 * while it does not own them it ignores their notifications (a hot standby's behaviour). When it gets
 * them back, nobody else having held them (a *resumed* acquire), it keeps its state, and the catch-up that
 * taking them starts must read the rows it ignored. Until it has, the pumps' checkpoints must stay below
 * those rows (`Activation.acquired` holds them): a checkpoint saved past them makes the next catch-up read
 * from above them, and they are never delivered.
 *
 * That window is open only while a catch-up round that began before the pump was taken is still running:
 * a round that begins at the take reads from the checkpoint saved before the loss, whatever is saved
 * later. Both pumps come back in one lease round, one after the other: taking the first starts a round
 * for that pump alone, and taking the second asks for one more round after it, which reads from the
 * checkpoints saved by then. The test makes that window certain instead of lucky:
 *
 * - Two sessions of the test queue for the lease session's advisory locks before it is terminated, so
 *   they get them the moment it dies: the pumps stay unowned, and the stream goes on, for as long as the
 *   test needs (nobody writes the leases table meanwhile, so the engine's next acquire is a resumed one).
 * - Before it lets the pumps go back, the test locks `pump_monitor.sensor_posts` (ACCESS EXCLUSIVE):
 *   every catch-up read asks whether the row's post is on record, so the first round waits on its first
 *   read, as a slow round on a loaded server would. Sensor rows, outbox rows and checkpoints are not
 *   touched by that lock: live readings flow and checkpoints are saved.
 * - While the round waits, both pumps' live readings arrive and two checkpoint saves run. Without the
 *   hold, each of those tables' checkpoint is then past its ignored rows (the first live row is in flight,
 *   so the checkpoint is just below it), and the pump taken second loses them.
 *
 * The saved checkpoints are checked right there (none may pass a row ignored while the pump was not
 * owned), and, once the stream has ended, the strict ledger: every reading and every vector delivered
 * exactly once. No process dies, so no excess is allowed.
 *
 * The file runs on a PostgreSQL server of its own: the checkpoints it checks are held below the server's
 * oldest running transaction, so on the shared server another file's open transaction would keep them
 * low and the check would pass with the bug it targets; and the reconnect count it asserts must not see
 * another file ending sessions.
 */

let server: PrivateServer | undefined;
beforeAll(async () => {
  server = await startPrivateServer();
});
afterAll(async () => {
  await server?.stop();
});

interface Writer {
  /** Pump timestamps written for both pumps so far (each pump's in a transaction of its own). */
  ticks(): number;
  stop(): Promise<void>;
}

/** Writes one timestamp of each pump every `everyMs` until stopped; every timestamp has its own values. */
function steadyWriter(h: Harness, everyMs: number): Writer {
  let ticks = 0;
  let stopping = false;
  let failed: Error | undefined;
  const base = Date.UTC(2025, 0, 1) + Math.floor(Math.random() * 1e9) * 1000;
  const done = (async () => {
    // Bounded: at one pair of timestamps per 40 ms, 3,000 is past any test limit.
    for (let i = 0; !stopping && i < 3_000; i++) {
      const tiempo = new Date(base + i * 1000).toISOString().slice(0, 19);
      for (const p of [h.pumps.A, h.pumps.B]) {
        const index = new Map(p.sensors.map((s, n) => [s.field, n]));
        await insertTimestamp(h.admin, p, tiempo, { value: (f) => i * 100 + (index.get(f) ?? 0) });
      }
      ticks = i + 1;
      await pause(everyMs);
    }
  })().catch((err: Error) => {
    failed = err;
  });
  return {
    ticks: () => {
      if (failed) throw failed;
      return ticks;
    },
    async stop() {
      stopping = true;
      await done;
      if (failed) throw failed;
    },
  };
}

/** The highest id of every table of both pumps. */
async function maxIds(db: pg.Pool, pumps: PumpConfig[]): Promise<Map<string, number>> {
  const tables = pumps.flatMap((p) => p.sensors.map((s) => s.table));
  const { rows } = await db.query<{ t: string; n: string }>(
    tables
      .map((t, i) => `SELECT $${i + 1}::text AS t, coalesce(max(id), 0) AS n FROM ${quoteIdent(t)}`)
      .join(' UNION ALL '),
    tables,
  );
  return new Map(rows.map((r) => [r.t, Number(r.n)]));
}

async function connect(h: Harness, name: string): Promise<pg.Client> {
  const c = new pg.Client({ connectionString: h.db.url, application_name: name });
  c.on('error', () => {});
  await c.connect();
  return c;
}

const received = (m: Monitor, pump: string) =>
  (m.status().pumps[pump] as { readings_received: number }).readings_received;

let h: Harness | undefined;
const cleanups: Cleanup[] = [];
afterEach(async () => {
  try {
    await runCleanups(cleanups);
  } finally {
    await h?.close();
    h = undefined;
  }
});

// Pumps split between replicas, notifications ignored by a standby: the NOTIFY source's shape. On the
// replication source one replica holds the slot's lease and every pump (replication.test.ts, lease loss).
describe.skipIf(onReplication)('lease session lost, LISTEN connection up', { timeout: 180_000 }, () => {
  it("a resumed pump's checkpoints stay below the rows it ignored until its catch-up has read them", async () => {
    h = await harness('fault_lease_loss', {}, { ownBackendB: true, server: server?.url });
    const x = h;
    const pumps = [x.pumps.A, x.pumps.B];
    // The engine's log, to see each acquire and whether it was a resumed one.
    const logs: { msg?: string; pump?: string; resumed?: boolean }[] = [];
    const logger = pino(
      { level: 'info' },
      { write: (line: string) => void logs.push(JSON.parse(line) as (typeof logs)[number]) },
    );
    const m = await x.startMonitor(
      {
        LEASE_INTERVAL_MS: '100',
        // The catch-up read the test keeps waiting must not time out meanwhile.
        DB_QUERY_TIMEOUT_MS: '30000',
        SENSOR_POST_MAX_ATTEMPTS: '40',
      },
      { logger },
    );
    await waitFor('both pumps owned', () => m.status().owned_pumps.length === 2);

    const w = steadyWriter(x, 40);
    cleanups.push(() => w.stop());
    await waitFor('vectors of both pumps delivered', () =>
      pumps.every(
        (p) =>
          (p.id === 'A' ? x.backend : x.backendB).answered(`${p.pathPrefix}${p.unifiedPath}`).length >= 5,
      ),
    );

    // 1. Two sessions queue for the advisory locks the lease session holds, one each.
    const { rows: held } = await x.admin.query<{ k1: number; k2: number }>(
      `SELECT (l.classid::text::bigint - CASE WHEN l.classid::text::bigint > 2147483647 THEN 4294967296 ELSE 0 END)::int AS k1,
              (l.objid::text::bigint - CASE WHEN l.objid::text::bigint > 2147483647 THEN 4294967296 ELSE 0 END)::int AS k2
         FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
        WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
          AND a.application_name LIKE 'pm-lease:%' AND a.datname = current_database()`,
    );
    expect(held).toHaveLength(2);
    const blockers = await Promise.all(held.map((_, i) => connect(x, `test-lease-blocker-${i}`)));
    cleanups.push(() => Promise.all(blockers.map((b) => b.end())));
    const blockerPids = await Promise.all(
      blockers.map(
        async (b) => (await b.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]?.pid,
      ),
    );
    const granted = blockers.map((b, i) =>
      b.query('SELECT pg_advisory_lock($1, $2)', [held[i]?.k1, held[i]?.k2]),
    );
    await waitFor('both test sessions queued for the pump locks', async () => {
      const { rows } = await x.admin.query<{ n: number }>(
        "SELECT count(*)::int AS n FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND pid = ANY($1)",
        [blockerPids],
      );
      return rows[0]?.n === 2;
    });

    // 2. The lease session dies mid-stream; the LISTEN connection stays up.
    const reconnects = m.units.listener.counters().reconnects;
    const { rows: killed } = await x.admin.query(
      `SELECT pg_terminate_backend(pid) AS ok FROM pg_stat_activity
        WHERE application_name LIKE 'pm-lease:%' AND application_name LIKE '%:' || $1 AND datname = current_database()`,
      [m.replicaId],
    );
    expect(killed).toEqual([{ ok: true }]);
    const ticksAtKill = w.ticks();
    await Promise.all(granted);
    await waitFor('the engine to notice its leases are lost', () => m.status().owned_pumps.length === 0);
    // Rows above these commit after the engine stopped owning the pumps: it ignores their notifications.
    const lowWater = await maxIds(x.admin, pumps);
    const ticksUnowned = w.ticks();

    // 3. The stream goes on while the pumps are not owned, and what the engine took before the loss
    // settles (its groups stored, its posts answered), so that nothing in flight holds a checkpoint back.
    await waitFor(
      '5 pump timestamps written while the pumps are not owned',
      () => w.ticks() >= ticksUnowned + 5,
    );
    await waitFor('what the engine received before the loss to settle', () => {
      const s = m.status();
      return (
        s.sensor_posts_queued === 0 &&
        Object.values(s.pumps).every((p) => (p as { open_groups: number }).open_groups === 0) &&
        x.backend.inFlight === 0 &&
        x.backendB.inFlight === 0
      );
    });
    const savesUnowned = m.status().checkpoint_saves;
    await waitFor('two more checkpoint rounds', () => m.status().checkpoint_saves >= savesUnowned + 2);
    const ignoredTop = await maxIds(x.admin, pumps);
    for (const [table, top] of ignoredTop) {
      expect(top, `${table}: rows written while the pumps were not owned`).toBeGreaterThan(
        lowWater.get(table) as number,
      );
    }

    // 4. A catch-up round that starts from now on waits on its first read.
    const gate = await connect(x, 'test-catch-up-gate');
    cleanups.push(() => gate.end());
    await gate.query('BEGIN');
    await gate.query(`LOCK TABLE ${ENGINE_SCHEMA}.sensor_posts IN ACCESS EXCLUSIVE MODE`);

    // 5. The pumps are free again: the engine takes them back, resumed.
    const logMark = logs.length;
    await Promise.all(blockers.map((b) => b.query('SELECT pg_advisory_unlock_all()')));
    await waitFor('both pumps owned again', () => m.status().owned_pumps.length === 2);
    const acquired = logs.slice(logMark).filter((l) => l.msg === 'lease acquired');
    expect(acquired.map((l) => [l.pump, l.resumed]).sort()).toEqual([
      ['A', true],
      ['B', true],
    ]);
    expect(m.units.listener.listening).toBe(true);
    expect(m.units.listener.counters().reconnects).toBe(reconnects);

    // 6. Live readings of each pump are taken in, and checkpoints are saved after them, while the
    // take-over's catch-up has still not read the ignored rows.
    const before = new Map(pumps.map((p) => [p.id, received(m, p.id)]));
    await waitFor('a whole live timestamp of each pump taken in', () =>
      pumps.every((p) => received(m, p.id) >= (before.get(p.id) as number) + p.sensors.length),
    );
    const savesLive = m.status().checkpoint_saves;
    await waitFor('two checkpoint saves after them', () => m.status().checkpoint_saves >= savesLive + 2);
    const { rows: waiting } = await x.admin.query<{ n: number }>(
      `SELECT count(*)::int AS n FROM pg_stat_activity
        WHERE datname = current_database() AND pid <> pg_backend_pid()
          AND wait_event_type = 'Lock' AND query LIKE '%WHERE id > $% ORDER BY id LIMIT $1)%'`,
    );
    expect(waiting, 'the catch-up round still waits on its first read').toEqual([{ n: 1 }]);
    const { rows: saved } = await x.admin.query<{ table_name: string; pump: string; last_id: string }>(
      `SELECT table_name, pump, last_id FROM ${ENGINE_SCHEMA}.checkpoints WHERE pump = ANY($1)`,
      [pumps.map((p) => p.id)],
    );
    expect(saved).toHaveLength(pumps.reduce((n, p) => n + p.sensors.length, 0));
    const passed = saved
      .filter((r) => Number(r.last_id) > (lowWater.get(r.table_name) as number))
      .map(
        (r) =>
          `${r.pump} ${r.table_name}: saved ${r.last_id}, rows above ${lowWater.get(r.table_name)} ignored`,
      );
    expect.soft(passed, 'checkpoints saved past rows ignored while the pump was not owned').toEqual([]);

    // 7. The catch-up goes on; the stream runs a while longer, then ends.
    await gate.query('COMMIT');
    const ticksBack = w.ticks();
    await waitFor('10 more pump timestamps', () => w.ticks() >= ticksBack + 10);
    await w.stop();
    const ticks = w.ticks();
    expect(ticksAtKill).toBeGreaterThan(0);
    expect(ticksAtKill).toBeLessThan(ticks);

    const ledger = x.ledger();
    const c = await ledger.settle({ admin: x.admin, monitors: [m] });
    ledger.report('lease-session-terminated-listen-up');
    expect({ readings: c.readings, vectors: c.vectors }).toEqual({
      readings: ticks * pumps.reduce((n, p) => n + p.sensors.length, 0),
      vectors: ticks * pumps.length,
    });
    expectExactlyOnce(c);
  });
});
