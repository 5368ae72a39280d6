import type pg from 'pg';
import { inTransaction } from './db.js';
import { MEMBER_BITS_MASK, MEMBER_SHIFT } from './members.js';
import { ENGINE_SCHEMA } from './migrations.js';
import { SENSOR_POSTS } from './sensor-posts.js';

const S = ENGINE_SCHEMA;

/**
 * Deletes ledger rows of settled posts whose row is at or below its reader's checkpoint (the post's pump
 * and table): catch-up never
 * reads those rows again, so nothing needs them. At most `limit` rows per call.
 */
export async function deletePassedPosts(db: pg.Pool, pumps: string[], limit: number): Promise<number> {
  const r = await db.query(
    `DELETE FROM ${SENSOR_POSTS} WHERE ctid = ANY(ARRAY(
       SELECT p.ctid FROM ${SENSOR_POSTS} p JOIN ${S}.checkpoints c ON c.table_name = p.table_name AND c.pump = p.pump
        WHERE p.pump = ANY($1) AND p.row_id <= c.last_id LIMIT $2))`,
    [pumps, limit],
  );
  return r.rowCount ?? 0;
}

/**
 * Deletes delivered, dead and dropped outbox rows of the given pumps older than `olderThanMs`, at most
 * `limit` per call. A row with a member above its table's checkpoint is kept: that row may still be read
 * again, and the stored group is what recognises the rebuilt one as a replay. Pending rows are never deleted.
 */
export async function deleteOldOutbox(
  db: pg.Pool,
  pumps: string[],
  olderThanMs: number,
  limit: number,
): Promise<number> {
  const r = await db.query(
    `DELETE FROM ${S}.outbox WHERE id = ANY(ARRAY(
       SELECT o.id FROM ${S}.outbox o
        WHERE o.status <> 'pending' AND o.pump = ANY($1)
          AND o.created_at < now() - make_interval(secs => $2::float8 / 1000)
          AND NOT EXISTS (
            SELECT 1 FROM unnest(o.members) AS m JOIN ${S}.checkpoints c ON c.table_no = m >> ${MEMBER_SHIFT}
             WHERE (m & ${MEMBER_BITS_MASK}) > c.last_id)
        ORDER BY o.created_at LIMIT $3))`,
    [pumps, olderThanMs, limit],
  );
  return r.rowCount ?? 0;
}

/**
 * Deletes dead letters older than `olderThanMs`, at most `limit` per call, and only while this session gets
 * the retention lock: with replicas, one of them does it at a time.
 */
export async function deleteOldDeadLetters(db: pg.Pool, olderThanMs: number, limit: number): Promise<number> {
  return underRetentionLock(db, `${S}.retention`, async (tx) => {
    const r = await tx.query(
      `DELETE FROM ${S}.dead_letters WHERE id = ANY(ARRAY(
         SELECT id FROM ${S}.dead_letters WHERE created_at < now() - make_interval(secs => $1::float8 / 1000)
          ORDER BY created_at LIMIT $2))`,
      [olderThanMs, limit],
    );
    return r.rowCount ?? 0;
  });
}

export interface EngineTableStats {
  table: string;
  rows: number;
  bytes: number;
}

/** Row estimates and on-disk sizes (with indexes and TOAST) of the engine's own tables. */
export async function engineTableStats(db: pg.Pool | pg.ClientBase): Promise<EngineTableStats[]> {
  const { rows } = await db.query<{ t: string; n: string; b: string }>(
    `SELECT c.relname AS t, greatest(coalesce(s.n_live_tup, 0), 0) AS n, pg_total_relation_size(c.oid) AS b
       FROM pg_class c JOIN pg_namespace ns ON ns.oid = c.relnamespace
       LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid
      WHERE ns.nspname = $1 AND c.relkind = 'r' ORDER BY c.relname`,
    [S],
  );
  return rows.map((r) => ({ table: r.t, rows: Number(r.n), bytes: Number(r.b) }));
}

/**
 * Runs `del` in a transaction that holds the advisory lock named `lock`, or deletes nothing (0) while
 * another replica holds it: with replicas, one of them cleans a table at a time.
 */
export async function underRetentionLock(
  db: pg.Pool,
  lock: string,
  del: (tx: pg.ClientBase) => Promise<number>,
): Promise<number> {
  return inTransaction(db, async (tx) => {
    const { rows } = await tx.query<{ ok: boolean }>('SELECT pg_try_advisory_xact_lock(hashtext($1)) AS ok', [
      lock,
    ]);
    return rows[0]?.ok ? del(tx) : 0;
  });
}
