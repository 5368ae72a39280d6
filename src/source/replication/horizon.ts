import type pg from 'pg';
import { horizonAt } from '../../store/replication.js';
import { parseLsn } from './positions.js';

/**
 * The ledger's horizon on SOURCE=replication: the newest snapshot whose WAL position the stream has
 * handed over. A transaction older than it has finished, and its rows are in the engine.
 */
export class StreamHorizon {
  /** Snapshots taken, oldest first, until the stream has passed them. */
  private readonly taken: { xmin: number; lsn: bigint }[] = [];
  private last: number | undefined;

  /** Takes a snapshot, then returns the newest one at or below `handled` (the last found stands). */
  async next(pool: pg.Pool, handled: bigint): Promise<number | undefined> {
    try {
      const h = await horizonAt(pool);
      this.taken.push({ xmin: h.xmin, lsn: parseLsn(h.lsn) });
      if (this.taken.length > 1_000) this.taken.shift();
    } catch {
      // The last one found stands (an older horizon only holds checkpoints further back).
    }
    while (this.taken.length > 0 && (this.taken[0] as { lsn: bigint }).lsn <= handled) {
      this.last = (this.taken.shift() as { xmin: number }).xmin;
    }
    return this.last;
  }
}
