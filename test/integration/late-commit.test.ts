import type pg from 'pg';
import { afterEach, describe, expect, it } from 'vitest';
import { quoteIdent } from '../../src/store/db.js';
import { ENGINE_SCHEMA } from '../../src/store/schema.js';
import { type Harness, harness, insertTimestamp } from '../helpers/engine.js';
import { TcpProxy } from '../helpers/tcp-proxy.js';
import { waitFor } from '../helpers/wait.js';

/**
 * Writers commit out of id order: a transaction that took lower ids commits after one that took higher
 * ids. Neither a checkpoint nor a catch-up may skip the rows that commit late.
 */

let h: Harness | undefined;
let open: pg.PoolClient | undefined;
afterEach(async () => {
  await open?.query('ROLLBACK').catch(() => {});
  open?.release();
  open = undefined;
  await h?.close();
  h = undefined;
});

/** A second writer: one timestamp of pump A inserted in a transaction left open; ids are taken now. */
async function openWriter(x: Harness, tiempo: string) {
  const client = await x.admin.connect();
  open = client;
  await client.query('BEGIN');
  const ids: number[] = [];
  for (const [i, s] of x.pumps.A.sensors.entries()) {
    const { rows } = await client.query<{ id: number }>(
      `INSERT INTO ${quoteIdent(s.table)} (tiempo_sensor, valor_sensor) VALUES ($1, $2) RETURNING id`,
      [tiempo, 300 + i],
    );
    ids.push(rows[0]?.id as number);
  }
  return {
    ids,
    async commit() {
      await client.query('COMMIT');
      client.release();
      open = undefined;
    },
  };
}

function delivered(x: Harness, ids: number[]) {
  const unified = x.backend.requests.filter(
    (r) => r.status === 200 && r.path === '/sensores/predecir-bomba' && r.body.corriente_motor === 300,
  );
  const posts = x.pumps.A.sensors.filter((s, i) =>
    x.backend.requests.some(
      (r) => r.status === 200 && r.path === `/sensores${s.endpoint}` && r.body.id_sensor === ids[i],
    ),
  );
  return { vectors: unified.length, posts: posts.length };
}

async function checkpoints(x: Harness): Promise<number[]> {
  const { rows } = await x.admin.query<{ table_name: string; last_id: string }>(
    `SELECT table_name, last_id FROM ${ENGINE_SCHEMA}.checkpoints WHERE table_name = ANY($1)`,
    [x.pumps.A.sensors.map((s) => s.table)],
  );
  const byTable = new Map(rows.map((r) => [r.table_name, Number(r.last_id)]));
  return x.pumps.A.sensors.map((s) => byTable.get(s.table) as number);
}

/** Every table's checkpoint is below the row the open transaction holds in it. */
function expectBelow(cps: number[], ids: number[]): void {
  expect(cps).toHaveLength(ids.length);
  for (const [i, cp] of cps.entries()) expect(cp).toBeLessThan(ids[i] as number);
}

function laterCommitted(x: Harness) {
  return x.backend.requests.filter(
    (r) => r.status === 200 && r.path === '/sensores/predecir-bomba' && r.body.corriente_motor === 100,
  ).length;
}

/** A proxy of the test's own in front of the harness's PostgreSQL, and the database URL through it. */
async function proxyFor(x: Harness): Promise<{ proxy: TcpProxy; viaProxy: string }> {
  const proxy = await new TcpProxy(x.db.config.port).start();
  const url = new URL(x.db.url);
  url.port = String(proxy.port);
  return { proxy, viaProxy: url.toString() };
}

