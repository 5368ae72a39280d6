import type pg from 'pg';
import type { Logger } from 'pino';
import { describePgError } from '../store/db.js';
import { type RowById, type RowShape, readRowsById } from '../store/sensor-rows.js';

/** One notification's row to read. */
export interface RowRequest {
  table: string;
  shape: RowShape;
  id: number;
  /** The row as read, or undefined when the table does not hold that id. */
  found: (row: RowById | undefined) => void;
  /** The read failed: the row may exist and must be read another way (a hold and a catch-up). */
  failed: (err: unknown) => void;
  /** When it was asked for (set by fetch). */
  at?: number;
}

export interface RowFetcherOptions {
  pool: pg.Pool;
  logger: Logger;
  /** The most ids one read covers. */
  maxBatch?: number;
}

/** The most ids one read covers by default: one statement's arrays stay a few kilobytes. */
export const ROW_FETCH_MAX_BATCH = 2_000;

/**
 * Reads the rows notifications name, so that what the engine forwards is the row, never the payload.
 * Requests that arrive while a read is under way wait and go together in the next one: under a burst the
 * batches grow, and one round trip covers every table woken meanwhile. One read at a time, in arrival
 * order. Owns its queue and nothing else; the callers own what a row means.
 */
export class RowFetcher {
  private queue: RowRequest[] = [];
  private running: Promise<void> | undefined;
  private scheduled = false;
  /** When the oldest request of the read under way was asked for. */
  private readingSince: number | undefined;
  /** Reads done, and requests they answered (for the bench and tests). */
  reads = 0;
  rows = 0;

  constructor(private readonly o: RowFetcherOptions) {}

  /** Requests waiting or being read. */
  get depth(): number {
    return this.queue.length;
  }

  /** How long the oldest request not yet answered has waited (0 when none waits). */
  waitingMs(now = Date.now()): number {
    const oldest = this.readingSince ?? this.queue[0]?.at;
    return oldest === undefined ? 0 : now - oldest;
  }

  fetch(req: RowRequest): void {
    req.at = Date.now();
    this.queue.push(req);
    if (this.running || this.scheduled) return;
    // Let the rest of this socket read's notifications join the batch.
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      this.running ??= this.drain().finally(() => {
        this.running = undefined;
      });
    });
  }

  /** Resolves once every request made so far is answered. */
  async idle(): Promise<void> {
    while (this.running || this.scheduled || this.queue.length > 0) {
      if (this.running) await this.running;
      else await new Promise<void>((resolve) => setImmediate(resolve));
    }
  }

  private async drain(): Promise<void> {
    const max = this.o.maxBatch ?? ROW_FETCH_MAX_BATCH;
    while (this.queue.length > 0) {
      const batch = this.queue.length <= max ? this.queue : this.queue.slice(0, max);
      this.queue = this.queue.length <= max ? [] : this.queue.slice(max);
      // By table: a sensor table and a logbook table never share a name.
      const byTable = new Map<string, { table: string; shape: RowShape; ids: number[]; k: number }>();
      for (const r of batch) {
        let g = byTable.get(r.table);
        if (!g) {
          g = { table: r.table, shape: r.shape, ids: [], k: byTable.size };
          byTable.set(r.table, g);
        }
        g.ids.push(r.id);
      }
      const groups = [...byTable.values()];
      let found: Map<number, RowById>[];
      this.readingSince = batch[0]?.at;
      try {
        found = await readRowsById(this.o.pool, groups);
      } catch (err) {
        this.readingSince = undefined;
        this.o.logger.warn(
          { err: describePgError(err), rows: batch.length },
          'reading notified rows failed; those tables are held and caught up',
        );
        for (const r of batch) this.answer(() => r.failed(err));
        continue;
      }
      this.readingSince = undefined;
      this.reads += 1;
      this.rows += batch.length;
      for (const r of batch) {
        const g = byTable.get(r.table) as { k: number };
        this.answer(() => r.found(found[g.k]?.get(r.id)));
      }
    }
  }

  /** A caller's callback that throws loses only its own row's answer, never the batch's. */
  private answer(call: () => void): void {
    try {
      call();
    } catch (err) {
      this.o.logger.error({ err }, 'handling a notified row failed');
    }
  }
}
