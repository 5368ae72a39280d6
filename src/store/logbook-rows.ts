import type pg from 'pg';
import { quoteIdent } from './db.js';
import { settledPostExpr } from './sensor-posts.js';

/** A logbook row as the logbook lane reads it. */
export interface LogbookRow {
  id: number;
  /** The entry; null when the row has none. */
  bitacora: string | null;
  /** Its POST for this logbook is on record already (answered or dead-lettered). */
  posted: boolean;
}

/** Rows of a logbook table above `after`, in id order, with whether each is on record for `reader`. */
export async function readLogbookRowsAfter(
  db: pg.Pool,
  table: string,
  reader: string,
  after: number,
  limit: number,
): Promise<LogbookRow[]> {
  const { rows } = await db.query<{ id: string; bitacora: string | null; posted: boolean }>(
    `SELECT id, bitacora, ${settledPostExpr(3, 4)} AS posted
       FROM ${quoteIdent(table)} s WHERE id > $1 ORDER BY id LIMIT $2`,
    [after, limit, table, reader],
  );
  return rows.map((r) => ({ id: Number(r.id), bitacora: r.bitacora, posted: r.posted }));
}

/** One entry's text by id: undefined when the row no longer exists, null when it has no text. */
export async function readLogbookEntry(
  db: pg.Pool,
  table: string,
  id: number,
): Promise<string | null | undefined> {
  const { rows } = await db.query<{ bitacora: string | null }>(
    `SELECT bitacora FROM ${quoteIdent(table)} WHERE id = $1`,
    [id],
  );
  return rows.length === 0 ? undefined : (rows[0]?.bitacora ?? null);
}
