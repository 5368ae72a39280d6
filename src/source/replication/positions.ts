/**
 * Pure: no I/O, no timers. Where the replication slot may be confirmed: the log's transactions as they
 * arrived, each with the rows it handed to the engine, and the position up to which every one of them is
 * settled. The slot's confirmed position never passes a row that is not settled, so a crash, a restart or a
 * takeover resumes from the slot at or before the first row still open.
 */

/** A position in the write-ahead log, `X/Y` in hexadecimal, as a number. */
export function parseLsn(text: string): bigint {
  const [hi, lo] = text.split('/');
  if (
    hi === undefined ||
    lo === undefined ||
    !/^[0-9A-Fa-f]{1,8}$/.test(hi) ||
    !/^[0-9A-Fa-f]{1,8}$/.test(lo)
  ) {
    throw new Error(`not a WAL position: ${JSON.stringify(text)}`);
  }
  return (BigInt(`0x${hi}`) << 32n) | BigInt(`0x${lo}`);
}

export function formatLsn(lsn: bigint): string {
  return `${(lsn >> 32n).toString(16).toUpperCase()}/${(lsn & 0xffffffffn).toString(16).toUpperCase()}`;
}

/** A row handed to the engine: settled when its reader (pump or logbook, table) says so. */
export interface RowRef {
  reader: string;
  table: string;
  id: number;
}

interface Txn {
  /** The end of its commit record: the position to confirm once every row is settled. */
  end: bigint | undefined;
  /** When it committed (ms since the epoch), for the lag in seconds. */
  committedAt: number;
  /** Rows not yet seen settled. */
  rows: RowRef[];
}

export class Positions {
  private open: Txn | undefined;
  private readonly waiting: Txn[] = [];
  /** The position last given to confirm (0 before the first). */
  confirmed = 0n;
  /** The server's end of WAL at the last keepalive while nothing was open or waiting. */
  private idleAt = 0n;

  /** A transaction begins (a pgoutput BEGIN, or a wal2json transaction). */
  begin(committedAt: number): void {
    this.open = { end: undefined, committedAt, rows: [] };
  }

  /** A row of the open transaction was handed over. */
  row(ref: RowRef): void {
    if (!this.open) throw new Error('a row outside a transaction');
    this.open.rows.push(ref);
  }

  /** The open transaction committed; `end` is the end of its commit record. */
  commit(end: bigint): void {
    const t = this.open;
    if (!t) throw new Error('a commit outside a transaction');
    this.open = undefined;
    t.end = end;
    this.waiting.push(t);
  }

  /**
   * A keepalive: the server has sent everything below `walEnd`. With nothing open or waiting, that is the
   * position to confirm: the slot does not hold WAL of tables the engine does not read.
   */
  keepalive(walEnd: bigint): void {
    if (!this.open && this.waiting.length === 0 && walEnd > this.idleAt) this.idleAt = walEnd;
  }

  /**
   * The position to confirm now: the end of the last transaction of the settled prefix, or the idle
   * keepalive's. Never goes back. Undefined when it has not moved.
   */
  advance(settled: (r: RowRef) => boolean): bigint | undefined {
    let to = this.confirmed;
    while (this.waiting.length > 0) {
      const t = this.waiting[0] as Txn;
      t.rows = t.rows.filter((r) => !settled(r));
      if (t.rows.length > 0) break;
      this.waiting.shift();
      if ((t.end as bigint) > to) to = t.end as bigint;
    }
    if (!this.open && this.waiting.length === 0 && this.idleAt > to) to = this.idleAt;
    if (to <= this.confirmed) return undefined;
    this.confirmed = to;
    return to;
  }

  /** Rows handed over and not yet seen settled. */
  get pending(): number {
    let n = this.open?.rows.length ?? 0;
    for (const t of this.waiting) n += t.rows.length;
    return n;
  }

  /** When the oldest transaction not yet confirmed committed; undefined when none waits. */
  oldestWaiting(): number | undefined {
    return this.waiting[0]?.committedAt ?? this.open?.committedAt;
  }
}
