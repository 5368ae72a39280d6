import { sleep } from './clock.js';
import { getOrAdd } from './maps.js';

export interface BatchWriterOptions<T = unknown> {
  /** Names the writer in logs, /readyz, /status and the metrics. */
  name?: string;
  maxBatch: number;
  /** Wait between attempts after a failed write. */
  retryMs: number;
  /**
   * A failed write: `refused` false, it is retried as a whole after `retryMs`; `refused` true, the item
   * was refused by the database on its own (`onPoison` absent) and is set aside.
   */
  onError: (err: unknown, items: number, refused?: boolean) => void;
  /**
   * An item the database refuses on its own, with a data error (SQLSTATE class 22 or 23: a value a column
   * cannot take, a constraint). The writer's owner decides what becomes of it: store it another way,
   * dead-letter it, log it. It then counts as written, and the items behind it go on. Without it, the item
   * is reported to `onError` and set aside. A data error thrown by `onPoison` itself is reported the same
   * way; any other error makes the writer retry, as for a failed write.
   */
  onPoison?: (item: T, err: unknown) => void | Promise<void>;
  signal: AbortSignal;
  /**
   * How long items gather before each write. Zero (the default) waits one event-loop turn, for writes
   * something waits on; bookkeeping that nothing waits on lingers longer and costs fewer round trips.
   */
  lingerMs?: number;
  /**
   * Like `lingerMs`, but only while busy: when the previous write carried more than one item and ended
   * less than this long ago. A steady trickle, or a pair that happens to meet, is written at once; a
   * sustained burst is written in fewer, larger batches, which saves both processes a round trip's
   * wake-ups per item.
   */
  busyLingerMs?: number;
  /** Called after each batch is written. */
  onWritten?: () => void;
}

/** A writer's state for /readyz, /status and the metrics. */
export interface WriterHealth {
  name: string;
  /** Since when (epoch ms) the writer retries a failed write, as a whole; undefined while it writes. */
  retryingSince: number | undefined;
  /** Failed attempts since the last write that went through. */
  failures: number;
  /** The last failure, as SQLSTATE and message. */
  lastError: string | undefined;
  /** Items refused by the database on their own and set aside (to `onPoison`) since start. */
  refused: number;
  pending: number;
}

/** Every writer, by the lifetime signal it was given: an engine's writers are those of its signal. */
const writers = new WeakMap<AbortSignal, Set<BatchWriter<never>>>();

/** The health of every writer built with `signal` (an engine passes its lifetime signal to all of them). */
export function writersOf(signal: AbortSignal): WriterHealth[] {
  return [...(writers.get(signal) ?? [])].map((w) => w.health);
}

/**
 * SQLSTATE classes 22 (data exception: a NUL in text, a value out of range) and 23 (integrity constraint
 * violation): the statement's data is at fault, so writing the same batch again fails again.
 */
export function isDataError(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' && code.length === 5 && (code.startsWith('22') || code.startsWith('23'));
}

function describe(err: unknown): string {
  const e = err as { code?: unknown; message?: unknown } | null;
  const message = String(e?.message ?? err).slice(0, 300);
  return typeof e?.code === 'string' ? `${e.code}: ${message}` : message;
}

/**
 * Collects items and writes them in batches, one write at a time, so a burst costs one round trip
 * instead of one per item.
 *
 * A batch that fails with a data error (`isDataError`) is split in halves, and each half written on its
 * own, until the item at fault stands alone: that item goes to `onPoison`, and the rest are written. Any
 * other failure (the connection, the server) is retried, as a whole, until it succeeds or the signal
 * aborts; `health` shows it meanwhile. Items never written stay unsettled and are caught up on the next
 * start. `write` must be one statement (or a transaction), so that a failed write wrote nothing.
 */
export class BatchWriter<T> {
  private queue: T[] = [];
  private running = false;
  private lastWriteEnd = Number.NEGATIVE_INFINITY;
  private lastBatchSize = 0;
  private idleWaiters: (() => void)[] = [];
  /** Items pushed and items written so far, for pushAndWait(). */
  private pushed = 0;
  private written = 0;
  private writeWaiters: { seq: number; resolve: (written: boolean) => void }[] = [];
  /** Set by flush() until the queue is empty: write without lingering. */
  private hurry = false;
  /** Ends the current linger early. */
  private wake: (() => void) | undefined;
  private retryingSince: number | undefined;
  private failures = 0;
  private lastError: string | undefined;
  private refused = 0;

  constructor(
    private readonly write: (items: T[]) => Promise<void>,
    private readonly opts: BatchWriterOptions<T>,
  ) {
    opts.signal.addEventListener('abort', () => this.wake?.(), { once: true });
    getOrAdd(writers, opts.signal, () => new Set()).add(this as unknown as BatchWriter<never>);
  }