describe('commits out of id order', () => {
  it('the engine restarts while a transaction holding lower ids is open: its rows are caught up, none lost', async () => {
    h = await harness('late_restart');
    const x = h;
    const m1 = await x.startMonitor();
    const early = await openWriter(x, '2025-04-01T10:00:00');
    await insertTimestamp(x.admin, x.pumps.A, '2025-04-01T10:00:01');
    await waitFor('the later transaction delivered', () => laterCommitted(x) === 1);
    await m1.stop(); // saves its checkpoints

    expectBelow(await checkpoints(x), early.ids);

    await early.commit(); // while no engine runs
    await x.startMonitor();
    await waitFor('the early transaction delivered', () => {
      const d = delivered(x, early.ids);
      return d.vectors === 1 && d.posts === 20;
    });
    expect(delivered(x, early.ids)).toEqual({ vectors: 1, posts: 20 });
  });

  it('the LISTEN connection is cut while it is open, and it commits in the gap: 0 lost', async () => {
    h = await harness('late_listen');
    const x = h;
    // The engine reaches PostgreSQL through a proxy of the test's own, so the gap can be held open.
    const { proxy, viaProxy } = await proxyFor(x);
    try {
      const m = await x.startMonitor({ DATABASE_URL: viaProxy, DB_QUERY_TIMEOUT_MS: '1000' });
      const early = await openWriter(x, '2025-04-02T10:00:00');
      await insertTimestamp(x.admin, x.pumps.A, '2025-04-02T10:00:01');
      await waitFor('the later transaction delivered', () => laterCommitted(x) === 1);
      const saves = m.status().checkpoint_saves;
      await waitFor('two checkpoint saves since', () => m.status().checkpoint_saves >= saves + 2);
      expectBelow(await checkpoints(x), early.ids);

      await proxy.refuse(); // the LISTEN session ends, and reconnecting fails until restore()
      await waitFor('the LISTEN connection lost', () => !m.listener.listening);
      await early.commit(); // notified to nobody
      expect(m.listener.listening).toBe(false);
      await proxy.restore();

      await waitFor('the early transaction delivered', () => {
        const d = delivered(x, early.ids);
        return d.vectors === 1 && d.posts === 20;
      });
      // Its rows came back through the catch-up.
      expect((m.status().pumps.A as { catchup_rows: number }).catchup_rows).toBeGreaterThanOrEqual(20);
      expect(delivered(x, early.ids)).toEqual({ vectors: 1, posts: 20 });
    } finally {
      await proxy.stop();
    }
  });

  it('it commits while its notifications wait unread (the engine behind the stream): no checkpoint passes its rows', async () => {
    h = await harness('late_unread');
    const x = h;
    const { proxy, viaProxy } = await proxyFor(x);
    try {
      // No heartbeat during the test: the held session must not be torn down and held by reconnecting.
      const m = await x.startMonitor({
        DATABASE_URL: viaProxy,
        HEARTBEAT_INTERVAL_MS: '600000',
        HEARTBEAT_TIMEOUT_MS: '500',
      });
      const early = await openWriter(x, '2025-04-03T10:00:00');
      await insertTimestamp(x.admin, x.pumps.A, '2025-04-03T10:00:01');
      await waitFor('the later transaction delivered', () => laterCommitted(x) === 1);
      const saves0 = m.status().checkpoint_saves;
      await waitFor('a checkpoint save since', () => m.status().checkpoint_saves >= saves0 + 1);
      expectBelow(await checkpoints(x), early.ids);

      // What the server sends the LISTEN session now waits in the proxy: the engine is behind the stream,
      // as while it works through a burst. The early transaction commits meanwhile; its rows are visible
      // to every other session, its notifications unread.
      const { rows } = await x.admin.query<{ port: number }>(
        `SELECT client_port AS port FROM pg_stat_activity
          WHERE datname = current_database() AND application_name LIKE 'pm-listen:%'`,
      );
      expect(rows).toHaveLength(1);
      expect(proxy.holdReplies(rows[0]?.port as number)).toBe(true);
      await early.commit();
      const saves1 = m.status().checkpoint_saves;
      await waitFor('two checkpoint saves since', () => m.status().checkpoint_saves >= saves1 + 2);
      expectBelow(await checkpoints(x), early.ids);

      proxy.releaseReplies();
      await waitFor('the early transaction delivered', () => {
        const d = delivered(x, early.ids);
        return d.vectors === 1 && d.posts === 20;
      });
      expect(delivered(x, early.ids)).toEqual({ vectors: 1, posts: 20 });
    } finally {
      await proxy.stop();
    }
  });
});
