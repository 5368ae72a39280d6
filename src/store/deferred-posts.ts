import type pg from 'pg';
import { ENGINE_SCHEMA } from './migrations.js';

const T = `${ENGINE_SCHEMA}.deferred_posts`;

/**
 * Per-sensor posts that did not fit in memory (a long backend outage): kept here, durably, as the payload
 * the notification carried, and sent once the queue has room. A reading's group is unaffected.
 */
export interface DeferredPost {
  id: number;
  pump: string;
  channel: string;
  payload: string;
}

export async function insertDeferred(db: pg.Pool, posts: Omit<DeferredPost, 'id'>[]): Promise<void> {
  await db.query(
    `INSERT INTO ${T} (pump, channel, payload) SELECT * FROM unnest($1::text[], $2::text[], $3::text[])`,
    [posts.map((p) => p.pump), posts.map((p) => p.channel), posts.map((p) => p.payload)],
  );
}

/** The oldest deferred posts of the given pumps after `afterId`. */
export async function fetchDeferred(
  db: pg.Pool,
  pumps: string[],
  limit: number,
  afterId: number,
): Promise<DeferredPost[]> {
  const { rows } = await db.query<{ id: string; pump: string; channel: string; payload: string }>(
    `SELECT id, pump, channel, payload FROM ${T} WHERE pump = ANY($1) AND id > $3 ORDER BY id LIMIT $2`,
    [pumps, limit, afterId],
  );
  return rows.map((r) => ({ ...r, id: Number(r.id) }));
}

export async function deleteDeferred(db: pg.Pool, ids: number[]): Promise<void> {
  await db.query(`DELETE FROM ${T} WHERE id = ANY($1::bigint[])`, [ids]);
}
