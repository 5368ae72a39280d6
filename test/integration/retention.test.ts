import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { member } from '../../src/store/members.js';
import { ENGINE_SCHEMA } from '../../src/store/schema.js';
import { type Harness, harness } from '../helpers/engine.js';

/** Engine state stays bounded: old rows go in small batches, and what a replay needs or what is pending stays. */

const S = ENGINE_SCHEMA;
let h: Harness;

beforeAll(async () => {
  h = await harness('retention');
  // The timer stays out of the way: the test runs the rounds itself. This replica serves pump A only.
  await h.startMonitor({ RETENTION_INTERVAL_MS: '3600000', PUMPS: 'A' });
});
afterAll(async () => {
  await h?.close();
});

async function count(sql: string, params: unknown[] = []): Promise<number> {
  const { rows } = await h.admin.query<{ n: number }>(`SELECT count(*)::int AS n FROM ${sql}`, params);
  return rows[0]?.n ?? -1;
}

describe('retention', () => {
  it('deletes old delivered, dead and dropped vectors, old dead letters and passed post records, and nothing else', async () => {
    const table = h.pumps.A.sensors[0]?.table as string;
    const { rows } = await h.admin.query<{ no: number }>(
      `UPDATE ${S}.checkpoints SET last_id = 1000 WHERE table_name = $1 RETURNING table_no AS no`,
      [table],
    );
    const no = rows[0]?.no as number;
    const below = member(no, 500);
    const above = member(no, 1500);
    const seed = async (label: string, status: string, ageDays: number, members: number[], n = 1) =>
      h.admin.query(
        `INSERT INTO ${S}.outbox (pump, tiempo_sensor, idempotency_key, body, status, members, created_at)
         SELECT 'A', $1 || i, $1 || i, '{}', $2, $3::bigint[], now() - make_interval(days => $4)
           FROM generate_series(1, $5) AS i`,
        [label, status, members, ageDays, n],
      );
    await seed('old-sent-', 'sent', 8, [below], 2_500); // more than one batch
    await seed('old-dropped-', 'dropped', 8, [below]);
    await seed('old-dead-', 'dead', 8, [below]);
    await seed('old-legacy-', 'sent', 8, []);
    await seed('needed-', 'sent', 8, [below, above]); // a member above the checkpoint: may be read again
    await seed('pending-', 'pending', 40, [below]);
    await seed('recent-', 'sent', 6, [below]);
    await seed('other-pump-', 'sent', 8, [below]);
    await h.admin.query(`UPDATE ${S}.outbox SET pump = 'B' WHERE tiempo_sensor LIKE 'other-pump-%'`);
    await h.admin.query(
      `INSERT INTO ${S}.dead_letters (kind, reason, created_at)
       VALUES ('notification', 'old', now() - interval '31 days'), ('notification', 'recent', now() - interval '29 days')`,
    );
    await h.admin.query(
      `INSERT INTO ${S}.sensor_posts (table_name, row_id, pump) VALUES ($1, 999, 'A'), ($1, 1000, 'A'), ($1, 1001, 'A')`,
      [table],
    );

    const round = await h.monitor.units.housekeeper.runOnce();
    expect(round).toEqual({ posts: 2, outbox: 2_503, deadLetters: 1 });
    const left = await h.admin.query<{ tiempo_sensor: string }>(
      `SELECT tiempo_sensor FROM ${S}.outbox ORDER BY tiempo_sensor`,
    );
    // Pump B's row is another replica's to delete.
    expect(left.rows.map((r) => r.tiempo_sensor)).toEqual([
      'needed-1',
      'other-pump-1',
      'pending-1',
      'recent-1',
    ]);
    expect(await count(`${S}.dead_letters`)).toBe(1);
    expect(await count(`${S}.sensor_posts WHERE row_id = 1001`)).toBe(1);
    expect(await count(`${S}.sensor_posts`)).toBe(1);
    expect(await h.monitor.units.housekeeper.runOnce()).toEqual({ posts: 0, outbox: 0, deadLetters: 0 });
  });

  it('shows the engine tables in /metrics', async () => {
    const text = await h.monitor.units.telemetry.registry.metrics();
    for (const t of ['outbox', 'dead_letters', 'sensor_posts', 'checkpoints', 'deferred_posts']) {
      expect(text).toMatch(new RegExp(`pump_monitor_engine_table_rows\\{table="${t}"\\} \\d+`));
      expect(text).toMatch(new RegExp(`pump_monitor_engine_table_bytes\\{table="${t}"\\} [1-9]\\d*`));
    }
  });
});
