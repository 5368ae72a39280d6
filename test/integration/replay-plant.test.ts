import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Monitor } from '../../src/engine/monitor.js';
import { quoteIdent } from '../../src/store/db.js';
import { ENGINE_SCHEMA } from '../../src/store/schema.js';
import { runCli } from '../helpers/child.js';
import { type Harness, harness, insertTimestamp, testEnv } from '../helpers/engine.js';
import { type PrivateServer, startPrivateServer } from '../helpers/private-server.js';
import { waitFor } from '../helpers/wait.js';

/**
 * `pump-monitor replay` on plant-2026-03, where ten tables are read by both pumps, with two replicas
 * running. A replay of pump A and one of pump B each rebuild their pump's vectors from the same rows
 * (shared ones included) and queue every reading's post again: a shared row is posted once to each pump's
 * path, under each pump's own replay key. Each replica sends only what its pumps own, so every replayed
 * vector and post is answered once, whichever replica owns which pump.
 */

const S = ENGINE_SCHEMA;
/** The pumps' path prefixes in ../shared/spec/plant-2026-03.json. */
const PREFIX: Record<string, string> = { A: '/sensores', B: '/sensores_b' };
const TIEMPOS = ['2026-03-02T06:00:01', '2026-03-02T06:00:02', '2026-03-02T06:00:03'];

let server: PrivateServer | undefined;
let h: Harness;
let replicas: Monitor[] = [];

beforeAll(async () => {
  // A server of this file's own: a replay reads only rows below the saved checkpoints, which another
  // file's open transaction would hold down.
  server = await startPrivateServer();
  h = await harness(
    'replay_plant',
    { PUMPS_PROFILE: 'plant-2026-03', PUMPS: 'A,B', LEASE_INTERVAL_MS: '200' },
    { server: server.url },
  );
  replicas = [await h.startMonitor(), await h.startMonitor()];
});

afterAll(async () => {
  await h?.close();
  await server?.stop();
});

/** Per pump, which replica owns it (every pump owned by exactly one). */
function owners(): Map<string, number[]> {
  const out = new Map<string, number[]>();
  replicas.forEach((m, i) => {
    for (const p of (m.status() as { owned_pumps: string[] }).owned_pumps)
      out.set(p, [...(out.get(p) ?? []), i]);
  });
  return out;
}

