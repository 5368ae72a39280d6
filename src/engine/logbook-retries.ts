import type pg from 'pg';
import type { Logger } from 'pino';
import type { LogbookStream } from '../config/pumps.js';
import { logbookEntryId } from '../model/payload.js';
import { describePgError } from '../store/db.js';
import { deleteDeferred, fetchDeferred } from '../store/deferred-posts.js';
import { readLogbookEntry } from '../store/logbook-rows.js';

/** An entry an operator queued again (`dead-letters retry`): its queued row, its stream and entry, its key. */
export interface QueuedRetry {
  deferredId: number;
  stream: LogbookStream;
  id: number;
  key?: string;
  /** The row's text as it is now: undefined when the row no longer exists, null when it has no text. */
  text: string | null | undefined;
}

export interface LogbookRetriesOptions {
  pool: pg.Pool;
  /** The logbook's id: its retries are queued in deferred_posts under it. */
  logbook: string;
  /** The logbook's stream on a channel, if it is one of them. */
  streamOf: (channel: string) => LogbookStream | undefined;
  /** Whether the lane has room for more now (its queue is not past a batch). */
  room: () => boolean;
  /** Hands a retry to the lane, which sends it like any entry and calls `sent` once it is settled. */
  queue: (r: QueuedRetry) => void;
  logger: Logger;
}

/**
 * The retries an operator queued for one logbook (deferred_posts, pump = the logbook id), while its lane
 * owns the logbook: read every second from a cursor, each with its entry's text read from the row (an
 * operator's retry names the entry by id), handed to the lane once, and its queued row removed once the
 * lane has settled it. A queued row that names no entry of the logbook is removed with
 * a warning. Owns its cursor, its timer and the set of rows handed over; touches no other table.
 */
export class LogbookRetries {
  private cursor = 0;
  private readonly handed = new Set<number>();
  private timer: NodeJS.Timeout | undefined;
  private reading = false;

  constructor(private readonly o: LogbookRetriesOptions) {}

  /** The lane took the logbook: read from the start (another owner may have left some). */
  start(): void {
    this.cursor = 0;
    this.timer ??= setInterval(() => void this.read(), 1_000);
  }

  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
    this.handed.clear();
  }

  /** The lane settled a retry: its queued row goes. */
  sent(deferredId: number): void {
    void deleteDeferred(this.o.pool, [deferredId])
      .then(() => this.handed.delete(deferredId))
      .catch((err) =>
        this.o.logger.warn(
          { err: describePgError(err), deferred: deferredId },
          'removing a sent logbook retry failed',
        ),
      );
  }

  private async read(): Promise<void> {
    if (this.timer === undefined || this.reading || !this.o.room()) return;
    this.reading = true;
    try {
      const rows = await fetchDeferred(this.o.pool, this.o.logbook, 20, this.cursor);
      const stale: number[] = [];
      for (const d of rows) {
        if (this.timer === undefined) break; // stopped meanwhile: the next owner reads the rest
        if (this.handed.has(d.id)) continue;
        const id = logbookEntryId(d.payload);
        const stream = this.o.streamOf(d.channel);
        if (!stream || id === undefined) {
          this.cursor = Math.max(this.cursor, d.id);
          this.o.logger.warn(
            { deferred: d.id, channel: d.channel },
            'queued logbook retry names no entry; removed',
          );
          stale.push(d.id);
          continue;
        }
        // A failed read ends the round; the next one reads this row again.
        const text = await readLogbookEntry(this.o.pool, stream.table, id);
        this.cursor = Math.max(this.cursor, d.id);
        this.handed.add(d.id);
        this.o.queue({ deferredId: d.id, stream, id, text, ...(d.key ? { key: d.key } : {}) });
      }
      if (stale.length > 0) await deleteDeferred(this.o.pool, stale);
    } catch (err) {
      this.o.logger.warn({ err: describePgError(err) }, 'reading queued logbook retries failed; will retry');
    } finally {
      this.reading = false;
    }
  }
}
