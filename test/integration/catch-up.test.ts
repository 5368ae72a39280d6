import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { PumpConfig } from '../../src/config/env.js';
import { quoteIdent } from '../../src/store/db.js';
import { ENGINE_SCHEMA } from '../../src/store/schema.js';
import { type Harness, harness } from '../helpers/engine.js';
import { expectExactlyOnce } from '../helpers/ledger.js';
import { waitFor } from '../helpers/wait.js';

let h: Harness;

beforeAll(async () => {
  h = await harness('catchup');
});

afterAll(async () => {
  await h?.close();
});

const TIMESTAMPS = 400;

/**
 * Which sensors of pump A miss timestamp `i`: every tenth timestamp misses six (14 of 20, below the
 * threshold); every odd one misses the first four (16 of 20, sent with fills). The first four tables then
 * hold about half as many rows as the others, so a batch of theirs spans twice the time.
 */
function missing(i: number): Set<number> {
  if (i % 10 === 0) return new Set([0, 1, 2, 3, 4, 5]);
  if (i % 2 === 1) return new Set([0, 1, 2, 3]);
  return new Set();
}

function tiempoOf(i: number): string {
  return new Date(Date.UTC(2025, 5, 1) + i * 1_000).toISOString().slice(0, 19);
}

/**
 * Writes the backlog table by table, as a plant whose tables are filled by separate writers would. Sensor
 * `k` of timestamp `i` reads 100 + k + i/1000, so every timestamp's vector has a body of its own.
 */
async function writeBacklog(pump: PumpConfig): Promise<void> {
  for (const [k, s] of pump.sensors.entries()) {
    const tiempos: string[] = [];
    const values: number[] = [];
    for (let i = 0; i < TIMESTAMPS; i++) {
      if (missing(i).has(k)) continue;
      tiempos.push(tiempoOf(i));
      values.push(100 + k + i / 1000);
    }
    await h.admin.query(
      `INSERT INTO ${quoteIdent(s.table)} (tiempo_sensor, valor_sensor)
       SELECT t, v FROM unnest($1::text[], $2::float8[]) WITH ORDINALITY AS u(t, v, n) ORDER BY n`,
      [tiempos, values],
    );
  }
}

describe('catch-up of a backlog with gaps', () => {
  it('keeps the tables in step: every timestamp at or above the threshold is sent once, the rest dropped and recorded', async () => {
    const A = h.pumps.A;
    // A first run sets the checkpoints; the backlog then arrives while no monitor runs.
    await (await h.startMonitor()).stop(2_000);
    await writeBacklog(A);
    let rows = 0;
    for (const s of A.sensors) {
      const { rows: n } = await h.admin.query<{ n: number }>(
        `SELECT count(*)::int AS n FROM ${quoteIdent(s.table)}`,
      );
      rows += n[0]?.n ?? 0;
    }
    const qualifying = new Set<string>();
    const below = new Set<string>();
    for (let i = 0; i < TIMESTAMPS; i++) {
      const present = A.sensors.length - missing(i).size;
      (present >= A.minFields ? qualifying : below).add(tiempoOf(i));
    }

    // Small batches and a small group cap: unaligned, the short tables would run hundreds of timestamps ahead.
    await h.startMonitor({ CATCHUP_BATCH: '20', MAX_OPEN_GROUPS: '40' });
    // The ledger expects every row once, and every timestamp at or above the threshold once (its missing
    // fields filled with a value of their own sensor); a vector for a timestamp below it would be unexpected.
    const c = await h.ledger().settle({ admin: h.admin, monitors: [h.monitor], timeoutMs: 40_000 });
    expect({ readings: c.readings, vectors: c.vectors }).toEqual({
      readings: rows,
      vectors: qualifying.size,
    });
    expect(qualifying.size).toBe(360);
    expectExactlyOnce(c);

    await waitFor('the groups below the threshold to be recorded', async () => {
      const { rows } = await h.admin.query<{ n: number }>(
        `SELECT count(*)::int AS n FROM ${ENGINE_SCHEMA}.outbox WHERE pump = 'A' AND status = 'dropped'`,
      );
      return rows[0]?.n === below.size;
    });
    const { rows: dropped } = await h.admin.query<{ tiempo_sensor: string; missing: string[] }>(
      `SELECT tiempo_sensor, missing FROM ${ENGINE_SCHEMA}.outbox WHERE pump = 'A' AND status = 'dropped'`,
    );
    expect(new Set(dropped.map((r) => r.tiempo_sensor))).toEqual(below);
    expect(dropped.every((r) => r.missing.length === 6)).toBe(true);
    const status = h.monitor.status().pumps.A as { readings_late: number; catchup_rows: number };
    expect(status).toMatchObject({ readings_late: 0, catchup_rows: rows });
  });
});
