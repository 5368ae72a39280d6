import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { clientConfig, createPool, engineSessionConfig } from '../../src/store/db.js';
import { type Harness, harness } from '../helpers/engine.js';

/**
 * The engine's pools plan without parallel workers (store/db.ts): at 200 pumps its row reads were planned
 * as parallel appends whose workers cost more than the scans. Other pools keep the server's setting. And
 * the engine's sessions, pooled or not, set the server's TCP keepalive (store/db.ts, SERVER_KEEPALIVE);
 * the operator commands' send no startup options (a PgBouncer would refuse them).
 */

let h: Harness;
beforeAll(async () => {
  h = await harness('pools');
});
afterAll(async () => {
  await h?.close();
});

async function workersPerGather(engine: boolean): Promise<string> {
  const pool = createPool(h.config.database, 'pools-test', 1, 5_000, 30_000, engine);
  try {
    const { rows } = await pool.query<{ max_parallel_workers_per_gather: string }>(
      'SHOW max_parallel_workers_per_gather',
    );
    return rows[0]?.max_parallel_workers_per_gather ?? '';
  } finally {
    await pool.end();
  }
}

/** The server's keepalive settings in a session: idle, interval, count. */
async function keepalives(q: { query: pg.ClientBase['query'] }): Promise<string[]> {
  const { rows } = await q.query<{ v: string }>(
    "SELECT unnest(ARRAY[current_setting('tcp_keepalives_idle'), current_setting('tcp_keepalives_interval'), current_setting('tcp_keepalives_count')]) AS v",
  );
  return rows.map((r) => r.v);
}

describe('pools', () => {
  it("an engine pool plans with no parallel workers per gather; another pool keeps the server's", async () => {
    const { rows } = await h.admin.query<{ setting: string }>(
      "SELECT current_setting('max_parallel_workers_per_gather') AS setting",
    );
    expect(await workersPerGather(true)).toBe('0');
    expect(await workersPerGather(false)).toBe(rows[0]?.setting);
    expect(rows[0]?.setting).not.toBe('0');
  });

  it("the engine's sessions ask the server to probe their peer (a dead replica's leases go in seconds, not hours)", async () => {
    expect(h.config.database.host).not.toMatch(/^\//); // a Unix socket would ignore the settings
    const { rows } = await h.admin.query<{ v: string }>("SELECT current_setting('tcp_keepalives_idle') AS v");
    const serverDefault = rows[0]?.v;
    expect(serverDefault).not.toBe('10');
    const session = async (config: pg.ClientConfig) => {
      const client = new pg.Client(config);
      await client.connect();
      try {
        return await keepalives(client);
      } finally {
        await client.end();
      }
    };
    expect(await session(engineSessionConfig(h.config.database, 'keepalive-test'))).toEqual(['10', '5', '3']);
    const pool = async (engine: boolean) => {
      const p = createPool(h.config.database, 'keepalive-test', 1, 5_000, 30_000, engine);
      try {
        return await keepalives(p);
      } finally {
        await p.end();
      }
    };
    expect(await pool(true)).toEqual(['10', '5', '3']);
    // The operator commands' sessions send no options: the server's own settings.
    expect((await session(clientConfig(h.config.database, 'keepalive-test')))[0]).toBe(serverDefault);
    expect((await pool(false))[0]).toBe(serverDefault);
  });
});
