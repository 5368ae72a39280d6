import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createPool } from '../../src/store/db.js';
import { type Harness, harness } from '../helpers/engine.js';

/**
 * The engine's pools plan without parallel workers (store/db.ts): at 200 pumps its row reads were planned
 * as parallel appends whose workers cost more than the scans. Other pools keep the server's setting.
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

describe('pools', () => {
  it("a pool made without parallel workers has none per gather; a default pool keeps the server's", async () => {
    const { rows } = await h.admin.query<{ setting: string }>(
      "SELECT current_setting('max_parallel_workers_per_gather') AS setting",
    );
    expect(await workersPerGather(false)).toBe('0');
    expect(await workersPerGather(true)).toBe(rows[0]?.setting);
    expect(rows[0]?.setting).not.toBe('0');
  });
});
