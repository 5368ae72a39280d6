import { sleep } from './clock.js';

export interface BatchWriterOptions {
  maxBatch: number;
  /** Wait between attempts after a failed write. */
  retryMs: number;
  onError: (err: unknown, items: number) => void;
  signal: AbortSignal;
  /**
   * How long a burst may gather before its first write. Zero (the default) waits one event-loop turn, for
   * writes something waits on; bookkeeping that nothing waits on lingers longer and costs fewer round trips.
   */
  lingerMs?: number;
  /**
   * Like `lingerMs`, but only while busy: when the previous write ended less than this long ago. A steady
   * trickle is written at once; a burst is written in fewer, larger batches, which saves both processes a
   * round trip's wake-ups per item.
   */
  busyLingerMs?: number;
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
  private idleWaiters: (() => void)[] = [];

  constructor(
    private readonly write: (items: T[]) => Promise<void>,
    private readonly opts: BatchWriterOptions,
  ) {}

  get pending(): number {
    return this.queue.length;
  }

  push(item: T): void {
    this.queue.push(item);
    if (!this.running) void this.drain();
  }

  /** Resolves when everything queued so far is written (or the writer was stopped). */
  idle(): Promise<void> {
    if (!this.running && this.queue.length === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  private async drain(): Promise<void> {
    this.running = true;
    // Let the current burst (one notification batch, one tick, or the linger) gather before the first write.
    const busy = this.opts.busyLingerMs && performance.now() - this.lastWriteEnd < this.opts.busyLingerMs;
    const linger = busy ? this.opts.busyLingerMs : this.opts.lingerMs;
    if (linger) await sleep(linger, this.opts.signal);
    else await new Promise<void>((resolve) => setImmediate(resolve));
    while (this.queue.length > 0 && !this.opts.signal.aborted) {
      const batch = this.queue.slice(0, this.opts.maxBatch);
      try {
        await this.write(batch);
        this.lastWriteEnd = performance.now();
        this.queue.splice(0, batch.length);
      } catch (err) {
        this.opts.onError(err, batch.length);
        await sleep(this.opts.retryMs, this.opts.signal);
      }
    }
    this.running = false;
    for (const w of this.idleWaiters.splice(0)) w();
  }
}
