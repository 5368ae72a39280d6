import type { Part, Ticket } from '../model/reading.js';
import type { TableProgress } from './table-progress.js';

const BIT: Record<Part, number> = { group: 1, post: 2, letter: 4 };

/**
 * The parts of a row (model/reading.ts `Part`) must all be done before its reader's checkpoint may pass
 * it: its group stored (or the reading late for it), its post answered, deferred or dead-lettered, or
 * the dead letter that rejects it on record.
 *
 * One row begun in one reader's ledger, with the parts its owners settle: the pump lane its group, the
 * post pipeline its post, the dead-letter sink its letter. The row is settled when every part is, and
 * until then no checkpoint of that reader passes it. Settling a part twice does nothing; settling a
 * part the row was not begun with is a fault of the engine, and throws.
 */
export class RowTicket implements Ticket {
  /** The parts the row was begun with, and those still to be settled (bits of BIT). */
  private readonly begun: number;
  private left: number;

  constructor(
    private readonly progress: TableProgress,
    readonly id: number,
    parts: readonly Part[],
  ) {
    let bits = 0;
    for (const p of parts) bits |= BIT[p];
    this.begun = bits;
    this.left = bits;
  }

  /** Whether this part is still to be settled. */
  owes(part: Part): boolean {
    return (this.left & BIT[part]) !== 0;
  }

  /** Every part is settled. */
  get settled(): boolean {
    return this.left === 0;
  }

  settle(part: Part): void {
    const bit = BIT[part];
    if ((this.left & bit) === 0) {
      if ((this.begun & bit) !== 0) return;
      throw new Error(`row ${this.id} of ${this.progress.table} has no ${part} part to settle`);
    }
    this.left &= ~bit;
    this.progress.settle(this.id);
  }
}
