import type pg from 'pg';
import { quoteIdent } from './db.js';
import { ENGINE_SCHEMA } from './migrations.js';

const T = `${ENGINE_SCHEMA}.checkpoints`;

/** A table's saved progress: every row at or below `lastId` is settled. `no` numbers the table for members. */
export interface SavedCheckpoint {
  lastId: number;
  no: number;
}

/**
 * Gives each table without a checkpoint one at its current last row: a first start against a plant's
 * existing database begins with new readings instead of re-sending its whole history.
 */
export async function initCheckpoints(db: pg.Pool | pg.ClientBase, tables: string[]): Promise<void> {
  const { rows } = await db.query<{ table_name: string }>(
    `SELECT table_name FROM ${T} WHERE table_name = ANY($1)`,
    [tables],
  );
  const known = new Set(rows.map((r) => r.table_name));
  for (const t of tables.filter((x) => !known.has(x))) {
    await db.query(
      `INSERT INTO ${T} (table_name, last_id)
       SELECT $1, coalesce(max(id), 0) FROM ${quoteIdent(t)} ON CONFLICT (table_name) DO NOTHING`,
      [t],
    );
  }
}

export async function loadCheckpoints(
  db: pg.Pool | pg.ClientBase,
  tables: string[],
): Promise<Map<string, SavedCheckpoint>> {
  const { rows } = await db.query<{ table_name: string; last_id: string; table_no: number }>(
    `SELECT table_name, last_id, table_no FROM ${T} WHERE table_name = ANY($1)`,
    [tables],
  );
  const out = new Map<string, SavedCheckpoint>();
  for (const r of rows) out.set(r.table_name, { lastId: Number(r.last_id), no: r.table_no });
  const missing = tables.filter((t) => !out.has(t));
  if (missing.length > 0)
    throw new Error(`no checkpoint row for ${missing.join(', ')}; initCheckpoints first`);
  return out;
}

/**
 * Is `xmin` (a row's inserting transaction, 32 bits) at or after the oldest transaction still running?
 * Compared modulo 2^32, as PostgreSQL compares transaction ids.
 */
const RECENT = `((xmin::text::bigint - (SELECT x FROM snap) + 4294967296) % 4294967296) < 2147483648`;

/**
 * How far each table's checkpoint may safely go, given transactions still in progress.
 *
 * Writers commit out of id order: a transaction holding a low id may commit after one holding a higher id.
 * While it runs, its rows are invisible, and a checkpoint past them would skip them forever. Any row
 * visible above such an id was inserted by a transaction newer than the oldest one still running (the
 * snapshot's xmin). So the first visible row above `from` whose xmin is that recent marks where unseen
 * rows may hide: the checkpoint stops at the last visible row below it. A table with no such row has no
 * bound (undefined). Rows come from ids allocated in the same statement that assigns the transaction id,
 * so the argument holds for plain INSERTs; see docs/reliability.md for what it does not cover.
 */
export async function stableBounds(
  db: pg.Pool | pg.ClientBase,
  tables: { table: string; from: number }[],
): Promise<Map<string, number | undefined>> {
  const out = new Map<string, number | undefined>();
  if (tables.length === 0) return out;
  const params: unknown[] = [];
  const parts = tables.map(({ table, from }) => {
    params.push(table, from);
    const t = `$${params.length - 1}::text`;
    const p = `$${params.length}::bigint`;
    const q = quoteIdent(table);
    return `SELECT ${t} AS t, r.n AS first_recent,
              (SELECT max(s.id) FROM ${q} s WHERE s.id > ${p} AND s.id < r.n) AS below
              FROM (SELECT min(id) AS n FROM ${q} WHERE id > ${p} AND ${RECENT}) r`;
  });
  const { rows } = await db.query<{ t: string; first_recent: string | null; below: string | null }>(
    `WITH snap AS (SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint % 4294967296 AS x)
     ${parts.join('\nUNION ALL\n')}`,
    params,
  );
  const from = new Map(tables.map((x) => [x.table, x.from]));
  for (const r of rows) {
    if (r.first_recent === null) out.set(r.t, undefined);
    else out.set(r.t, r.below === null ? (from.get(r.t) as number) : Number(r.below));
  }
  return out;
}

/** Writes checkpoints; a checkpoint never goes backwards. */
export async function writeCheckpoints(
  db: pg.Pool | pg.ClientBase,
  moved: { table: string; lastId: number }[],
): Promise<void> {
  if (moved.length === 0) return;
  await db.query(
    `UPDATE ${T} AS c SET last_id = GREATEST(c.last_id, m.id), updated_at = now()
       FROM unnest($1::text[], $2::bigint[]) AS m(t, id) WHERE c.table_name = m.t`,
    [moved.map((m) => m.table), moved.map((m) => m.lastId)],
  );
}
