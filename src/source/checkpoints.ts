import type pg from 'pg';
import { quoteIdent } from '../store/db.js';
import { ENGINE_SCHEMA } from '../store/schema.js';

/**
 * What the engine knows about one sensor table's rows: which are in flight, which were settled recently,
 * and the checkpoint, the id at or below which every row is settled (delivered, or dropped and recorded).
 *
 * The in-flight map and the recent ring also deduplicate by (table, id): the same row may arrive from two
 * triggers, or from a notification and the catch-up that overlaps it.
 */
export class TableProgress {
  /** id → parts still pending (group resolution, per-sensor post). */
  private readonly inflight = new Map<number, number>();
  private readonly recent = new Set<number>();
  private readonly ring: number[];
  private ringPos = 0;
  private maxSeen: number;
  /**
   * Rows from this id up may have been missed (the process just started, the LISTEN connection was lost, or
   * a notification was set aside under load): the checkpoint stays below it until a catch-up that began
   * after the hold has read the table to its end.
   */
  private holdAt = Number.POSITIVE_INFINITY;
  private holdSeq = 0;
  private static seq = 0;
  /** The checkpoint as last written to the database. */
  persisted: number;

  constructor(
    readonly table: string,
    checkpoint: number,
    recentCapacity = 8192,
  ) {
    this.maxSeen = checkpoint;
    this.persisted = checkpoint;
    this.ring = new Array(recentCapacity);
  }

  /** Registers a row; false when it is already in flight or was settled recently (a duplicate). */
  begin(id: number, parts: number): boolean {
    if (this.inflight.has(id) || this.recent.has(id)) return false;
    this.inflight.set(id, parts);
    if (id > this.maxSeen) this.maxSeen = id;
    return true;
  }

  /** Marks one part of a row done; the row is settled when no part is left. */
  settle(id: number): void {
    const left = this.inflight.get(id);
    if (left === undefined) return;
    if (left > 1) {
      this.inflight.set(id, left - 1);
      return;
    }
    this.inflight.delete(id);
    const evicted = this.ring[this.ringPos];
    if (evicted !== undefined) this.recent.delete(evicted);
    this.ring[this.ringPos] = id;
    this.ringPos = (this.ringPos + 1) % this.ring.length;
    this.recent.add(id);
  }

  /** Keeps the checkpoint below `id` until a catch-up started after this call has finished the table. */
  hold(id: number): void {
    if (id < this.holdAt) this.holdAt = id;
    TableProgress.seq += 1;
    this.holdSeq = TableProgress.seq;
  }

  /** Holds rows above everything seen so far: notifications may be lost from here on. */
  holdFromLatest(): void {
    this.hold(this.maxSeen + 1);
  }

  /** A token to hand back to release() once a catch-up started now has read the table to its end. */
  catchUpToken(): number {
    return TableProgress.seq;
  }

  /** Lifts the hold unless a newer one was set after the catch-up began (a later catch-up lifts that). */
  release(token: number): void {
    if (this.holdSeq <= token) this.holdAt = Number.POSITIVE_INFINITY;
  }

  get inflightCount(): number {
    return this.inflight.size;
  }

  /** The highest id such that every row at or below it that the engine has seen is settled. */
  checkpoint(): number {
    let min = Number.POSITIVE_INFINITY;
    for (const id of this.inflight.keys()) if (id < min) min = id;
    const safe = Math.min(min === Number.POSITIVE_INFINITY ? this.maxSeen : min - 1, this.holdAt - 1);
    return Math.max(safe, this.persisted);
  }
}

/**
 * Gives each table without a checkpoint one at its current last row: a first start against a plant's
 * existing database begins with new readings instead of re-sending its whole history.
 */
export async function initCheckpoints(db: pg.Pool | pg.ClientBase, tables: string[]): Promise<void> {
  const { rows } = await db.query<{ table_name: string }>(
    `SELECT table_name FROM ${ENGINE_SCHEMA}.checkpoints WHERE table_name = ANY($1)`,
    [tables],
  );
  const known = new Set(rows.map((r) => r.table_name));
  for (const t of tables.filter((x) => !known.has(x))) {
    await db.query(
      `INSERT INTO ${ENGINE_SCHEMA}.checkpoints (table_name, last_id)
       SELECT $1, coalesce(max(id), 0) FROM ${quoteIdent(t)} ON CONFLICT (table_name) DO NOTHING`,
      [t],
    );
  }
}

export async function loadCheckpoints(
  db: pg.Pool | pg.ClientBase,
  tables: string[],
): Promise<Map<string, number>> {
  const { rows } = await db.query<{ table_name: string; last_id: string }>(
    `SELECT table_name, last_id FROM ${ENGINE_SCHEMA}.checkpoints WHERE table_name = ANY($1)`,
    [tables],
  );
  const out = new Map<string, number>(tables.map((t) => [t, 0]));
  for (const r of rows) out.set(r.table_name, Number(r.last_id));
  return out;
}

/** Writes the checkpoints that moved; a checkpoint never goes backwards. */
export async function saveCheckpoints(
  db: pg.Pool | pg.ClientBase,
  progress: Iterable<TableProgress>,
): Promise<number> {
  const tables: string[] = [];
  const ids: number[] = [];
  const moved: [TableProgress, number][] = [];
  for (const p of progress) {
    const cp = p.checkpoint();
    if (cp > p.persisted) {
      tables.push(p.table);
      ids.push(cp);
      moved.push([p, cp]);
    }
  }
  if (tables.length === 0) return 0;
  await db.query(
    `INSERT INTO ${ENGINE_SCHEMA}.checkpoints (table_name, last_id)
     SELECT * FROM unnest($1::text[], $2::bigint[])
     ON CONFLICT (table_name) DO UPDATE
       SET last_id = GREATEST(${ENGINE_SCHEMA}.checkpoints.last_id, EXCLUDED.last_id), updated_at = now()`,
    [tables, ids],
  );
  for (const [p, cp] of moved) p.persisted = cp;
  return tables.length;
}
