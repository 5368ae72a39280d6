import type pg from 'pg';
import type { Logger } from 'pino';
import type { LogbookStream } from '../config/pumps.js';
import type { Part, Ticket } from '../model/reading.js';
import { describePgError } from '../store/db.js';
import { readLogbookRowsAfter } from '../store/logbook-rows.js';
import { sleep } from '../util/clock.js';

export interface LogbookBacklogOptions {
  pool: pg.Pool;
  /** The logbook's id: the reader of its streams. */
  logbook: string;
  streams: LogbookStream[];
  ledger: {
    beginCatchUp(reader: string, table: string): { from: number; finish(): void };
    begin(reader: string, table: string, id: number, parts: readonly Part[]): Ticket | undefined;
  };
  batch: number;
  /** Whether the lane still owns the logbook: a round stops as soon as it does not. */
  owned: () => boolean;
  /** Whether the lane's queue is past a batch: the round waits, the table is the backlog. */
  full: () => boolean;
  /** A row read that is not on record as posted: the lane begins and sends it. */
  offer: (stream: LogbookStream, id: number, bitacora: string | null) => void;
  signal: AbortSignal;
  logger: Logger;
}

/**
 * A logbook's catch-up after a (re)connect or a takeover: each stream's rows above its saved checkpoint,
 * in batches, one round at a time (a request during a round asks for one more). A row on record as
 * posted before a restart only takes its place in the ledger again. Owns only its loop.
 */
export class LogbookBacklog {
  private loop: Promise<void> | undefined;
  private again = false;

  constructor(private readonly o: LogbookBacklogOptions) {}

  get running(): boolean {
    return this.loop !== undefined;
  }

  /** Resolves when the round under way, if any, ends. */
  async idle(): Promise<void> {
    await this.loop;
  }

  request(): void {
    if (!this.o.owned()) return;
    if (this.loop) {
      this.again = true;
      return;
    }
    this.loop = (async () => {
      do {
        this.again = false;
        try {
          await this.read();
        } catch (err) {
          this.o.logger.warn({ err: describePgError(err) }, 'logbook catch-up failed; will retry');
          await sleep(1_000, this.o.signal).catch(() => {});
          this.again = this.o.owned() && !this.o.signal.aborted;
        }
      } while (this.again && this.o.owned());
    })().finally(() => {
      this.loop = undefined;
    });
  }

  private async read(): Promise<void> {
    const { o } = this;
    for (const stream of o.streams) {
      const round = o.ledger.beginCatchUp(o.logbook, stream.table);
      let after = round.from;
      for (;;) {
        if (!o.owned() || o.signal.aborted) return;
        while (o.full() && o.owned()) await sleep(20, o.signal);
        const rows = await readLogbookRowsAfter(o.pool, stream.table, o.logbook, after, o.batch);
        for (const r of rows) {
          after = r.id;
          // On record before a restart: only its place in the ledger is rebuilt.
          if (r.posted) o.ledger.begin(o.logbook, stream.table, r.id, []);
          else o.offer(stream, r.id, r.bitacora);
        }
        if (rows.length < o.batch) break;
      }
      round.finish();
    }
  }
}
