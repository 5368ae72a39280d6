import type { Logger } from 'pino';
import type { Ticket } from '../model/reading.js';
import { describePgError } from '../store/db.js';
import type { DeadLetter } from '../store/dead-letters.js';
import type { SettledPost } from '../store/sensor-posts.js';
import { BatchWriter } from '../util/batch.js';
import { RetryableError } from './backend-client.js';
import type { DeliveryResult } from './policy.js';
import { type Backend, type PostShape, RowPoster } from './row-poster.js';

/**
 * How long settled posts gather before they are recorded, and how many go in one write. After a SIGKILL,
 * the posts sent again are at most those in flight plus what this ledger had not yet written.
 */
export const POST_LEDGER_LINGER_MS = 20;
export const POST_LEDGER_MAX_BATCH = 50;

/** A row whose post goes through the queue: its ticket's post part, or its queued row in deferred_posts. */
export interface PostedRow {
  /** Its row in its reader's ledger (none for a post read back from deferred_posts). */
  ticket?: Ticket | undefined;
  /** Read back from pump_monitor.deferred_posts: its row was settled long ago, its queued row goes. */
  deferredId?: number | undefined;
}

/** A kind of row's post (route, body, key, lane) and what is kept of it (its record, its dead letter). */
export interface RowKind<T> extends PostShape<T> {
  /** In logs and reasons: 'per-sensor POST' or 'logbook entry'. */
  what: string;
  /** In the reason of a 404: 'row' or 'entry'. */
  noun: string;
  /** Its record in pump_monitor.sensor_posts (reader, table, row id). */
  record(item: T): SettledPost;
  /** Its dead letter but the reason and the answer. */
  letter(item: T): Omit<DeadLetter, 'reason' | 'responseStatus' | 'responseBody'>;
}

/** A post's retry budget: attempts that reached the backend, and the backoff between them. */
export interface RetryBudget {
  maxAttempts: number;
  retryBaseMs: number;
  retryMaxMs: number;
}

/** The retry budget out of a unit's options. */
export function budgetOf(o: RetryBudget): RetryBudget {
  return { maxAttempts: o.maxAttempts, retryBaseMs: o.retryBaseMs, retryMaxMs: o.retryMaxMs };
}

export interface PostQueueOptions<T> extends RetryBudget {
  /** The settled-post ledger's writer's name (its errors, its gauge). */
  name: string;
  logger: Logger;
  signal: AbortSignal;
  kind: RowKind<T>;
  /** Each lane's backend (client, timeout, breaker, route guard). */
  backends: Map<string, Backend>;
  concurrency: number;
  /** Writes settled posts (store/sensor-posts.ts recordSettledPosts on the engine's pool). */
  recordPosts: (posts: SettledPost[]) => Promise<void>;
  /** Writes a dead letter, then calls `settled` once it is on record (the DeadLetterSink). */
  deadLetter: (letter: DeadLetter, settled: () => void) => void;
  /** A post read back from deferred_posts is answered or dead-lettered: its queued row goes. */
  finished: (item: T, deferredId: number) => void;
  /** A post is answered (`ok`) or given up and its dead letter pushed; not called when cancelled. */
  settled?: (item: T, result: Exclude<DeliveryResult, { kind: 'cancelled' }>) => void;
  /** Other answered posts whose bookkeeping is not written yet: they count against the cap too. */
  unwritten?: () => number;
}

/**
 * The one per-row delivery queue: every per-sensor post and every logbook entry goes through one, which
 * differ only in their kind (route, body, key, record, letter), their backends and their share of slots.
 * A RowPoster (bulkheads, turns, retries, breaker) in front of the settlement: a post answered 200 is
 * settled at once; one rejected or given up is a dead letter, settled once it is on record. Settling
 * records the row in pump_monitor.sensor_posts, so a restart does not post it again, and settles its
 * ticket's `post` part; a post read back from deferred_posts is handed to `finished` instead. No new post
 * starts while two batches of answered posts are not on record (the database is away), so a crash sends
 * again at most the posts in flight and those two batches. Owns the poster and the record writer.
 */
export class PostQueue<T extends PostedRow> {
  private readonly poster: RowPoster<T>;
  private readonly records: BatchWriter<SettledPost>;

