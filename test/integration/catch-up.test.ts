import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { PumpConfig } from '../../src/config/env.js';
import { quoteIdent } from '../../src/store/db.js';
import { ENGINE_SCHEMA } from '../../src/store/schema.js';
import { type Harness, harness } from '../helpers/engine.js';
import { tally, vectorKeysFromRows } from '../helpers/tally.js';
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

/** Writes the backlog table by table, as a plant whose tables are filled by separate writers would. */
async function writeBacklog(pump: PumpConfig): Promise<void> {
  for (const [k, s] of pump.sensors.entries()) {
    const tiempos: string[] = [];
    for (let i = 0; i < TIMESTAMPS; i++) if (!missing(i).has(k)) tiempos.push(tiempoOf(i));
    await h.admin.query(
      `INSERT INTO ${quoteIdent(s.table)} (tiempo_sensor, valor_sensor)
       SELECT t, 100 + $2::int FROM unnest($1::text[]) WITH ORDINALITY AS u(t, n) ORDER BY n`,
      [tiempos, k],
    );
  }
}

describe('catch-up of a backlog with gaps', () => {
  it('keeps the tables in step: every timestamp at or above the threshold is sent once, the rest dropped and recorded', async () => {
    const A = h.pumps.A;
    // A first run sets the checkpoints; the backlog then arrives while no monitor runs.
    await (await h.startMonitor()).stop(2_000);
    await writeBacklog(A);
    const readings = new Set<string>();
    for (const s of A.sensors) {
      const { rows } = await h.admin.query<{ id: number }>(`SELECT id FROM ${quoteIdent(s.table)}`);
      for (const r of rows) readings.add(`rd-${s.table}-${r.id}`);
    }
    const qualifying = new Set<string>();
    const below = new Set<string>();
    for (let i = 0; i < TIMESTAMPS; i++) {
      const present = A.sensors.length - missing(i).size;
      (present >= A.minFields ? qualifying : below).add(tiempoOf(i));
    }

    // Small batches and a small group cap: unaligned, the short tables would run hundreds of timestamps ahead.
    await h.startMonitor({ CATCHUP_BATCH: '20', MAX_OPEN_GROUPS: '40' });
    const keys = await vectorKeysFromRows(h.admin, A);
    const keyOf = (t: string) => keys.get(t)?.key as string;
    const expected = { readings, vectors: new Set([...qualifying].map(keyOf)) };
    await waitFor(
      'every reading and every qualifying vector of the backlog',
      () => tally(h.backend, expected).lost === 0,
      40_000,
    );
    const t = tally(h.backend, expected);
    expect(t).toMatchObject({ lost: 0, duplicated: 0, replays: 0, vectors: 360, readings: readings.size });

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
    const sentKeys = h.backend.successes();
    for (const tiempo of below) expect(sentKeys.has(keyOf(tiempo))).toBe(false);
    const status = h.monitor.status().pumps.A as { readings_late: number; catchup_rows: number };
    expect(status).toMatchObject({ readings_late: 0, catchup_rows: readings.size });
  });
});
