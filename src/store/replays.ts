import type pg from 'pg';
import { ENGINE_SCHEMA } from './migrations.js';

const T = `${ENGINE_SCHEMA}.replays`;

/** What a replay rebuilt, as its audit row keeps it. */
export interface ReplayCounts {
  /** Sensor rows read in the range. */
  rows: number;
  /** Vectors rebuilt (full ones and those at the threshold with fills). */
  vectors: number;
  /** Of those, how many had fields filled in. */
  filled: number;
  /** Groups below the threshold: counted, not sent. */
  dropped: number;
  /** Readings for a key resolved moments before: posted on their own, not merged, as the engine does. */
  late: number;
  /** Rows that are not a valid reading (such as a null valor): neither grouped nor posted. */
  invalid: number;
  /** Per-sensor posts queued (with --posts). */
  posts: number;
  /** Rows in the range above their table's checkpoint: left to the engine, which has not dealt with them yet. */
  unsettled: number;
}

export interface ReplayStart {
  runBy: string;
  pump: string;
  from: string;
  to: string;
  options: Record<string, unknown>;
}

/** Opens a replay's audit row; its id goes into every key the replay sends. */
export async function startReplay(db: pg.Pool | pg.ClientBase, r: ReplayStart): Promise<number> {
  const { rows } = await db.query<{ id: string }>(
    `INSERT INTO ${T} (run_by, pump, from_ts, to_ts, options) VALUES ($1, $2, $3::timestamp, $4::timestamp, $5)
     RETURNING id`,
    [r.runBy, r.pump, r.from, r.to, JSON.stringify(r.options)],
  );
  return Number(rows[0]?.id);
}

/** Closes a replay's audit row with its counts, and the error that ended it, if one did. */
export async function finishReplay(
  db: pg.Pool | pg.ClientBase,
  id: number,
  counts: ReplayCounts,
  error?: string,
): Promise<void> {
  await db.query(
    `UPDATE ${T} SET finished_at = now(), status = $2, rows_read = $3, vectors = $4, vectors_filled = $5,
            dropped = $6, late = $7, invalid = $8, posts = $9, unsettled = $10, error = $11
      WHERE id = $1`,
    [
      id,
      error === undefined ? 'done' : 'failed',
      counts.rows,
      counts.vectors,
      counts.filled,
      counts.dropped,
      counts.late,
      counts.invalid,
      counts.posts,
      counts.unsettled,
      error ?? null,
    ],
  );
}