describe('replay on plant-2026-03 with two replicas', { timeout: 180_000 }, () => {
  it('replays of both pumps over shared tables: every vector and every post once, to its own pump', async () => {
    const A = h.pumps.A;
    const B = h.pumps.B;
    const aTables = new Set(A.sensors.map((s) => s.table));
    const shared = B.sensors.filter((s) => aTables.has(s.table));
    // The profile as the spec gives it: ten tables both pumps read.
    expect(shared).toHaveLength(10);
    await waitFor('each pump owned by one replica, the two replicas sharing them', () => {
      const o = owners();
      return o.get('A')?.length === 1 && o.get('B')?.length === 1 && o.get('A')?.[0] !== o.get('B')?.[0];
    });

    // Each timestamp: every table of A, then the tables only B reads (the shared rows are both pumps').
    // (By table: two of B's sensors may share a field, one on a shared table and one not.)
    const bOnly = B.sensors.filter((s) => !aTables.has(s.table));
    for (const [k, t] of TIEMPOS.entries()) {
      await insertTimestamp(h.admin, A, t, {
        value: (f) => 10 + k * 100 + A.sensors.findIndex((s) => s.field === f),
      });
      for (const [j, s] of bOnly.entries())
        await h.admin.query(
          `INSERT INTO ${quoteIdent(s.table)} (tiempo_sensor, valor_sensor) VALUES ($1, $2)`,
          [t, 50 + k * 100 + j],
        );
    }
    const live = async (pump: string) => {
      const { rows } = await h.admin.query<{ t: string; body: Record<string, number> }>(
        `SELECT tiempo_sensor AS t, body FROM ${S}.outbox WHERE pump = $1 AND replay_id IS NULL AND status = 'sent' ORDER BY tiempo_sensor`,
        [pump],
      );
      return rows;
    };
    await waitFor('the live vectors of both pumps', async () => {
      const [a, b] = [await live('A'), await live('B')];
      return a.length === TIEMPOS.length && b.length === TIEMPOS.length;
    });
    // Every reader's checkpoint past the rows: the replay reads only what the engine has dealt with.
    await waitFor('the checkpoints past the rows', async () => {
      for (const p of [A, B])
        for (const s of p.sensors) {
          const { rows } = await h.admin.query<{ n: number }>(
            `SELECT count(*)::int AS n FROM ${quoteIdent(s.table)}
              WHERE id > coalesce((SELECT last_id FROM ${S}.checkpoints WHERE table_name = $1 AND pump = $2), 0)`,
            [s.table, p.id],
          );
          if (rows[0]?.n !== 0) return false;
        }
      return true;
    });
    const { rows: range } = await h.admin.query<{ from: string; to: string }>(
      `SELECT (min(tiempo_ejecucion) - interval '1 second')::text AS from, (max(tiempo_ejecucion) + interval '1 second')::text AS to
         FROM ${quoteIdent(A.sensors[0]?.table as string)}`,
    );
    const { from, to } = range[0] as { from: string; to: string };
    const before = h.backend.requests.length;

    const env = testEnv(h.db, h.backend, { PUMPS_PROFILE: 'plant-2026-03', PUMPS: 'A,B' });
    const runs: Record<string, { id: number; counts: Record<string, number> }> = {};
    for (const pump of ['A', 'B']) {
      const r = await runCli(
        ['replay', '--pump', pump, '--from', from, '--to', to, '--posts', '--json'],
        env,
      );
      expect(r.code, r.stderr).toBe(0);
      runs[pump] = JSON.parse(r.stdout);
    }
    const sensors = { A: A.sensors.length, B: B.sensors.length };
    for (const pump of ['A', 'B'] as const)
      expect(runs[pump]?.counts).toMatchObject({
        vectors: TIEMPOS.length,
        posts: TIEMPOS.length * sensors[pump],
        dropped: 0,
        unsettled: 0,
      });

    const replayed = (pump: 'A' | 'B') => {
      const suffix = `-replay-${runs[pump]?.id}`;
      return h.backend.requests
        .slice(before)
        .filter((r) => r.status === 200 && r.idempotencyKey?.endsWith(suffix));
    };
    const postsOf = (pump: 'A' | 'B') => replayed(pump).filter((r) => !r.path.includes('predecir'));
    const vectorsOf = (pump: 'A' | 'B') => replayed(pump).filter((r) => r.path.includes('predecir'));
    await waitFor(
      'every replayed vector and post answered',
      () =>
        (['A', 'B'] as const).every(
          (p) => vectorsOf(p).length >= TIEMPOS.length && postsOf(p).length >= TIEMPOS.length * sensors[p],
        ),
      60_000,
    );
    await waitFor('both replicas quiescent', () =>
      h.ledger().quiescent({ admin: h.admin, monitors: replicas }),
    );

    for (const pump of ['A', 'B'] as const) {
      const p = h.pumps[pump];
      // Vectors: once each, to the pump's own unified path, equal to the live ones (shared fields included).
      const vectors = vectorsOf(pump);
      expect(new Set(vectors.map((r) => r.idempotencyKey)).size).toBe(vectors.length);
      expect(vectors.every((r) => r.path === `${PREFIX[pump]}${p.unifiedPath}`)).toBe(true);
      const canonical = (b: Record<string, unknown>) =>
        JSON.stringify(Object.entries(b).sort(([x], [y]) => x.localeCompare(y)));
      expect(vectors.map((r) => canonical(r.body)).sort()).toEqual(
        (await live(pump)).map((l) => canonical(l.body)).sort(),
      );
      // Posts: every row the pump reads, once, at its sensor's path, under the reading's key plus the
      // run's suffix; a shared row's key names the pump. (Two of B's tables post to one endpoint: rows are
      // told apart by key, which names the table.)
      const suffix = `-replay-${runs[pump]?.id}`;
      const want = new Map<string, string>();
      for (const s of p.sensors) {
        const { rows } = await h.admin.query<{ id: number }>(
          `SELECT id FROM ${quoteIdent(s.table)} ORDER BY id`,
        );
        const named = shared.some((x) => x.table === s.table) ? `${pump}-` : '';
        for (const r of rows)
          want.set(`rd-${named}${s.table}-${r.id}${suffix}`, `${PREFIX[pump]}${s.endpoint}`);
      }
      const posts = postsOf(pump);
      expect(posts.map((r) => r.idempotencyKey).sort()).toEqual([...want.keys()].sort());
      for (const r of posts) expect(r.path, r.idempotencyKey).toBe(want.get(r.idempotencyKey as string));
    }
    // Nothing of either replay went to the other pump's paths, and nothing else was sent since.
    const other = h.backend.requests
      .slice(before)
      .filter((r) => !/-replay-\d+$/.test(r.idempotencyKey ?? ''));
    expect(other.map((r) => `${r.path} ${r.idempotencyKey}`)).toEqual([]);
    // Each replica still owns one pump: the replays were sent by the owners, not by both.
    expect([...owners().values()].every((o) => o.length === 1)).toBe(true);
  });
});
