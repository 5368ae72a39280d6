import { EventEmitter } from 'node:events';
import type pg from 'pg';
import type { Logger } from 'pino';
import { readingKey } from '../model/keys.js';
import { notificationPayload, sensorPostBody } from '../model/payload.js';
import type { Reading } from '../model/reading.js';
import type { Decoder } from '../source/decode.js';
import { describePgError } from '../store/db.js';
import type { DeadLetter } from '../store/dead-letters.js';
import { deleteDeferred, fetchDeferredEach, insertDeferred } from '../store/deferred-posts.js';
import { recordSettledPosts } from '../store/sensor-posts.js';
import { BatchWriter } from '../util/batch.js';
import { Mode } from '../util/mode.js';
import { breakerState, type DeliveryResult } from './policy.js';
import {
  budgetOf,
  POST_LEDGER_LINGER_MS,
  POST_LEDGER_MAX_BATCH,
  PostQueue,
  type RowKind,
} from './post-queue.js';
import type { Backend } from './row-poster.js';

/** A reading's per-sensor post: to its sensor's endpoint on its pump's backend, under its reading key. */
export const READING_POSTS: RowKind<Reading> = {
  what: 'per-sensor POST',
  noun: 'row',
  lane: (r) => r.pump,
  route: (r) => r.sensor.endpoint,
  body: (r) => sensorPostBody(r.id, r.valor),
  key: readingKey,
  record: (r) => ({ pump: r.pump, table: r.sensor.table, id: r.id }),
  letter: (r) => ({
    kind: 'sensor_post',
    pump: r.pump,
    channel: r.sensor.channel,
    payload: notificationPayload(r),
    idempotencyKey: readingKey(r),
  }),
};
/** How long deferrals and removals of drained deferred posts gather before each write. */
const BOOKKEEPING_LINGER_MS = 100;

export interface PostPipelineEvents {
  /** A post is settled: answered 200, or given up and dead-lettered (`result` says which). */
  settled: [r: Reading, result: DeliveryResult];
  /** The in-memory queue filled up: posts go to the database (true), or they are all back (false). */
  deferring: [on: boolean, queued: number];
}

export interface PostPipelineOptions {
  pool: pg.Pool;
  logger: Logger;
  signal: AbortSignal;
  backends: Map<string, Backend>;
  decoder: Decoder;
  /**
   * Per-sensor posts held in memory; beyond it they wait in pump_monitor.deferred_posts. Each pump may
   * hold its share, `ceil(maxQueued / pumps)`, so a pump whose backend fails fills its own part only.
   */
  maxQueued: number;
  concurrency: number;
  maxAttempts: number;
  retryBaseMs: number;
  retryMaxMs: number;
  /** Writes a dead letter, then calls `settled` once it is on record. */
  deadLetter: (letter: DeadLetter, settled: () => void) => void;
  /** The pumps whose deferred posts this replica drains: those it owns. */
  owned: () => string[];
}

/**
 * Every per-sensor POST: readings go through the per-row delivery queue (PostQueue: bulkheads per pump,
 * retries, breaker, settlement, the settled-post records), and past its bound to the database. Each pump
 * may hold its share of the queue in memory, so a pump whose backend fails fills its own part only. Posts
 * that did not fit wait in pump_monitor.deferred_posts and are drained back, each pump's while its part is
 * under half full, on a timer and whenever a finished post takes its pump's part below a fifth. Only pumps
 * that may have posts waiting there are read (`waiting`): a pump whose backend fails, its part full, costs
 * the others no read. Owns the queue, the two deferral writers and the drain timer. A post deferred is
 * settled (its ticket's post part, its record) when it is on record in deferred_posts; one read back is
 * removed from there once answered or dead-lettered. Never blocks the caller.
 */
export class PostPipeline extends EventEmitter<PostPipelineEvents> {
  private readonly queue: PostQueue<Reading>;
  private readonly defer: BatchWriter<Reading>;
  private readonly drained: BatchWriter<number>;
  /** Look for every owned pump's deferred posts on the next drain: a previous run may have left some. */
  private lookAll = true;
  /** Pumps whose deferred posts may not all be back in memory yet. */
  private readonly waiting = new Set<string>();
  /**
   * in-memory: every post fits in the queue; deferring: the queue overflowed and the posts it sent to the
   * database are not all back yet (`waiting` alone does not say it: it is also set to look for posts other
   * processes queued); stopped: aborted, nothing more is sent.
   */
  private readonly mode = new Mode<PipelineMode>('post pipeline', 'in-memory', PIPELINE_MODES);
  private draining = false;
  /** Counts deferrals, so that a read that overlapped one does not conclude the table is empty. */
  private deferrals = 0;
  /** Per pump: the last deferred post read back. */
  private readonly cursors = new Map<string, number>();
  /** The most posts one pump may hold in memory. */
  private readonly perPump: number;
  /** Deferred posts back in the queue and not yet removed from the table. */
  private readonly inFlight = new Set<number>();
  private timer: NodeJS.Timeout | undefined;
  private lookAgain: NodeJS.Timeout | undefined;

