import type pg from 'pg';
import { quoteIdent } from './db.js';
import { settledPostExpr } from './sensor-posts.js';

/**
 * `tiempo_sensor` as the trigger's JSON renders it (`json_build_object`): the text of a text column, the
 * ISO form of a timestamp. Live and catch-up rows group by this one text.
 */
const TIEMPO = `(to_json(tiempo_sensor) #>> '{}')`;

/** A sensor table's row as catch-up reads it. */
export interface SensorRow {
  id: number;
  valor: number | null;
  tiempo: string | null;
  /** `tiempo` or '': compared as text to keep a pump's tables in step. */
  t: string;
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
  const { rows } = await db.query<{
    id: string;
    valor: number | null;
    tiempo: string | null;
    posted: boolean;
  }>(
    `SELECT id, valor_sensor::float8 AS valor, ${TIEMPO} AS tiempo, ${settledPostExpr(3, 4)} AS posted
       FROM ${quoteIdent(table)} s WHERE id > $1 ORDER BY id LIMIT $2`,
    [after, limit, table, pump],
  );
  return rows.map((r) => ({
    id: Number(r.id),
    valor: r.valor,
    tiempo: r.tiempo,
    t: r.tiempo ?? '',
    posted: r.posted,
  }));
}

/** What a row read by id gives: a sensor's valor and tiempo, or a logbook's text (in `text`). */
export type RowShape = 'sensor' | 'logbook';

export interface RowById {
  id: number;
  /** A sensor row's valor_sensor; null for a logbook row. */
  valor: number | null;
  /** A sensor row's tiempo_sensor (as the trigger renders it), or a logbook row's bitacora. */
  text: string | null;
}

/**
 * The rows with these ids, of many tables in one round trip: for each request, a map from id to row.
 * An id the table does not hold is absent from its map.
 */
export async function readRowsById(
  db: pg.Pool,
  requests: { table: string; shape: RowShape; ids: number[] }[],
): Promise<Map<number, RowById>[]> {
  const out = requests.map(() => new Map<number, RowById>());
  if (requests.length === 0) return out;
  const params: number[][] = [];
  const parts = requests.map(({ table, shape, ids }, k) => {
    params.push(ids);
    const cols = shape === 'sensor' ? `valor_sensor::float8, ${TIEMPO}` : 'NULL::float8, bitacora::text';
    return `SELECT ${k} AS k, id, ${cols} FROM ${quoteIdent(table)} WHERE id = ANY($${k + 1}::bigint[])`;
  });
  // Rows as arrays: no object per row to build and drop (a notification's row is read once).
  const { rows } = await db.query<[number, string, number | null, string | null]>({
    text: parts.join('\nUNION ALL\n'),
    values: params,
    rowMode: 'array',
  });
  for (const [k, rawId, valor, text] of rows) {
    const id = Number(rawId);
    out[k]?.set(id, { id, valor, text });
  }
  return out;
}

/** The names among `tables` that do not exist. */
export async function missingTables(db: pg.ClientBase, tables: string[]): Promise<string[]> {
  const { rows } = await db.query<{ t: string }>(
    'SELECT t FROM unnest($1::text[]) AS t WHERE to_regclass(quote_ident(t)) IS NULL',
    [tables],
  );
  return rows.map((r) => r.t);
}
