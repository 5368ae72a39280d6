import type pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { Monitor } from '../../src/engine/monitor.js';
import { quoteIdent } from '../../src/store/db.js';
import { ENGINE_SCHEMA } from '../../src/store/schema.js';
import { type Harness, harness, insertTimestamp } from '../helpers/engine.js';
import { type PrivateServer, startPrivateServer } from '../helpers/private-server.js';
import { TcpProxy } from '../helpers/tcp-proxy.js';
import { waitFor } from '../helpers/wait.js';

/**
 * Writers commit out of id order: a transaction that took lower ids commits after one that took higher
 * ids. Neither a checkpoint nor a catch-up may skip the rows that commit late.
 *
 * The horizon that holds checkpoints back is the server's oldest running transaction, whichever database
 * it is in: on the shared server another file's open transaction would hold every checkpoint down and the
 * checks below would pass with the bug they target. So this file runs on a server of its own, and each
 * test asserts that the horizon the engine used was the xid of its own open transaction.
 */

let server: PrivateServer | undefined;
beforeAll(async () => {
  server = await startPrivateServer();
});
afterAll(async () => {
  await server?.stop();
});

function ownHarness(prefix: string): Promise<Harness> {
  return harness(prefix, {}, { server: server?.url });
}

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
  // Its transaction id as the horizon sees it (32 bits, as pg_snapshot_xmin is compared there).
  const { rows: own } = await client.query<{ xid: string }>(
    'SELECT pg_current_xact_id()::text::bigint % 4294967296 AS xid',
  );
  return {
    ids,
    xid: Number(own[0]?.xid),
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

/** The horizon the engine's LISTEN session gives now (what its checkpoint keeper uses). */
function listenerHorizon(m: Monitor): Promise<number | undefined> {
  return m.units.listener.horizon();
}

/** The horizon the engine's checkpoint keeper last used (private fields, read for this check only). */
function keeperHorizon(m: Monitor): number | undefined {
  return (m as unknown as { u: { ledger: { lastHorizon?: number } } }).u.ledger.lastHorizon;
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
    h = await ownHarness('late_restart');
    const x = h;
    const m1 = await x.startMonitor();
    const early = await openWriter(x, '2025-04-01T10:00:00');
    const later = await insertTimestamp(x.admin, x.pumps.A, '2025-04-01T10:00:01');
    await waitFor('the later transaction delivered', () => laterCommitted(x) === 1);
    // Its readings answered, their checkpoints want to move: the next saves ask for the horizon.
    await waitFor('the later readings delivered', () => delivered(x, later).posts === 20);
    const saves = m1.status().checkpoint_saves;
    await waitFor('two checkpoint saves since', () => m1.status().checkpoint_saves >= saves + 2);
    // What holds the checkpoints back is this test's own open transaction, and nothing older.
    expect(keeperHorizon(m1)).toBe(early.xid);
    expect(await listenerHorizon(m1)).toBe(early.xid);
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
    h = await ownHarness('late_listen');
    const x = h;
    // The engine reaches PostgreSQL through a proxy of the test's own, so the gap can be held open.
    const { proxy, viaProxy } = await proxyFor(x);
    try {
      const m = await x.startMonitor({ DATABASE_URL: viaProxy, DB_QUERY_TIMEOUT_MS: '1000' });
      const early = await openWriter(x, '2025-04-02T10:00:00');
      const later = await insertTimestamp(x.admin, x.pumps.A, '2025-04-02T10:00:01');
      await waitFor('the later transaction delivered', () => laterCommitted(x) === 1);
      await waitFor('the later readings delivered', () => delivered(x, later).posts === 20);
      const saves = m.status().checkpoint_saves;
      await waitFor('two checkpoint saves since', () => m.status().checkpoint_saves >= saves + 2);
      expectBelow(await checkpoints(x), early.ids);
      expect(keeperHorizon(m)).toBe(early.xid);
      expect(await listenerHorizon(m)).toBe(early.xid);

      await proxy.refuse(); // the LISTEN session ends, and reconnecting fails until restore()
      await waitFor('the LISTEN connection lost', () => !m.units.listener.listening);
      await early.commit(); // notified to nobody
      expect(m.units.listener.listening).toBe(false);
      await proxy.restore();

      await waitFor(
        'the early transaction delivered',
        () => {
          const d = delivered(x, early.ids);
          return d.vectors === 1 && d.posts === 20;
        },
        20_000,
        async () => {
          const st = m.status();
          const a = st.pumps.A as { catchup_rows: number; open_groups: number };
          return {
            delivered: delivered(x, early.ids),
            state: st.state,
            owned: st.owned_pumps,
            work: st.work,
            a: { catchup_rows: a.catchup_rows, open_groups: a.open_groups },
            checkpoints: await checkpoints(x),
            early: early.ids,
          };
        },
      );
      // Its rows came back through the catch-up.
      expect((m.status().pumps.A as { catchup_rows: number }).catchup_rows).toBeGreaterThanOrEqual(20);
      expect(delivered(x, early.ids)).toEqual({ vectors: 1, posts: 20 });
    } finally {
      await proxy.stop();
    }
  });

  it('it commits while its notifications wait unread (the engine behind the stream): no checkpoint passes its rows', async () => {
    h = await ownHarness('late_unread');
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
      const later = await insertTimestamp(x.admin, x.pumps.A, '2025-04-03T10:00:01');
      await waitFor('the later transaction delivered', () => laterCommitted(x) === 1);
      await waitFor('the later readings delivered', () => delivered(x, later).posts === 20);
      const saves0 = m.status().checkpoint_saves;
      await waitFor('a checkpoint save since', () => m.status().checkpoint_saves >= saves0 + 1);
      expectBelow(await checkpoints(x), early.ids);
      expect(keeperHorizon(m)).toBe(early.xid);
      expect(await listenerHorizon(m)).toBe(early.xid);

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
      // The LISTEN session cannot answer while its replies are held: the keeper keeps the horizon it last
      // had, the one of this test's own transaction (committed now, but not yet heard of).
      expect(keeperHorizon(m)).toBe(early.xid);

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