  constructor(private readonly o: PostQueueOptions<T>) {
    this.poster = new RowPoster<T>({
      clients: o.backends,
      shape: o.kind,
      concurrency: o.concurrency,
      ...budgetOf(o),
      onDone: (item, result) => this.done(item, result),
      mayStart: () => this.records.pending + (o.unwritten?.() ?? 0) < 2 * POST_LEDGER_MAX_BATCH,
      onError: (err, item) =>
        o.logger.error({ err, ...o.kind.record(item) }, `recording a ${o.kind.what}'s result failed`),
    });
    this.records = new BatchWriter(o.recordPosts, {
      name: o.name,
      lingerMs: POST_LEDGER_LINGER_MS,
      maxBatch: POST_LEDGER_MAX_BATCH,
      retryMs: 500,
      onError: (err, n, refused) =>
        refused
          ? o.logger.error(
              { err: describePgError(err) },
              `recording a ${o.kind.what}: the database refused it`,
            )
          : o.logger.warn(
              { err: describePgError(err), items: n },
              `recording ${o.kind.what}s failed; retrying`,
            ),
      signal: o.signal,
      onWritten: () => this.poster.resume(),
    });
  }

  /** Posts queued or in flight. */
  get depth(): number {
    return this.poster.depth;
  }

  /** One lane's posts queued or in flight. */
  depthOf(lane: string): number {
    return this.poster.depthOf(lane);
  }

  /** Queues a row's post. Never waits. */
  submit(item: T): void {
    this.poster.enqueue(item);
  }

  /** A row that cannot be posted (`reason`): its dead letter, and it is settled once that is on record. */
  reject(item: T, reason: string): void {
    this.letter(item, reason, undefined);
  }

  /**
   * The row's post is taken care of without a post (deferred to the database): its ticket's post part is
   * settled, and it is on record for restarts.
   */
  settle(item: T): void {
    item.ticket?.settle('post');
    this.records.push(this.o.kind.record(item));
  }

  /** Starts queued posts again once other bookkeeping (`unwritten`) is written. */
  resume(): void {
    this.poster.resume();
  }

  /** Resolves when nothing is queued or in flight, or at once after abort(). */
  idle(): Promise<void> {
    return this.poster.idle();
  }

  /** Drops what is queued, not what is in flight: those rows stay unsettled, read again later. */
  clear(): void {
    this.poster.clear();
  }

  /** Writes the records now (a graceful stop, a hand-over). */
  flush(): Promise<void> {
    return this.records.flush();
  }

  /** Cancels what is queued and in flight; those rows stay unsettled and are caught up later. */
  abort(): void {
    this.poster.abort();
  }

  /** After abort(): sends again (a logbook taken back). */
  reopen(): void {
    this.poster.reopen();
  }

  private done(item: T, result: DeliveryResult): void {
    if (result.kind === 'cancelled') return; // unsettled: caught up on the next start
    if (result.kind === 'ok') {
      this.finish(item);
      this.o.settled?.(item, result);
      return;
    }
    // The response kept with it: the rejection, or the last answer of an exhausted budget (none when no
    // answer came, e.g. a timeout).
    const last =
      result.kind === 'rejected'
        ? result.answer
        : result.error instanceof RetryableError && result.error.status !== undefined
          ? { status: result.error.status, body: result.error.body }
          : undefined;
    this.letter(item, describeFailure(result, this.o.kind.noun), last);
    this.o.settled?.(item, result);
  }

  private letter(item: T, reason: string, last: { status: number; body?: string } | undefined): void {
    const { kind } = this.o;
    this.o.logger.warn({ ...kind.record(item), reason }, `${kind.what} not delivered; kept as a dead letter`);
    this.o.deadLetter(
      { ...kind.letter(item), reason, responseStatus: last?.status, responseBody: last?.body },
      () => this.finish(item),
    );
  }

  /** Answered or on record as a dead letter: settled, or a deferred post's queued row removed. */
  private finish(item: T): void {
    const deferredId = item.deferredId;
    if (deferredId === undefined) this.settle(item);
    else this.o.finished(item, deferredId);
  }
}

/** Why a post was not delivered, in one line; `noun` names what the backend did not know. */
export function describeFailure(
  result: Exclude<DeliveryResult, { kind: 'ok' | 'cancelled' }>,
  noun = 'row',
): string {
  if (result.kind === 'gave_up') return `gave up after ${result.attempts} attempts: ${result.error.message}`;
  return result.answer.status === 404
    ? `the backend does not know this ${noun} (404)`
    : `backend answered ${result.answer.status}`;
}
