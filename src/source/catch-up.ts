import type pg from 'pg';
import type { PumpConfig } from '../config/env.js';
import { quoteIdent } from '../store/db.js';
import type { TableProgress } from './checkpoints.js';

export interface CatchUpOptions {
  pool: pg.Pool;
  pumps: PumpConfig[];
  progress: Map<string, TableProgress>;
  batch: number;
  /** Feeds one row through the same path as a notification on its channel. */
  handle: (channel: string, payload: string) => void;
  /** Resolves when the engine has room for another batch (backpressure). */
  capacity: () => Promise<void>;
  signal: AbortSignal;
  onRows?: (pump: string, rows: number) => void;
  /** Progress of a long catch-up, about once a second; rows read so far and tables still being read. */
  onProgress?: (rows: number, tablesLeft: number) => void;
}

interface Cursor {
  pump: string;
  channel: string;
  table: string;
  after: number;
  done: boolean;
  token: number;
}

/**
 * Reads the rows each table received above its checkpoint, in bounded batches, round-robin across a pump's
 * tables so that one timestamp's readings meet in the assembler, and hands them to the notification path.
 * The payload is built as the trigger builds it, so both paths group by the same `tiempo_sensor` text.
 * Live notifications keep flowing between batches; duplicates from the overlap are removed by (table, id).
 */
export async function catchUp(o: CatchUpOptions): Promise<number> {
  const cursors: Cursor[] = o.pumps.flatMap((p) =>
    p.sensors.map((s) => ({
      pump: p.id,
      channel: s.channel,
      table: s.table,
      after: o.progress.get(s.table)?.checkpoint() ?? 0,
      done: false,
      token: o.progress.get(s.table)?.catchUpToken() ?? 0,
    })),
  );
  let total = 0;
  let lastReport = Date.now();
  while (!o.signal.aborted && cursors.some((c) => !c.done)) {
    for (const c of cursors) {
      if (c.done || o.signal.aborted) continue;
      const { rows } = await o.pool.query<{ id: string; payload: string }>(
        `SELECT id, json_build_object('id_sensor', id, 'valor', valor_sensor, 'tiempo_sensor', tiempo_sensor)::text AS payload
           FROM ${quoteIdent(c.table)} WHERE id > $1 ORDER BY id LIMIT $2`,
        [c.after, o.batch],
      );
      for (const r of rows) o.handle(c.channel, r.payload);
      if (rows.length > 0) {
        c.after = Number(rows[rows.length - 1]?.id);
        total += rows.length;
        o.onRows?.(c.pump, rows.length);
      }
      if (rows.length < o.batch) {
        // Read to the end: everything committed before this catch-up began has now been seen.
        c.done = true;
        o.progress.get(c.table)?.release(c.token);
      }
    }
    if (Date.now() - lastReport > 1_000) {
      lastReport = Date.now();
      o.onProgress?.(total, cursors.filter((c) => !c.done).length);
    }
    await o.capacity();
    await new Promise<void>((resolve) => setImmediate(resolve));
  }
  return total;
}
