import { sleep } from './clock.js';

export interface BatchWriterOptions {
  maxBatch: number;
  /** Wait between attempts after a failed write. */
  retryMs: number;
  onError: (err: unknown, items: number) => void;
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

/**
 * Collects items and writes them in batches, one write at a time, so a burst costs one round trip
 * instead of one per item. A failed write is retried (the database may be restarting) until it
 * succeeds or the signal aborts; items never written stay unsettled and are caught up on the next start.
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

  constructor(
    private readonly write: (items: T[]) => Promise<void>,
    private readonly opts: BatchWriterOptions,
  ) {
    opts.signal.addEventListener('abort', () => this.wake?.(), { once: true });
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

  /** Pushes one item; resolves true once it is written, false if the writer stopped first. */
  pushAndWait(item: T): Promise<boolean> {
    this.push(item);
    const seq = this.pushed;
    return new Promise((resolve) => this.writeWaiters.push({ seq, resolve }));
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
        await this.write(batch);
        this.lastWriteEnd = performance.now();
        this.lastBatchSize = batch.length;
        this.queue.splice(0, batch.length);
        this.written += batch.length;
        this.opts.onWritten?.();
        while (
          this.writeWaiters.length > 0 &&
          (this.writeWaiters[0] as { seq: number }).seq <= this.written
        ) {
          this.writeWaiters.shift()?.resolve(true);
        }
      } catch (err) {
        this.opts.onError(err, batch.length);
        await sleep(this.opts.retryMs, this.opts.signal);
      }
    }
    this.running = false;
    this.hurry = false;
    if (this.opts.signal.aborted) for (const w of this.writeWaiters.splice(0)) w.resolve(false);
    for (const w of this.idleWaiters.splice(0)) w();
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
