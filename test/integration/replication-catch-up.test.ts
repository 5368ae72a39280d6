import { afterEach, describe, expect, it } from 'vitest';
import type { Monitor } from '../../src/engine/monitor.js';
import { replicationNames } from '../../src/source/replication/setup.js';
import { type Harness, harness, insertTimestamp } from '../helpers/engine.js';
import { expectExactlyOnce } from '../helpers/ledger.js';
import { waitFor } from '../helpers/wait.js';

/**
 * Catch-up under SOURCE=replication (docs/replication.md, "Catch-up"). The slot is the position of every
 * row committed since it was made; rows committed before it existed are in no slot, and the id checkpoints
 * are their only position: the start's catch-up reads them. The LISTEN session carries no row on this
 * source, but its heartbeat is the engine's check of the connection to the server: its reconnect still
 * starts a catch-up, which reads what a stream stuck on the same fault has not given yet.
 */

let h: Harness | undefined;
afterEach(async () => {
  await h?.close();
  h = undefined;
});

const catchUpRows = (m: Monitor) =>
  Object.values(m.status().pumps as Record<string, { catchup_rows: number }>).reduce(
    (n, p) => n + p.catchup_rows,
    0,
  );

describe('catch-up on SOURCE=replication', () => {
  it('rows committed before the slot existed are read by the start catch-up, once; the slot gives none of them', async () => {
    const x = await harness('repl_cu_before', { SOURCE: 'replication' });
    h = x;
    // A first run sets the checkpoints at the tables' ends; then the slot is lost while no engine runs.
    await (await x.startMonitor()).stop(2_000);
    const slot = replicationNames(x.config.source, x.db.name).slot;
    await x.admin.query('SELECT pg_drop_replication_slot($1)', [slot]);
    await insertTimestamp(x.admin, x.pumps.A, '2025-05-01T10:00:00');
    await insertTimestamp(x.admin, x.pumps.B, '2025-05-01T10:00:00');
    // The operator makes the slot again (migrate would); the start finds it there.
    await x.admin.query("SELECT pg_create_logical_replication_slot($1, 'pgoutput')", [slot]);
    const m = await x.startMonitor();
    await waitFor(
      'the two earlier vectors',
      () => x.backend.requests.filter((r) => r.status === 200 && r.path.includes('predecir')).length === 2,
    );
    expect(catchUpRows(m)).toBe(35);
    expect(m.units.replication?.rows).toBe(0);
    await insertTimestamp(x.admin, x.pumps.A, '2025-05-01T10:01:00');
    const c = await x.ledger().settle({ admin: x.admin, monitors: [m], timeoutMs: 30_000 });
    expectExactlyOnce(c);
    expect({ readings: c.readings, vectors: c.vectors }).toEqual({ readings: 55, vectors: 3 });
    // The slot gave the later timestamp (20 rows), none of the earlier ones.
    expect(m.units.replication?.rows).toBe(20);
  });

  it('the LISTEN session cut: nothing lost or sent twice, and no checkpoint left held', async () => {
    const x = await harness('repl_cu_listen', { SOURCE: 'replication' });
    h = x;
    const m = await x.startMonitor();
    await insertTimestamp(x.admin, x.pumps.A, '2025-05-02T10:00:00');
    await waitFor('the first vector', () => x.backend.answered('/sensores/predecir-bomba').length === 1);
    const reconnects = Number(m.status().reconnects);
    const { rows } = await x.admin.query<{ n: number }>(
      `SELECT count(pg_terminate_backend(pid))::int AS n FROM pg_stat_activity
        WHERE datname = current_database() AND application_name = $1`,
      [`pm-listen:${m.replicaId}`],
    );
    expect(rows[0]?.n).toBe(1);
    await insertTimestamp(x.admin, x.pumps.B, '2025-05-02T10:00:00');
    await waitFor('the LISTEN session back', () => Number(m.status().reconnects) > reconnects);
    await insertTimestamp(x.admin, x.pumps.A, '2025-05-02T10:01:00');
    const c = await x.ledger().settle({ admin: x.admin, monitors: [m], timeoutMs: 30_000 });
    expectExactlyOnce(c);
    expect({ readings: c.readings, vectors: c.vectors }).toEqual({ readings: 55, vectors: 3 });
    await waitFor('no reader held', () => (m.status().work as { readers_held: number }).readers_held === 0);
  });
});
