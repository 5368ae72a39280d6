import { afterEach, describe, expect, it } from 'vitest';
import { ENGINE_SCHEMA } from '../../src/store/schema.js';
import { type Harness, harness, insertTimestamp } from '../helpers/engine.js';
import { waitFor } from '../helpers/wait.js';

/**
 * A pump handed over to another replica while its vector is in flight: the old owner must have that
 * vector answered and on record before it releases the lock, or the new owner finds it pending and sends
 * it again.
 */

let h: Harness | undefined;
afterEach(async () => {
  await h?.close();
  h = undefined;
});

const TIMESTAMPS = 16;

describe('pump hand-over between replicas', () => {
  it('sends each vector once when a rebalance hands a pump over mid-vector', async () => {
    h = await harness('handover', { LEASE_INTERVAL_MS: '200', SENSOR_POSTS: 'false' });
    const x = h;
    // Every unified answer takes 300 ms, so the sender is always mid-vector.
    x.backend.behaviour = (r) => (r.path.includes('predecir') ? { status: 200, delayMs: 300 } : undefined);
    const first = await x.startMonitor();
    for (let i = 0; i < TIMESTAMPS; i++) {
      const t = `2025-06-01T00:00:${String(i).padStart(2, '0')}`;
      await insertTimestamp(x.admin, x.pumps.A, t, { value: () => i });
      await insertTimestamp(x.admin, x.pumps.B, t, { value: () => i });
    }
    await waitFor(
      'the first vectors answered',
      () => x.backend.answered('/sensores/predecir-bomba').length >= 2,
    );

    const second = await x.startMonitor();
    await waitFor('the second replica to take a pump', () => second.status().owned_pumps.length === 1);
    expect(first.status().owned_pumps).toHaveLength(1);

    await waitFor(
      'every vector recorded as sent',
      async () => {
        const { rows } = await x.admin.query<{ n: number }>(
          `SELECT count(*)::int AS n FROM ${ENGINE_SCHEMA}.outbox WHERE status = 'sent'`,
        );
        return rows[0]?.n === 2 * TIMESTAMPS;
      },
      40_000,
    );
    // Each vector's body is the timestamp's index: count the answers per pump path and body.
    const answered = new Map<string, number>();
    for (const r of x.backend.requests) {
      if (r.status !== 200 || !r.path.includes('predecir')) continue;
      const k = `${r.path} ${JSON.stringify(r.body)}`;
      answered.set(k, (answered.get(k) ?? 0) + 1);
    }
    expect(answered.size).toBe(2 * TIMESTAMPS);
    expect([...answered.entries()].filter(([, n]) => n !== 1)).toEqual([]);
  });
});
