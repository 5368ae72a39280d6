import type pg from 'pg';
import type { Logger } from 'pino';
import type { Part, Ticket } from '../model/reading.js';
import {
  initCheckpoints,
  loadCheckpoints,
  type Reader,
  readerKey,
  repairPassedCheckpoints,
  stableBounds,
  writeCheckpoints,
} from '../store/checkpoints.js';
import { describePgError } from '../store/db.js';
import { MAX_TABLE_NO, member } from '../store/members.js';
import { getOrAdd } from '../util/maps.js';
import { TableProgress } from './table-progress.js';
import { RowTicket } from './ticket.js';

/** One reader's catch-up round: where it reads from, and what it calls once it has read to the end. */
export interface CatchUpRound {
  from: number;
  finish(): void;
}

export interface CheckpointKeeperOptions {
  pool: pg.Pool;
  logger: Logger;
  /** How often the checkpoints that moved are written. */
  everyMs: number;
  /** The readers whose checkpoints this replica may write: those of the pumps (and streams) it owns. */
  ownedReaders: () => Reader[];
  /** The most moved checkpoints one timed write covers (default MAX_READERS_PER_SAVE). */
  maxPerSave?: number;
  /**
   * The LISTEN session's horizon (Listener.horizon): no checkpoint passes a row of a transaction that had
   * not finished there. Undefined while it cannot say; the last one it gave is used then (an older horizon
   * only holds checkpoints further back), and nothing is written before the first.
   */
  horizon: () => Promise<number | undefined>;
}

/**
 * The most moved checkpoints one timed write covers. Each costs PostgreSQL about half a millisecond (its
 * table's bound: see stableBounds), so a write every 250 ms stays near a fifth of a core. The seed's two
 * pumps have 35 readers, all written each time; 200 synthetic pumps of 20 sensors have 4,000, each then
 * written every 10 s instead of every 250 ms (a crash reads those rows again; the ledger and the outbox's
 * members recognise them).
 */
export const MAX_READERS_PER_SAVE = 100;

/** A start-up problem that retrying will not fix. */
export class LedgerError extends Error {
  override name = 'LedgerError';
}

/**
 * The ledger: every reader's progress (rows in flight, recently settled, the checkpoint), and the keeper
 * that saves the checkpoints. A reader is (pump, table): a row of a table several pumps read is settled
 * by each of them on its own, and each has its own checkpoint row, so a table is never passed before every
 * reader has settled the row, whichever replica owns each. Owns the TableProgress objects and its timer.
 * The intake, lanes, posts and logbook lane begin rows and settle their parts here; nobody else writes
 * `pump_monitor.checkpoints`.
 */
export class CheckpointKeeper {
  private readonly progress = new Map<string, { reader: Reader; p: TableProgress }>();
  /** The same, by pump then table: looked up per reading without building a key. */
  private readonly byPump = new Map<string, Map<string, { reader: Reader; p: TableProgress }>>();
  private timer: NodeJS.Timeout | undefined;
  private saving: Promise<void> | undefined;
  /** Where the next capped write starts among the readers. */
  private turn = 0;
  private lastHorizon: number | undefined;
  /** Completed checkpoint writes: tests wait on it instead of sleeping. */
  saves = 0;

  constructor(private readonly o: CheckpointKeeperOptions) {}

