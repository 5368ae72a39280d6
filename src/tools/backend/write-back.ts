/**
 * The per-sensor write-back: which table's row a post names, and writing its classification and the
 * table's anomaly count into that row, one request per row at a time.
 */
import type pg from 'pg';
import type { SensorDefinition } from '../../config/pumps.js';
import { quoteIdent } from '../../store/db.js';
import { nominalOf } from '../nominal.js';
import type { Answer } from './answers.js';
import type { SensorClass, SensorScorer } from './scoring.js';

const INT4_OUT_OF_RANGE = '22003';

/** One sensor a per-sensor path serves: the pump and the sensor whose table takes the write-back. */
export interface SensorTarget {
  pump: { id: string };
  sensor: SensorDefinition;
}

export interface WriteBackContext {
  pool: pg.Pool;
  scorer: SensorScorer;
  counters: AnomalyCounters;
}

/**
 * The sensor whose row a post names. With one sensor behind the path, that one. With several (two tables
 * posting to one endpoint, where id_sensor alone is ambiguous) the real backend writes to one fixed
 * table; this one prefers the table whose row `id_sensor` holds exactly `valor`, then any table that has
 * the row, then the first listed (which answers 404).
 */
export async function chooseTarget(
  pool: pg.Pool,
  targets: SensorTarget[],
  id: number,
  value: number,
): Promise<SensorTarget> {
  if (targets.length === 1) return targets[0] as SensorTarget;
  let existing: SensorTarget | undefined;
  for (const target of targets) {
    const { rows } = await pool.query<{ valor_sensor: number | null }>(
      `SELECT valor_sensor FROM ${quoteIdent(target.sensor.table)} WHERE id = $1::bigint`,
      [id],
    );
    const row = rows[0];
    if (row === undefined) continue;
    if (row.valor_sensor === value) return target;
    existing ??= target;
  }
  return existing ?? (targets[0] as SensorTarget);
}

interface StoredRow {
  clasificacion: number | null;
}

export async function classifyRow(
  context: WriteBackContext,
  pump: { id: string },
  sensor: SensorDefinition,
  id: number,
  value: number,
): Promise<Answer> {
  // Loaded before taking a pooled client for the transaction, so a full pool cannot deadlock on it.
  const counter = await context.counters.forTable(sensor.table);
  const client = await context.pool.connect();
  let broken: Error | undefined;
  try {
    await client.query('BEGIN');
    const row = await lockRow(client, sensor.table, id);
    if (!row) {
      await client.query('ROLLBACK');
      return { status: 404, body: { detail: `No row with id ${id} in table ${sensor.table}` } };
    }
    const score = context.scorer.score(pump.id, sensor.field, value, nominalOf(sensor));
    const count = await writeBack(client, sensor.table, id, score.prediction, counter, row);
    const body = {
      id_registro: id,
      valor: value,
      prediccion: score.prediction,
      descripcion: score.description,
      contador_anomalias: count,
    };
    return { status: 200, body };
  } catch (err) {
    await client.query('ROLLBACK').catch((rollbackError: Error) => {
      broken = rollbackError;
    });
    if ((err as { code?: string }).code === INT4_OUT_OF_RANGE) {
      return { status: 404, body: { detail: `No row with id ${id} in table ${sensor.table}` } };
    }
    throw err;
  } finally {
    client.release(broken);
  }
}

/** Reads the row and locks it, so two requests for one row take turns and the count stays exact. */
async function lockRow(client: pg.PoolClient, table: string, id: number): Promise<StoredRow | undefined> {
  const { rows } = await client.query<StoredRow>(
    `SELECT clasificacion FROM ${quoteIdent(table)} WHERE id = $1 FOR UPDATE`,
    [id],
  );
  return rows[0];
}

/**
 * Writes clasificacion and contador_anomalias and commits. The count is the number of rows classified -1,
 * as its initial value is: a row classified again (a retry) is not counted twice, and one that stops being
 * an anomaly is taken back out. The UPDATE touches neither valor_sensor nor tiempo_sensor, so no trigger
 * notifies.
 */
async function writeBack(
  client: pg.PoolClient,
  table: string,
  id: number,
  prediction: SensorClass,
  counter: { value: number },
  row: StoredRow,
): Promise<number> {
  const delta = (prediction === -1 ? 1 : 0) - (row.clasificacion === -1 ? 1 : 0);
  // Applied before the await so that concurrent requests on other rows each see their own count.
  counter.value += delta;
  const count = counter.value;
  try {
    await client.query(
      `UPDATE ${quoteIdent(table)} SET clasificacion = $1, contador_anomalias = $2 WHERE id = $3`,
      [prediction, count, id],
    );
    await client.query('COMMIT');
  } catch (err) {
    counter.value -= delta;
    throw err;
  }
  return count;
}

/** The anomaly count per sensor table, read from the table once and then kept in memory. */
export class AnomalyCounters {
  private readonly counters = new Map<string, Promise<{ value: number }>>();

  constructor(private readonly pool: pg.Pool) {}

  forTable(table: string): Promise<{ value: number }> {
    let counter = this.counters.get(table);
    if (!counter) {
      counter = this.load(table);
      this.counters.set(table, counter);
      // A failed load (database down) is retried by the next request instead of being cached.
      counter.catch(() => this.counters.delete(table));
    }
    return counter;
  }

  private async load(table: string): Promise<{ value: number }> {
    const { rows } = await this.pool.query<{ n: string }>(
      `SELECT count(*) AS n FROM ${quoteIdent(table)} WHERE clasificacion = -1`,
    );
    return { value: Number(rows[0]?.n ?? 0) };
  }
}
