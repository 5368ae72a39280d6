import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Monitor } from '../../src/engine/monitor.js';
import { quoteIdent } from '../../src/store/db.js';
import { runSimulator } from '../../src/tools/simulator.js';
import { type Harness, harness } from '../helpers/engine.js';
import { waitFor } from '../helpers/wait.js';

/**
 * plant-2026-03 with two replicas: pumps A and B owned by different replicas, ten tables read by both.
 * Each table's progress is per reader, so neither replica's checkpoint passes a row the other pump has
 * not settled. Counted at the backend: every post by (path, id_sensor), every vector by (path, body).
 */
let h: Harness;
let m1: Monitor;
let m2: Monitor;

beforeAll(async () => {
  h = await harness('plantrep', { PUMPS_PROFILE: 'plant-2026-03', PUMPS: 'A,B', LEASE_INTERVAL_MS: '200' });
  m1 = await h.startMonitor();
  m2 = await h.startMonitor();
});

afterAll(async () => {
  await h?.close();
});

const PREFIX: Record<string, string> = { A: '/sensores', B: '/sensores_b' };

/** What the backend must have received, from the tables: posts per (path, id_sensor), and vectors per pump. */
async function expected(): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  for (const p of [h.pumps.A, h.pumps.B]) {
    for (const s of p.sensors) {
      const { rows } = await h.admin.query<{ id: number }>(`SELECT id FROM ${quoteIdent(s.table)}`);
      for (const r of rows) {
        const k = `${PREFIX[p.id]}${s.endpoint} ${r.id}`;
        out.set(k, (out.get(k) ?? 0) + 1);
      }
    }
  }
  return out;
}

function delivered(): { posts: Map<string, number>; vectors: Map<string, number> } {
  const posts = new Map<string, number>();
  const vectors = new Map<string, number>();
  for (const r of h.backend.requests) {
    if (r.status !== 200) continue;
    if (r.path.includes('predecir')) {
      const k = `${r.path} ${JSON.stringify(r.body)}`;
      vectors.set(k, (vectors.get(k) ?? 0) + 1);
    } else {
      const k = `${r.path} ${r.body.id_sensor}`;
      posts.set(k, (posts.get(k) ?? 0) + 1);
    }
  }
  return { posts, vectors };
}

async function expectExactlyOnce(timestamps: number): Promise<void> {
  const want = await expected();
  const total = [...want.values()].reduce((a, b) => a + b, 0);
  await waitFor(
    'every post and vector',
    () => {
      const d = delivered();
      const posts = [...d.posts.values()].reduce((a, b) => a + b, 0);
      const vectors = [...d.vectors.values()].reduce((a, b) => a + b, 0);
      return posts >= total && vectors >= 2 * timestamps;
    },
    60_000,
  );
  // Counted once the backend has been quiet for a second and a half: a late resend counts too.
  let seen = h.backend.requests.length;
  let quietSince = Date.now();
  await waitFor(
    'a quiet backend',
    () => {
      if (h.backend.requests.length !== seen) {
        seen = h.backend.requests.length;
        quietSince = Date.now();
      }
      return Date.now() - quietSince >= 1_500 && h.backend.inFlight === 0;
    },
    30_000,
  );
  const d = delivered();
  let lost = 0;
  let duplicated = 0;
  for (const [k, n] of want) {
    const got = d.posts.get(k) ?? 0;
    if (got < n) lost += n - got;
    if (got > n) duplicated += got - n;
  }
  const unexpected: string[] = [];
  for (const [k, n] of d.posts) {
    if (!want.has(k)) duplicated += n;
    if ((d.posts.get(k) ?? 0) !== (want.get(k) ?? 0)) unexpected.push(`${k} x${n}`);
  }
  // The keys name what went wrong when it does (a post lost, twice, or to a path nobody expects).
  expect({ lost, duplicated, keys: unexpected.slice(0, 10) }).toEqual({ lost: 0, duplicated: 0, keys: [] });
  for (const [k, n] of d.vectors) expect(n, k).toBe(1);
  const perPath = (path: string) => [...d.vectors.keys()].filter((k) => k.startsWith(`${path} `)).length;
  expect(perPath('/sensores/predecir-bomba')).toBe(timestamps);
  expect(perPath('/sensores_b/predecir-bomba-b')).toBe(timestamps);
}

describe('plant-2026-03 with two replicas', () => {
  it('A and B on different replicas, shared tables: 0 lost, 0 duplicated; again after one stops mid-stream', async () => {
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
    await expectExactlyOnce(30);
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
    await expectExactlyOnce(60);
  });
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