  get health(): WriterHealth {
    return {
      name: this.opts.name ?? 'writer',
      retryingSince: this.retryingSince,
      failures: this.failures,
      lastError: this.lastError,
      refused: this.refused,
      pending: this.queue.length,
    };
  }

  get pending(): number {
    return this.queue.length;
  }

  push(item: T): void {
    this.queue.push(item);
    this.pushed += 1;
    // A full batch need not wait for the rest of a linger.
    if (this.queue.length >= this.opts.maxBatch) this.wake?.();
    if (!this.running) void this.drain();
  }

  /**
   * Pushes one item; resolves true once it is written (or, refused by the database on its own, handed to
   * `onPoison`), false if the writer stopped first.
   */
  pushAndWait(item: T): Promise<boolean> {
    // Waiting before the push: a writer already stopped ends its drain inside push(), and must find it.
    const seq = this.pushed + 1;
    const written = new Promise<boolean>((resolve) => this.writeWaiters.push({ seq, resolve }));
    this.push(item);
    return written;
  }

  /** Writes what is queued without lingering; resolves when it is written (or the writer was stopped). */
  flush(): Promise<void> {
    // Not running means nothing is queued (push starts a drain).
    if (this.running) {
      this.hurry = true;
      this.wake?.();
    }
    return this.idle();
  }

  /** Resolves when everything queued so far is written (or the writer was stopped). */
  idle(): Promise<void> {
    if (!this.running && this.queue.length === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  private async drain(): Promise<void> {
    this.running = true;
    while (this.queue.length > 0 && !this.opts.signal.aborted) {
      await this.gather();
      const batch = this.queue.slice(0, this.opts.maxBatch);
      if (this.opts.signal.aborted) break;
      try {
        await this.writeOrSplit(batch);
        this.lastWriteEnd = performance.now();
        this.lastBatchSize = batch.length;
      } catch (err) {
        // Not the data: the connection or the server. Whatever of the batch is not written yet (all of it,
        // unless a split was under way) is tried again, as a whole.
        this.retryingSince ??= Date.now();
        this.failures += 1;
        this.lastError = describe(err);
        this.opts.onError(err, Math.min(batch.length, this.queue.length));
        await sleep(this.opts.retryMs, this.opts.signal);
      }
    }
    this.running = false;
    this.hurry = false;
    if (this.opts.signal.aborted) for (const w of this.writeWaiters.splice(0)) w.resolve(false);
    for (const w of this.idleWaiters.splice(0)) w();
  }

  /**
   * Writes `items` (the front of the queue); on a data error, each half on its own, down to the one item at
   * fault, which goes to `onPoison`. Settles what it wrote as it goes, so that a failure of another kind
   * midway (thrown) leaves only the rest queued.
   */
  private async writeOrSplit(items: T[]): Promise<void> {
    try {
      await this.write(items);
    } catch (err) {
      if (!isDataError(err)) throw err;
      if (items.length > 1) {
        const half = Math.ceil(items.length / 2);
        await this.writeOrSplit(items.slice(0, half));
        await this.writeOrSplit(items.slice(half));
        return;
      }
      await this.setAside(items[0] as T, err);
    }
    this.settle(items.length);
  }

  /** One item the database refused on its own: its owner's to handle, then the writer goes on. */
  private async setAside(item: T, err: unknown): Promise<void> {
    this.refused += 1;
    if (!this.opts.onPoison) {
      this.opts.onError(err, 1, true);
      return;
    }
    try {
      await this.opts.onPoison(item, err);
    } catch (again) {
      if (!isDataError(again)) throw again;
      this.opts.onError(again, 1, true);
    }
  }

  /** The first `n` queued items are written (or set aside). */
  private settle(n: number): void {
    this.queue.splice(0, n);
    this.written += n;
    this.retryingSince = undefined;
    this.failures = 0;
    this.opts.onWritten?.();
    while (this.writeWaiters.length > 0 && (this.writeWaiters[0] as { seq: number }).seq <= this.written) {
      this.writeWaiters.shift()?.resolve(true);
    }
  }

  /** Lets a burst gather before a write: one event-loop turn, or the linger while there is room for more. */
  private async gather(): Promise<void> {
    const { busyLingerMs, lingerMs, maxBatch, signal } = this.opts;
    const busy =
      busyLingerMs && this.lastBatchSize > 1 && performance.now() - this.lastWriteEnd < busyLingerMs;
    const linger = busy ? busyLingerMs : lingerMs;
    if (linger && !this.hurry && !signal.aborted && this.queue.length < maxBatch) {
      // A plain timer and its resolver: ending a linger early happens on most full batches, and an
      // AbortController would build an abort error each time.
      await new Promise<void>((resolve) => {
        const end = () => {
          clearTimeout(timer);
          this.wake = undefined;
          resolve();
        };
        const timer = setTimeout(end, linger);
        this.wake = end;
      });
    } else {
      await new Promise<void>((resolve) => setImmediate(resolve));
    }
  }
}
