import type pg from 'pg';
import type { Logger } from 'pino';
import { initCheckpoints, loadCheckpoints, stableBounds, writeCheckpoints } from '../store/checkpoints.js';
import { describePgError } from '../store/db.js';
import { MAX_TABLE_NO, member } from '../store/members.js';
import { TableProgress } from './table-progress.js';

export interface CheckpointKeeperOptions {
  pool: pg.Pool;
  logger: Logger;
  /** How often the checkpoints that moved are written. */
  everyMs: number;
  /** The tables whose checkpoints this replica may write: those of the pumps it owns. */
  ownedTables: () => string[];
}

/** A start-up problem that retrying will not fix. */
export class LedgerError extends Error {
  override name = 'LedgerError';
}

/**
 * The ledger: every sensor table's progress (rows in flight, recently settled, the checkpoint), and the
 * keeper that saves the checkpoints. Owns the TableProgress objects and its timer. Readers begin rows and
 * settle their parts here; nobody else writes `pump_monitor.checkpoints`.
 */
export class CheckpointKeeper {
  private readonly progress = new Map<string, TableProgress>();
  private timer: NodeJS.Timeout | undefined;
  private saving: Promise<void> | undefined;
  /** Completed checkpoint writes: tests wait on it instead of sleeping. */
  saves = 0;

  constructor(private readonly o: CheckpointKeeperOptions) {}

  /**
   * (Re)loads tables' checkpoints from the database, creating missing ones at each table's last row, and
   * holds them until a catch-up has read the backlog. Replaces what was in memory for those tables.
   */
  async load(db: pg.Pool | pg.ClientBase, tables: string[]): Promise<void> {
    await initCheckpoints(db, tables);
    for (const [t, cp] of await loadCheckpoints(db, tables)) {
      if (cp.no >= MAX_TABLE_NO) {
        throw new LedgerError(
          `sensor table ${t} has number ${cp.no}; at most ${MAX_TABLE_NO} tables are supported`,
        );
      }
      const p = new TableProgress(t, cp.lastId, cp.no);
      p.holdFromLatest();
      this.progress.set(t, p);
    }
  }

  table(name: string): TableProgress {
    const p = this.progress.get(name);
    if (!p) throw new Error(`no progress for table ${name}`);
    return p;
  }

  /** Registers a row with its parts to settle; false for a duplicate (in flight or settled recently). */
  begin(table: string, id: number, parts: number): boolean {
    return this.table(table).begin(id, parts);
  }

  settle(table: string, id: number): void {
    this.progress.get(table)?.settle(id);
  }

  /** A row's member number, as the outbox records it. */
  member(table: string, id: number): number {
    return member(this.table(table).no, id);
  }

  /** Notifications may be lost from now on (the LISTEN connection is gone): hold these tables. */
  hold(tables: Iterable<string>): void {
    for (const t of tables) this.progress.get(t)?.holdFromLatest();
  }

  start(): void {
    this.timer ??= setInterval(() => void this.flush(), this.o.everyMs);
  }

  /** Stops the timer and writes what moved once more. */
  async stop(): Promise<void> {
    clearInterval(this.timer);
    this.timer = undefined;
    await this.flush();
  }

  /** Writes the moved checkpoints of the given tables (default: the owned ones); one write at a time. */
  async flush(tables = this.o.ownedTables()): Promise<void> {
    if (this.saving) return this.saving;
    this.saving = (async () => {
      try {
        await saveCheckpoints(
          this.o.pool,
          tables.map((t) => this.table(t)),
        );
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
 * Writes the checkpoints that moved, each held below rows that transactions still in progress may commit
 * (see stableBounds). Returns how many moved; a checkpoint never goes backwards.
 */
export async function saveCheckpoints(
  db: pg.Pool | pg.ClientBase,
  progress: Iterable<TableProgress>,
): Promise<number> {
  const candidates: [TableProgress, number][] = [];
  for (const p of progress) {
    const cp = p.checkpoint();
    if (cp > p.persisted) candidates.push([p, cp]);
  }
  if (candidates.length === 0) return 0;
  const bounds = await stableBounds(
    db,
    candidates.map(([p]) => ({ table: p.table, from: p.persisted })),
  );
  const moved: [TableProgress, number][] = [];
  for (const [p, cp] of candidates) {
    const bound = bounds.get(p.table);
    const safe = bound === undefined ? cp : Math.min(cp, bound);
    if (safe > p.persisted) moved.push([p, safe]);
  }
  await writeCheckpoints(
    db,
    moved.map(([p, lastId]) => ({ table: p.table, lastId })),
  );
  for (const [p, cp] of moved) p.persisted = cp;
  return moved.length;
}
