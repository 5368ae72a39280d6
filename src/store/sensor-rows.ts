import type pg from 'pg';
import { quoteIdent } from './db.js';
import { settledPostExpr } from './sensor-posts.js';

/** A sensor table's row as catch-up reads it. */
export interface SensorRow {
  id: string | number;
  /** `tiempo_sensor` as stored: the grouping key, compared as text to keep a pump's tables in step. */
  t: string;
  /** The row as the trigger's NOTIFY payload would carry it. */
  payload: string;
  /** Its per-sensor post for `pump` is settled already (answered, deferred or dead-lettered). */
  posted: boolean;
}

/** Rows of a sensor table above `after`, in id order. */
export async function readRowsAfter(
  db: pg.Pool,
  table: string,
  pump: string,
  after: number,
  limit: number,
): Promise<SensorRow[]> {
  const { rows } = await db.query<SensorRow>(
    `SELECT id, coalesce(tiempo_sensor::text, '') AS t,
            json_build_object('id_sensor', id, 'valor', valor_sensor, 'tiempo_sensor', tiempo_sensor)::text AS payload,
            ${settledPostExpr(3, 4)} AS posted
       FROM ${quoteIdent(table)} s WHERE id > $1 ORDER BY id LIMIT $2`,
    [after, limit, table, pump],
  );
  return rows;
}

/** The names among `tables` that do not exist. */
export async function missingTables(db: pg.ClientBase, tables: string[]): Promise<string[]> {
  const { rows } = await db.query<{ t: string }>(
    'SELECT t FROM unnest($1::text[]) AS t WHERE to_regclass(quote_ident(t)) IS NULL',
    [tables],
  );
  return rows.map((r) => r.t);
}