  /**
   * (Re)loads readers' checkpoints from the database, creating missing ones (see initCheckpoints), and
   * holds them until a catch-up has read the backlog. Replaces what was in memory for those readers.
   */
  async load(db: pg.Pool | pg.ClientBase, readers: Reader[]): Promise<void> {
    await initCheckpoints(db, readers);
    for (const r of await repairPassedCheckpoints(db, readers)) {
      this.o.logger.warn(
        r,
        `checkpoint of ${r.pump} on ${r.table} was ${r.was}, past the table's last row ${r.lastRow} (an earlier version trusted a notification's id); brought back to ${r.now}, ${r.recorded ? 'the last row on record as delivered' : "the table's last row (none is on record as delivered)"}; rows above it are read again`,
      );
    }
    const saved = await loadCheckpoints(db, readers);
    for (const r of readers) {
      const cp = saved.get(readerKey(r.pump, r.table));
      if (!cp) continue;
      if (cp.no >= MAX_TABLE_NO) {
        throw new LedgerError(
          `reader ${r.pump} of table ${r.table} has number ${cp.no}; at most ${MAX_TABLE_NO} readers are supported`,
        );
      }
      const p = new TableProgress(r.table, cp.lastId, cp.no);
      p.holdFromLatest();
      const entry = { reader: r, p };
      this.progress.set(readerKey(r.pump, r.table), entry);
      getOrAdd(this.byPump, r.pump, () => new Map()).set(r.table, entry);
    }
  }

  /** One reader's progress: private to the ledger, which hands out tickets and catch-up rounds instead. */
  private reader(pump: string, table: string): TableProgress {
    const e = this.byPump.get(pump)?.get(table);
    if (!e) throw new Error(`no progress for table ${table} read by ${pump}`);
    return e.p;
  }

  /**
   * Begins a row of one reader with the parts its owners will settle, and returns its ticket; undefined
   * for a duplicate (in flight or settled recently). A row begun with no part is settled at once (a row on
   * record as done before a restart, or one nothing is left to do with): only its place is kept.
   */
  begin(pump: string, table: string, id: number, parts: readonly Part[]): Ticket | undefined {
    const p = this.reader(pump, table);
    if (!p.begin(id, Math.max(1, parts.length))) return undefined;
    if (parts.length === 0) p.settle(id);
    return new RowTicket(p, id, parts);
  }

  /** Whether `id` is at or below the reader's saved checkpoint: a notification naming it repeats a settled row. */
  passed(pump: string, table: string, id: number): boolean {
    return this.reader(pump, table).passed(id);
  }

  /** Whether the reader has settled `id`: its checkpoint in memory is at or past it. */
  settledThrough(pump: string, table: string, id: number): boolean {
    return this.reader(pump, table).checkpoint() >= id;
  }

  /** A notification names `id`: no checkpoint passes it until `unclaim` (its row was read, or not). */
  claim(pump: string, table: string, id: number): void {
    this.reader(pump, table).claim(id);
  }

  unclaim(pump: string, table: string, id: number): void {
    this.reader(pump, table).unclaim(id);
  }

  /** Rows from `id` up may have been missed: held until a catch-up begun after this has read the table. */
  holdFrom(pump: string, table: string, id: number): void {
    this.reader(pump, table).holdFrom(id);
  }

  /** Any row above the saved checkpoint may have been missed (a payload that names no row). */
  holdAfterSaved(pump: string, table: string): void {
    const p = this.reader(pump, table);
    p.holdFrom(p.persisted + 1);
  }

  /**
   * A catch-up round of one reader: it reads from `from` (the saved checkpoint: only it is held below
   * rows that transactions still in progress may commit), and calls `finish()` once it has read the
   * table to its end, which lifts the reader's hold unless a newer one was set meanwhile.
   */
  beginCatchUp(pump: string, table: string): CatchUpRound {
    const p = this.reader(pump, table);
    const token = p.catchUpToken();
    return { from: p.persisted, finish: () => p.release(token) };
  }

  /** A row's member number for this reader, as the outbox records it. */
  member(pump: string, table: string, id: number): number {
    return member(this.reader(pump, table).no, id);
  }

  /** Notifications may be lost from now on (the LISTEN connection is gone): hold these readers. */
  hold(readers: Iterable<Reader>): void {
    for (const r of readers) this.progress.get(readerKey(r.pump, r.table))?.p.holdFromLatest();
  }

  /** How many of these readers are held. */
  heldCount(readers: Reader[]): number {
    let n = 0;
    for (const r of readers) if (this.progress.get(readerKey(r.pump, r.table))?.p.held) n += 1;
    return n;
  }

