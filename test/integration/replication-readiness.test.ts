import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Monitor } from '../../src/engine/monitor.js';
import { buildServer } from '../../src/http/server.js';
import { replicationNames } from '../../src/source/replication/setup.js';
import { readSlot } from '../../src/store/replication.js';
import { type Harness, harness, insertTimestamp } from '../helpers/engine.js';
import { expectExactlyOnce } from '../helpers/ledger.js';
import { waitFor } from '../helpers/wait.js';

/**
 * SOURCE=replication: the slot is the live path, so /readyz of the replica holding it says when it is not
 * reading it. A walsender killed (the stream cut) or a slot dropped (an operator's mistake) turn it 503
 * with the reason; the stream resumed turns it 200 again, and nothing is lost or sent twice.
 */

let h: Harness;
let m: Monitor;
let app: Awaited<ReturnType<typeof buildServer>>;
const readyz = async () => {
  const r = await app.inject({ method: 'GET', url: '/readyz' });
  return { status: r.statusCode, reason: String((r.json() as { reason: string }).reason) };
};

/** Ends this replica's replication session (its walsender), and only that one. */
async function killWalsender(): Promise<number> {
  const { rows } = await h.admin.query<{ n: number }>(
    `SELECT count(pg_terminate_backend(pid))::int AS n FROM pg_stat_activity
      WHERE datname = current_database() AND backend_type = 'walsender' AND application_name = $1`,
    [`pm-repl:${m.replicaId}`],
  );
  return rows[0]?.n ?? 0;
}

beforeAll(async () => {
  // A reconnect waits 2 s after the first failure: the stream stays down long enough to be seen.
  h = await harness('repl_ready', { SOURCE: 'replication', TIEMPO_ESPERA_BASE: '2', TIEMPO_ESPERA_MAX: '2' });
  m = await h.startMonitor();
  app = await buildServer(m);
  await waitFor('the slot read', () => m.units.replication?.isStreaming === true);
  await waitFor('ready', async () => (await readyz()).status === 200);
});

afterAll(async () => {
  await app?.close();
  await h?.close();
});

describe('/readyz on SOURCE=replication', () => {
  it('goes 503 when the walsender is killed, naming the stream, and 200 once it streams again; nothing lost', async () => {
    await insertTimestamp(h.admin, h.pumps.A, '2025-04-01T10:00:00');
    expect(await killWalsender()).toBe(1);
    await waitFor('/readyz 503', async () => (await readyz()).status === 503, 10_000);
    const down = await readyz();
    expect(down.reason).toMatch(/^replication stream of slot \S+ not read: /);
    expect(m.status().replication).toMatchObject({ streaming: false });
    // Committed while the stream is down: the slot keeps it.
    await insertTimestamp(h.admin, h.pumps.B, '2025-04-01T10:00:00');
    await waitFor('/readyz 200 again', async () => (await readyz()).status === 200, 30_000);
    expect(m.units.replication?.isStreaming).toBe(true);
    const c = await h.ledger().settle({ admin: h.admin, monitors: [m], timeoutMs: 30_000 });
    expectExactlyOnce(c);
    expect({ readings: c.readings, vectors: c.vectors }).toEqual({ readings: 35, vectors: 2 });
  });

  it('stays 503 while the slot is gone, with the fix, and 200 once it is made again', async () => {
    const slot = replicationNames(h.config.source, h.db.name).slot;
    // The walsender holds the slot: end it, then drop the slot before the engine is back (2 s).
    expect(await killWalsender()).toBe(1);
    for (let attempt = 1; ; attempt++) {
      try {
        await h.admin.query('SELECT pg_drop_replication_slot($1)', [slot]);
        break;
      } catch (err) {
        if (attempt >= 40) throw err;
        await new Promise((r) => setTimeout(r, 25));
      }
    }
    await waitFor(
      '/readyz 503 naming the missing slot',
      async () =>
        /slot \S+ does not exist \(SQLSTATE 42704\): run pump-monitor migrate/.test((await readyz()).reason),
      15_000,
      async () => ({ readyz: await readyz(), replication: m.status().replication }),
    );
    expect((await readyz()).status).toBe(503);
    // The operator's fix (migrate makes it; here directly), then the engine reads it again.
    await h.admin.query("SELECT pg_create_logical_replication_slot($1, 'pgoutput')", [slot]);
    await waitFor('/readyz 200 again', async () => (await readyz()).status === 200, 30_000);
    expect((await readSlot(h.admin, slot))?.active).toBe(true);
    await insertTimestamp(h.admin, h.pumps.A, '2025-04-01T10:01:00');
    const c = await h.ledger().settle({ admin: h.admin, monitors: [m], timeoutMs: 30_000 });
    expectExactlyOnce(c);
    expect(c.vectors).toBe(3);
  });
});