  constructor(private readonly o: PostPipelineOptions) {
    super();
    this.perPump = Math.max(1, Math.ceil(o.maxQueued / Math.max(1, o.backends.size)));
    const onError = (what: string) => (err: unknown, n: number, refused?: boolean) =>
      refused
        ? o.logger.error({ err: describePgError(err) }, `${what}: the database refused one item; set aside`)
        : o.logger.warn({ err: describePgError(err), items: n }, `${what} failed; retrying`);
    this.queue = new PostQueue<Reading>({
      name: 'sensor_posts',
      logger: o.logger,
      signal: o.signal,
      kind: READING_POSTS,
      backends: o.backends,
      concurrency: o.concurrency,
      ...budgetOf(o),
      recordPosts: (posts) => recordSettledPosts(o.pool, posts),
      deadLetter: o.deadLetter,
      finished: (_r, deferredId) => {
        this.inFlight.delete(deferredId);
        this.drained.push(deferredId);
      },
      settled: (r, result) => {
        if (this.waiting.has(r.pump) && this.queue.depthOf(r.pump) < this.perPump / 5) void this.drain();
        this.emit('settled', r, result);
      },
      // Sent deferred posts whose removal is not written yet are sent again after a crash, too.
      unwritten: () => this.drained.pending,
    });
    this.defer = new BatchWriter((rs) => this.writeDeferred(rs), {
      name: 'deferred_posts',
      lingerMs: BOOKKEEPING_LINGER_MS,
      maxBatch: 1_000,
      retryMs: 500,
      onError: onError('deferring per-sensor posts'),
      // A post the database will not keep for later is a dead letter now, with the reason.
      onPoison: (r, err) =>
        this.queue.reject(r, `not deferred: the database refused it (${describePgError(err)})`),
      signal: o.signal,
    });
    this.drained = new BatchWriter((ids) => deleteDeferred(o.pool, ids), {
      name: 'deferred_posts_sent',
      lingerMs: POST_LEDGER_LINGER_MS,
      maxBatch: POST_LEDGER_MAX_BATCH,
      retryMs: 500,
      onError: onError('removing sent deferred posts'),
      signal: o.signal,
      onWritten: () => this.queue.resume(),
    });
  }

  /** Posts queued or in flight in memory. */
  get depth(): number {
    return this.queue.depth;
  }

  /** Posts are waiting in the database because the queue was full (`/status`'s `overloaded`). */
  get deferring(): boolean {
    return this.mode.is('deferring');
  }

  /**
   * Backpressure for catch-up: above 1 when the posts in memory pass a tenth of the queue. Only the posts
   * of pumps whose backend takes them now count: a pump whose backend fails or refuses its route has its
   * posts deferred past its share, and must not stall the others' catch-up.
   */
  load(): number {
    let depth = 0;
    for (const [pump, b] of this.o.backends) {
      if (b.route?.fault || breakerState(b.breaker) !== 'closed') continue;
      depth += this.queue.depthOf(pump);
    }
    return depth / (this.o.maxQueued / 10);
  }

  start(): void {
    this.timer ??= setInterval(() => void this.drain(), 500);
    // Other processes defer posts too (dead-letters retry, replay --posts): look for them now and then.
    this.lookAgain ??= setInterval(() => {
      this.lookAll = true;
    }, 5_000);
  }

  /** One pump's posts queued or in flight in memory. */
  depthOf(pump: string): number {
    return this.queue.depthOf(pump);
  }

  /**
   * Queues a reading's post; past the in-memory limit (all pumps', or its pump's share) it is deferred to
   * the database. Never waits.
   */
  submit(r: Reading): void {
    if (this.queue.depth < this.o.maxQueued && this.queue.depthOf(r.pump) < this.perPump) {
      this.queue.submit(r);
      return;
    }
    if (this.mode.is('in-memory')) {
      this.mode.to('deferring');
      this.emit('deferring', true, this.queue.depth);
    }
    this.waiting.add(r.pump);
    this.defer.push(r);
  }

