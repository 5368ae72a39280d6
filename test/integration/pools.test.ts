import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { clientConfig, createPool } from '../../src/store/db.js';
import { type Harness, harness } from '../helpers/engine.js';

/**
 * The engine's pools plan without parallel workers (store/db.ts): at 200 pumps its row reads were planned
 * as parallel appends whose workers cost more than the scans. Other pools keep the server's setting. And
 * every session of ours, pooled or not, sets the server's TCP keepalive (store/db.ts, SERVER_KEEPALIVE).
 */

let h: Harness;
beforeAll(async () => {
  h = await harness('pools');
});
afterAll(async () => {
  await h?.close();
});

async function workersPerGather(parallelWorkers: boolean): Promise<string> {
  const pool = createPool(h.config.database, 'pools-test', 1, 5_000, 30_000, parallelWorkers);
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
  it("a pool made without parallel workers has none per gather; a default pool keeps the server's", async () => {
    const { rows } = await h.admin.query<{ setting: string }>(
      "SELECT current_setting('max_parallel_workers_per_gather') AS setting",
    );
    expect(await workersPerGather(false)).toBe('0');
    expect(await workersPerGather(true)).toBe(rows[0]?.setting);
    expect(rows[0]?.setting).not.toBe('0');
  });

  it("every session asks the server to probe its peer (a dead replica's leases go in seconds, not hours)", async () => {
    expect(h.config.database.host).not.toMatch(/^\//); // a Unix socket would ignore the settings
    const client = new pg.Client(clientConfig(h.config.database, 'keepalive-test'));
    await client.connect();
    try {
      expect(await keepalives(client)).toEqual(['10', '5', '3']);
    } finally {
      await client.end();
    }
    for (const parallelWorkers of [true, false]) {
      const pool = createPool(h.config.database, 'keepalive-test', 1, 5_000, 30_000, parallelWorkers);
      try {
        expect(await keepalives(pool), `parallelWorkers ${parallelWorkers}`).toEqual(['10', '5', '3']);
      } finally {
        await pool.end();
      }
    }
    expect(await workersPerGather(false)).toBe('0');
  });
});
