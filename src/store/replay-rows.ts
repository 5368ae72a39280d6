import type pg from 'pg';
import { quoteIdent } from './db.js';
import { ENGINE_SCHEMA } from './migrations.js';

/** What `replay` reads: a range of rows of a reader's tables, in one read-only snapshot. */

/** A text as PostgreSQL reads it as a timestamp, shown back; throws PostgreSQL's error when it is none. */
export async function asTimestamp(db: pg.Pool, value: string): Promise<string> {
  const { rows } = await db.query<{ t: string }>('SELECT $1::timestamp::text AS t', [value]);
  return rows[0]?.t as string;
}

export async function isBefore(db: pg.Pool, a: string, b: string): Promise<boolean> {
  const { rows } = await db.query<{ ok: boolean }>('SELECT $1::timestamp < $2::timestamp AS ok', [a, b]);
  return rows[0]?.ok === true;
}

/**
 * Each table's number (for members) and saved checkpoint for one reader (a pump or a logbook): every row
 * at or below it is settled. A table's row from before per-reader checkpoints (reader '') stands in until
 * the engine has started with the upgrade. Tables without a checkpoint are absent.
 */
export async function readerCheckpoints(
  db: pg.Pool,
  reader: string,
  tables: string[],
): Promise<Map<string, { no: number; lastId: number }>> {
  const { rows } = await db.query<{ table_name: string; table_no: number; last_id: string }>(
    `SELECT DISTINCT ON (table_name) table_name, table_no, last_id FROM ${ENGINE_SCHEMA}.checkpoints
      WHERE table_name = ANY($1) AND pump IN ($2, '') ORDER BY table_name, pump = $2 DESC`,
    [tables, reader],
  );
  return new Map(rows.map((r) => [r.table_name, { no: r.table_no, lastId: Number(r.last_id) }]));
}

/** One table of a range: its position in the caller's list, and its reader's checkpoint. */
export interface RangeTable {
  table: string;
  checkpoint: number;
  shape: 'sensor' | 'logbook';
}

/** A row of the range: its table's position, id, tiempo_ejecucion (ms) and the row as a payload. */
export interface RangeRow {
  s: number;
  id: number;
  at: number;
  /** A sensor row as its trigger renders it ({id_sensor, valor, tiempo_sensor}); a logbook row's {id}. */
  payload: string;
}

/**
 * The rows of some tables whose tiempo_ejecucion is in [from, to), at or below each table's checkpoint,
 * read in one read-only snapshot (it takes no transaction id, so it holds no checkpoint back) through a
 * cursor, in the order they were written. Rows above the checkpoints are only counted.
 */
export class RangeReader {
  private constructor(
    private readonly client: pg.PoolClient,
    private readonly tables: RangeTable[],
    private readonly range: [string, string],
  ) {}

  static async open(pool: pg.Pool, tables: RangeTable[], from: string, to: string): Promise<RangeReader> {
    const client = await pool.connect();
    try {
      await client.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
    } catch (err) {
      client.release();
      throw err;
    }
    return new RangeReader(client, tables, [from, to]);
  }

  private union(settled: boolean): string {
    return this.tables
      .map((t, k) => {
        const payload =
          t.shape === 'sensor'
            ? "json_build_object('id_sensor', id, 'valor', valor_sensor, 'tiempo_sensor', tiempo_sensor)::text"
            : "json_build_object('id', id)::text";
        return `SELECT ${k} AS s, id, tiempo_ejecucion AS te, ${payload} AS payload
           FROM ${quoteIdent(t.table)} WHERE tiempo_ejecucion >= $1::timestamp AND tiempo_ejecucion < $2::timestamp
            AND id ${settled ? '<=' : '>'} ${Math.trunc(t.checkpoint)}`;
      })
      .join('\nUNION ALL\n');
  }

  /** Rows of the range at or below their checkpoints, and above them (left to the engine). */
  async counts(): Promise<{ settled: number; unsettled: number }> {
    if (this.tables.length === 0) return { settled: 0, unsettled: 0 };
    const count = async (settled: boolean) => {
      const { rows } = await this.client.query<{ n: string }>(
        `SELECT count(*) AS n FROM (${this.union(settled)}) r`,
        this.range,
      );
      return Number(rows[0]?.n ?? 0);
    };
    return { settled: await count(true), unsettled: await count(false) };
  }

  private declared = false;

  /** The next rows, in tiempo_ejecucion order; fewer than `n` at the end. */
  async fetch(n: number): Promise<RangeRow[]> {
    if (this.tables.length === 0) return [];
    if (!this.declared) {
      await this.client.query(
        `DECLARE replay_rows NO SCROLL CURSOR FOR
           SELECT s, id, (extract(epoch FROM te) * 1000)::float8 AS at, payload FROM (${this.union(true)}) r
            ORDER BY te, s, id`,
        this.range,
      );
      this.declared = true;
    }
    const { rows } = await this.client.query<{ s: number; id: string | number; at: number; payload: string }>(
      `FETCH ${Math.trunc(n)} FROM replay_rows`,
    );
    return rows.map((r) => ({ s: r.s, id: Number(r.id), at: r.at, payload: r.payload }));
  }

  /** Ends the snapshot (committed or not) and gives the connection back. */
  async close(ok: boolean): Promise<void> {
    try {
      if (ok) await this.client.query('COMMIT');
      else await this.client.query('ROLLBACK').catch(() => {});
    } finally {
      this.client.release();
    }
  }
}