  /** A pump was taken over: its deferred posts may lie below the cursor used so far. */
  rewind(): void {
    this.cursors.clear();
    this.lookAll = true;
  }

  /** Resolves when nothing is queued or in flight in memory. */
  idle(): Promise<void> {
    return this.queue.idle();
  }

  /** Writes the bookkeeping now (a graceful stop, a hand-over). */
  async flush(): Promise<void> {
    await Promise.all([this.defer.flush(), this.drained.flush(), this.queue.flush()]);
  }

  /** Cancels what is queued and in flight; those readings stay unsettled and are caught up later. */
  abort(): void {
    this.mode.to('stopped');
    clearInterval(this.timer);
    clearInterval(this.lookAgain);
    this.timer = undefined;
    this.lookAgain = undefined;
    this.queue.abort();
  }

  private async writeDeferred(readings: Reading[]): Promise<void> {
    await insertDeferred(
      this.o.pool,
      readings.map((r) => ({
        pump: r.pump,
        channel: r.sensor.channel,
        payload: notificationPayload(r),
      })),
    );
    this.deferrals += 1;
    for (const r of readings) this.waiting.add(r.pump);
    for (const r of readings) this.queue.settle(r);
  }

  /**
   * Moves deferred posts back into the queue: each pump's while its own part is under half full, within
   * the whole queue's bound, each from its own cursor, in one read for all of them.
   */
  private async drain(): Promise<void> {
    if (this.draining) return;
    if (this.lookAll) {
      this.lookAll = false;
      for (const pump of this.o.owned()) this.waiting.add(pump);
    }
    if (this.waiting.size === 0) return;
    this.draining = true;
    try {
      const owned = new Set(this.o.owned());
      // A pump given up since: its posts are its new owner's to drain.
      for (const pump of this.waiting) if (!owned.has(pump)) this.waiting.delete(pump);
      for (let round = 0; round < 100 && !this.o.signal.aborted; round++) {
        // The whole queue's bound, not half of it: one pump whose backend fails may hold its whole share,
        // and the others' deferred posts must still come back (each pump's own half below is the headroom).
        const room = this.o.maxQueued - this.queue.depth;
        if (room < 1) break;
        const wants: { pump: string; afterId: number; limit: number }[] = [];
        for (const pump of this.waiting) {
          const own = Math.min(room, this.perPump / 2 - this.queue.depthOf(pump));
          if (own >= 1) {
            wants.push({
              pump,
              afterId: this.cursors.get(pump) ?? 0,
              limit: Math.min(2_000, Math.floor(own)),
            });
          }
        }
        if (wants.length === 0) break;
        const deferrals = this.deferrals;
        const posts = await fetchDeferredEach(this.o.pool, wants);
        const got = new Map<string, number>();
        for (const d of posts) {
          got.set(d.pump, (got.get(d.pump) ?? 0) + 1);
          this.cursors.set(d.pump, Math.max(this.cursors.get(d.pump) ?? 0, d.id));
          if (this.inFlight.has(d.id)) continue;
          this.inFlight.add(d.id);
          const decoded = this.o.decoder.decode(d.channel, d.payload, Date.now(), 'catchup', d.pump);
          if (decoded.ok) this.queue.submit({ ...decoded.reading, deferredId: d.id, key: d.key });
          else this.drained.push(d.id);
        }
        let more = false;
        for (const w of wants) {
          if ((got.get(w.pump) ?? 0) >= w.limit) more = true;
          // Read to its end, and nothing deferred meanwhile: this pump has nothing more waiting.
          else if (deferrals === this.deferrals) this.waiting.delete(w.pump);
        }
        if (!more) break;
      }
      if (this.waiting.size === 0 && !this.lookAll && this.mode.is('deferring')) {
        this.mode.to('in-memory');
        this.emit('deferring', false, this.queue.depth);
      }
    } catch (err) {
      this.o.logger.warn({ err: describePgError(err) }, 'reading deferred posts failed; will retry');
    } finally {
      this.draining = false;
    }
  }
}

export type PipelineMode = 'in-memory' | 'deferring' | 'stopped';

/** The pipeline's transitions: it defers while the queue overflows, and comes back once all are read back. */
export const PIPELINE_MODES: { readonly [K in PipelineMode]: readonly PipelineMode[] } = {
  'in-memory': ['deferring', 'stopped'],
  deferring: ['in-memory', 'stopped'],
  stopped: [],
};
