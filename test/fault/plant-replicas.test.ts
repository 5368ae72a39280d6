import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Monitor } from '../../src/engine/monitor.js';
import { runSimulator } from '../../src/tools/simulator.js';
import { type Harness, harness, onReplication } from '../helpers/engine.js';
import { expectExactlyOnce } from '../helpers/ledger.js';
import { waitFor } from '../helpers/wait.js';

/**
 * plant-2026-03 with two replicas: pumps A and B owned by different replicas, ten tables read by both.
 * Each table's progress is per reader, so neither replica's checkpoint passes a row the other pump has
 * not settled.
 */
let h: Harness;
let m1: Monitor;
let m2: Monitor;

beforeAll(async () => {
  h = await harness('plantrep', {
    PUMPS_PROFILE: 'plant-2026-03',
    PUMPS: 'A,B',
    LEASE_INTERVAL_MS: '200',
    // Two engines, the simulator and the backend share this process's event loop. Under load it stalls
    // past 2 s, and then an attempt times out with its request still unread in the backend's socket, which
    // the backend answers 200 later anyway; the resend under the same key is a second 200, and rightly
    // counted as one. Timeouts are not what this file tests (faults.test.ts does), so they get room here.
    HTTP_TIMEOUT_MS: '15000',
  });
  m1 = await h.startMonitor();
  m2 = await h.startMonitor();
});

afterAll(async () => {
  await h?.close();
});

/**
 * Counted with the strict ledger once both replicas are quiescent and the backend has been quiet: every
 * row posted once to each pump that reads its table, every timestamp's vector once, identified by its rows
 * and with exactly their values (where two tables feed one of B's fields, the first to arrive).
 */
async function expectExactlyOnceNow(timestamps: number, monitors: Monitor[]): Promise<void> {
  const ledger = h.ledger();
  const c = await ledger.settle({ admin: h.admin, monitors, timeoutMs: 60_000, quietMs: 1_500 });
  ledger.report(`plant-replicas-${timestamps}`);
  expect(c.vectors).toBe(2 * timestamps);
  expectExactlyOnce(c);
}

describe('plant-2026-03 with two replicas', () => {
  // On the replication source one replica reads the slot and serves both pumps: no split to test.
  it.skipIf(onReplication)(
    'A and B on different replicas, shared tables: 0 lost, 0 duplicated; again after one stops mid-stream',
    async () => {
      await waitFor(
        'one pump each',
        () => m1.status().owned_pumps.length === 1 && m2.status().owned_pumps.length === 1,
        30_000,
      );
      expect(new Set([...m1.status().owned_pumps, ...m2.status().owned_pumps])).toEqual(new Set(['A', 'B']));
      const pumps = [h.pumps.A, h.pumps.B];
      await runSimulator({
        pool: h.admin,
        pumps,
        rate: 10,
        count: 30,
        startTime: new Date('2026-03-02T00:00:00Z'),
      });
      await expectExactlyOnceNow(30, [m1, m2]);
      // A shared table has a checkpoint per reader, each written by the replica owning that pump.
      await waitFor('both readers of a shared table past its rows', async () => {
        const { rows } = await h.admin.query<{ pump: string; behind: boolean }>(
          `SELECT c.pump, c.last_id < (SELECT max(id) FROM voltaje_barra) AS behind
           FROM pump_monitor.checkpoints c WHERE c.table_name = 'voltaje_barra' ORDER BY c.pump`,
        );
        return rows.map((r) => r.pump).join(',') === 'A,B' && rows.every((r) => !r.behind);
      });

      // One replica stops gracefully mid-stream; the other takes its pump over.
      const run = runSimulator({
        pool: h.admin,
        pumps,
        rate: 10,
        count: 30,
        startTime: new Date('2026-03-02T01:00:00Z'),
      });
      let finished = false;
      void run.then(() => {
        finished = true;
      });
      // The stop lands mid-stream: after some of this run's vectors, before its last timestamp is written.
      const second = () =>
        h.backend.requests.filter((r) => r.path.includes('predecir') && r.status === 200).length;
      const before = second();
      await waitFor('five vectors of the second run', () => second() >= before + 5, 30_000);
      expect(finished, 'the stop must land while the simulator still writes').toBe(false);
      await m1.stop();
      await run;
      await waitFor('the other replica owns both', () => m2.status().owned_pumps.length === 2, 30_000);
      await expectExactlyOnceNow(60, [m2]);
    },
  );
});

describe('plant-2026-03 logbook lease with two replicas', () => {
  it('one replica sends each entry; after it stops, the other takes the lease and sends the rest, once each', async () => {
    const x = await harness('plantlb', {
      PUMPS_PROFILE: 'plant-2026-03',
      PUMPS: 'bitacoras',
      LEASE_INTERVAL_MS: '200',
    });
    try {
      const r1 = await x.startMonitor();
      const r2 = await x.startMonitor();
      const owners = () => [r1, r2].filter((m) => m.status().owned_pumps.includes('bitacoras'));
      await waitFor('one owner', () => owners().length === 1, 30_000);
      expect(owners()).toHaveLength(1);
      const write = async (n: number, from: number) => {
        for (let i = 0; i < n; i++) {
          await x.admin.query('INSERT INTO gm_bitacoras_a (bitacora) VALUES ($1)', [`Entrada ${from + i}`]);
          await x.admin.query('INSERT INTO gm_bitacoras_b (bitacora) VALUES ($1)', [`Entrada ${from + i}`]);
        }
      };
      await write(10, 0);
      const sent = () => x.backend.answeredByKey((r) => r.path.includes('gm-bitacoras'));
      await waitFor('20 entries', () => sent().size === 20);
      const first = owners()[0] as Monitor;
      const other = first === r1 ? r2 : r1;
      const stopping = first.stop();
      await write(10, 10);
      await stopping;
      await waitFor('the other owns it', () => other.status().owned_pumps.includes('bitacoras'), 30_000);
      await waitFor('40 entries', () => sent().size === 40, 30_000);
      for (const [key, n] of sent()) expect(n, key).toBe(1);
    } finally {
      await x.close();
    }
  });
});
