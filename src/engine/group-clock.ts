import type { Reader } from '../store/checkpoints.js';
import type { PumpLane } from './pump-lane.js';

export interface GroupClockOptions {
  lanes: ReadonlyMap<string, PumpLane>;
  /** Each pump's readers (pump, table). */
  readersOf: ReadonlyMap<string, Reader[]>;
  settleMs: number;
  /** How long the oldest row a notification named has waited for its read (RowFetcher). */
  rowsWaitingMs: () => number;
  /** SOURCE=replication: the stream is behind (ReplicationSource). */
  streamStalled: () => boolean;
  /** The catch-up waits for room: the open groups are what it waits on. */
  catchUpWaitingForRoom: () => boolean;
  /** Whether any of these readers is held for a catch-up (the ledger). */
  held: (readers: Reader[]) => boolean;
  /** How often the groups are looked at; 100 ms. */
  everyMs?: number;
}

/**
 * Resolves the pumps' groups in time: each turn, every lane's assembler sends, fills or drops the groups
 * whose settle time or expiry has passed. A group waits past its settle time while rows of its pump may be
 * unread: a row a notification named has waited for its read more than a quarter of the settle time (the
 * database or the connection stalls), the replication stream is behind, or its readers are held for a
 * catch-up; in the last case it does not expire either until the catch-up has read the tables, unless
 * that catch-up waits for room. Owns only its timer.
 */
export class GroupClock {
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly o: GroupClockOptions) {}

  start(): void {
    this.timer ??= setInterval(() => this.tick(), this.o.everyMs ?? 100);
  }

  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }

  tick(): void {
    const { o } = this;
    const stalled = o.rowsWaitingMs() > o.settleMs / 4 || o.streamStalled();
    const waiting = o.catchUpWaitingForRoom();
    for (const [pump, lane] of o.lanes) {
      const held = o.held(o.readersOf.get(pump) ?? []);
      lane.tick(stalled || (held && waiting), held && !waiting);
    }
  }
}
