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

/** One reader's next rows to read: `table`'s rows above `after`, with their post settled or not for `pump`. */
export interface RowsAfter {
  table: string;
  pump: string;
  after: number;
}

/**
 * The most readers one catch-up statement reads for: each is a part of a `UNION ALL` with four parameters,
 * and a fleet of 500 pumps has 10,000 readers.
 */
export const MAX_READERS_PER_READ = 200;

/**
 * Rows above each reader's `after`, at most `limit` each, in id order: for each request, its rows. One
 * statement per MAX_READERS_PER_READ readers, each reader's rows a part of it, so a catch-up round costs one
 * round trip instead of one per table. Each part's rows are put in id order here again: SQL does not
 * promise that a `UNION ALL` keeps its parts' order.
 */
export async function readRowsAfter(
  db: pg.Pool,
  requests: readonly RowsAfter[],
  limit: number,
): Promise<SensorRow[][]> {
  const out: SensorRow[][] = requests.map(() => []);
  for (let from = 0; from < requests.length; from += MAX_READERS_PER_READ) {
    const chunk = requests.slice(from, from + MAX_READERS_PER_READ);
    const values: (string | number)[] = [limit];
    const parts = chunk.map(({ table, pump, after }, k) => {
      const n = values.length;
      values.push(after, table, pump);
      return `(SELECT ${k} AS k, id, valor_sensor::float8, ${TIEMPO}, ${settledPostExpr(n + 2, n + 3)}
                 FROM ${quoteIdent(table)} s WHERE id > $${n + 1} ORDER BY id LIMIT $1)`;
    });
    // Rows as arrays: no object per row to build and drop before the SensorRow.
    const { rows } = await db.query<[number, string, number | null, string | null, boolean]>({
      text: parts.join('\nUNION ALL\n'),
      values,
      rowMode: 'array',
    });
    for (const [k, rawId, valor, tiempo, posted] of rows) {
      out[from + k]?.push({ id: Number(rawId), valor, tiempo, t: tiempo ?? '', posted });
    }
  }
  for (const rows of out) {
    for (let i = 1; i < rows.length; i++) {
      if ((rows[i] as SensorRow).id < (rows[i - 1] as SensorRow).id) {
        rows.sort((a, b) => a.id - b.id);
        break;
      }
    }
  }
  return out;
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