  /** Whether any of these readers is held: rows of them may not have been read yet. */
  held(readers: Reader[]): boolean {
    for (const r of readers) if (this.progress.get(readerKey(r.pump, r.table))?.p.held) return true;
    return false;
  }

  start(): void {
    this.timer ??= setInterval(
      () => void this.save(this.o.ownedReaders(), this.o.maxPerSave ?? MAX_READERS_PER_SAVE),
      this.o.everyMs,
    );
  }

  /** Stops the timer and writes what moved once more. */
  async stop(): Promise<void> {
    clearInterval(this.timer);
    this.timer = undefined;
    await this.flush();
  }

  /** Writes every moved checkpoint of the given readers (default: the owned ones), after the save under way. */
  async flush(readers = this.o.ownedReaders()): Promise<void> {
    while (this.saving) await this.saving;
    await this.save(readers, Number.POSITIVE_INFINITY);
  }

  /**
   * One write of at most `max` moved checkpoints, the readers taking turns; none when a write is under way.
   * The timer's writes are capped: each one asks PostgreSQL for every table's bound in one statement, and a
   * replica with hundreds of pumps would otherwise have it plan thousands of them four times a second.
   */
  private save(readers: Reader[], max: number): Promise<void> {
    if (this.saving) return this.saving;
    const entries = readers.flatMap((r) => {
      const e = this.progress.get(readerKey(r.pump, r.table));
      return e ? [e] : [];
    });
    const chosen: { reader: Reader; p: TableProgress }[] = [];
    const start = entries.length > 0 ? this.turn % entries.length : 0;
    let examined = 0;
    while (examined < entries.length && chosen.length < max) {
      const e = entries[(start + examined) % entries.length] as { reader: Reader; p: TableProgress };
      if (e.p.checkpoint() > e.p.persisted) chosen.push(e);
      examined += 1;
    }
    this.turn = start + examined;
    this.saving = (async () => {
      try {
        const horizon = chosen.length > 0 ? await this.o.horizon() : undefined;
        if (horizon !== undefined) this.lastHorizon = horizon;
        if (chosen.length > 0 && this.lastHorizon === undefined) return; // not listening yet: nothing is safe
        await writeMoved(this.o.pool, chosen, this.lastHorizon ?? 0);
        this.saves += 1;
      } catch (err) {
        this.o.logger.debug({ err: describePgError(err) }, 'saving checkpoints failed; will retry');
      } finally {
        this.saving = undefined;
      }
    })();
    return this.saving;
  }
}

/**
 * Writes the checkpoints that moved, each held below rows that transactions not finished at `horizon` may
 * have committed (see stableBounds). Returns how many moved; a checkpoint never goes backwards.
 */
async function writeMoved(
  db: pg.Pool | pg.ClientBase,
  progress: Iterable<{ reader: Reader; p: TableProgress }>,
  horizon: number,
): Promise<number> {
  const candidates: [TableProgress, number, string][] = [];
  for (const { reader, p } of progress) {
    const cp = p.checkpoint();
    if (cp > p.persisted) candidates.push([p, cp, reader.pump]);
  }
  if (candidates.length === 0) return 0;
  const bounds = await stableBounds(
    db,
    candidates.map(([p]) => ({ table: p.table, from: p.persisted })),
    horizon,
  );
  const moved: [TableProgress, number, string][] = [];
  for (const [p, cp, pump] of candidates) {
    const bound = bounds.get(p.table);
    const safe = bound === undefined ? cp : Math.min(cp, bound);
    if (safe > p.persisted) moved.push([p, safe, pump]);
  }
  await writeCheckpoints(
    db,
    moved.map(([p, lastId, pump]) => ({ table: p.table, pump, lastId })),
  );
  for (const [p, cp] of moved) p.saved(cp);
  return moved.length;
}
