import type pg from 'pg';
import { pgText } from '../util/pg-text.js';
import { bigintArray, textArray } from './db.js';
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
  /** Its own Idempotency-Key (a replay's); absent: the reading's. */
  key?: string | undefined;
}

export async function insertDeferred(db: pg.Pool, posts: Omit<DeferredPost, 'id'>[]): Promise<void> {
  await db.query(
    `INSERT INTO ${T} (pump, channel, payload) SELECT * FROM unnest($1::text[], $2::text[], $3::text[])`,
    [
      textArray(posts.map((p) => p.pump)),
      textArray(posts.map((p) => p.channel)),
      // The payload as the notification carried it: outside text.
      textArray(posts.map((p) => pgText(p.payload))),
    ],
  );
}

/**
 * The oldest deferred posts of each given pump after that pump's own cursor, at most its own limit: one
 * round trip, so that a pump whose queue is full (its backend failing) does not hold back another's.
 */
export async function fetchDeferredEach(
  db: pg.Pool,
  wants: { pump: string; afterId: number; limit: number }[],
): Promise<DeferredPost[]> {
  const { rows } = await db.query<{
    id: string;
    pump: string;
    channel: string;
    payload: string;
    key: string | null;
  }>(
    `SELECT d.id, d.pump, d.channel, d.payload, d.key
       FROM unnest($1::text[], $2::bigint[], $3::int[]) AS w(pump, after_id, lim)
       CROSS JOIN LATERAL (
         SELECT id, pump, channel, payload, idempotency_key AS key FROM ${T}
          WHERE pump = w.pump AND id > w.after_id ORDER BY id LIMIT w.lim
       ) d
      ORDER BY d.id`,
    [wants.map((w) => w.pump), wants.map((w) => w.afterId), wants.map((w) => w.limit)],
  );
  return rows.map((r) => ({ ...r, id: Number(r.id), key: r.key ?? undefined }));
}

/** The oldest deferred posts of one pump (or logbook) after `afterId`. */
export function fetchDeferred(
  db: pg.Pool,
  pump: string,
  limit: number,
  afterId: number,
): Promise<DeferredPost[]> {
  return fetchDeferredEach(db, [{ pump, afterId, limit }]);
}

export async function deleteDeferred(db: pg.Pool, ids: number[]): Promise<void> {
  await db.query(`DELETE FROM ${T} WHERE id = ANY($1::bigint[])`, [bigintArray(ids)]);
}

/** A per-sensor post queued by an operator command, under the Idempotency-Key it must be sent with. */
export interface KeyedPost {
  pump: string;
  channel: string;
  payload: string;
  key: string;
}

/**
 * Queues posts for the owning replica to send through its normal poster. A key already queued is not
 * queued again (a retried insert, a post retried twice before it went out). The table is locked for the
 * rest of the transaction first: the replica reads deferred posts in id order from where it last stopped,
 * so a row must not become visible after a higher id another writer committed meanwhile. Call it last in
 * a short transaction. Returns the keys newly queued.
 */
export async function insertKeyedDeferred(client: pg.ClientBase, posts: KeyedPost[]): Promise<Set<string>> {
  if (posts.length === 0) return new Set();
  await client.query(`LOCK TABLE ${T} IN SHARE ROW EXCLUSIVE MODE`);
  const { rows } = await client.query<{ key: string }>(
    `INSERT INTO ${T} (pump, channel, payload, idempotency_key)
     SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[])
     ON CONFLICT (idempotency_key) DO NOTHING RETURNING idempotency_key AS key`,
    [
      posts.map((p) => p.pump),
      posts.map((p) => p.channel),
      posts.map((p) => pgText(p.payload)),
      posts.map((p) => pgText(p.key)),
    ],
  );
  return new Set(rows.map((r) => r.key));
}
