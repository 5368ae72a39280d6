import { setMaxListeners } from 'node:events';
import type { CircuitBreakerPolicy } from 'cockatiel';
import type { Reading } from '../model/reading.js';
import type { BackendClient } from './backend-client.js';
import { type DeliveryOptions, type DeliveryResult, deliver } from './policy.js';

export interface SensorPosterOptions {
  clients: Map<string, { client: BackendClient; breaker: CircuitBreakerPolicy }>;
  concurrency: number;
  maxAttempts: number;
  retryBaseMs: number;
  retryMaxMs: number;
  onDone: (r: Reading, result: DeliveryResult) => void;
  onError?: (err: Error, r: Reading) => void;
  /** Whether another post may start now; when it turns true again, call resume(). */
  mayStart?: () => boolean;
}

/**
 * The per-sensor Idempotency-Key: one row of one table (`rd-<table>-<id>`), unless the post carries its
 * own (a replay's). A row of a table several pumps read is posted once per pump, so its key names the
 * pump: `rd-<pump>-<table>-<id>`.
 */
export function readingKey(r: Reading): string {
  return r.key ?? (r.shared ? `rd-${r.pump}-${r.sensor.table}-${r.id}` : `rd-${r.sensor.table}-${r.id}`);
}

interface Target {
  client: BackendClient;
  delivery: DeliveryOptions;
}

/**
 * Posts each reading on its own to its sensor's endpoint, with bounded concurrency and a bounded retry
 * budget. Enqueueing never waits: the notification loop is never blocked by HTTP.
 */
export class SensorPoster {
  private readonly queue: Reading[] = [];
  private head = 0;
  private active = 0;
  private readonly controller = new AbortController();
  private idleWaiters: (() => void)[] = [];

  /** Each pump's client, and the delivery options its posts share (built once, not per post). */
  private readonly targets = new Map<string, Target>();

  constructor(private readonly o: SensorPosterOptions) {
    // Every post in flight listens on this one signal: its request, or its wait before a retry; with headroom.
    setMaxListeners(o.concurrency * 4 + 10, this.controller.signal);
    for (const [pump, { client, breaker }] of o.clients) {
      this.targets.set(pump, {
        client,
        delivery: {
          breaker,
          maxAttempts: o.maxAttempts,
          baseMs: o.retryBaseMs,
          maxMs: o.retryMaxMs,
          signal: this.controller.signal,
        },
      });
    }
  }

  get depth(): number {
    return this.queue.length - this.head + this.active;
  }

  enqueue(r: Reading): void {
    this.queue.push(r);
    this.pump();
  }

  /** Resolves when the queue is empty, or at once after abort(). */
  idle(): Promise<void> {
    if (this.depth === 0 || this.controller.signal.aborted) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /** Cancels what is queued and in flight; those readings stay unsettled and are caught up later. */
  abort(): void {
    this.controller.abort();
    for (const w of this.idleWaiters.splice(0)) w();
  }

  /** Starts queued posts again after mayStart() said no. */
  resume(): void {
    if (!this.controller.signal.aborted) this.pump();
  }

  private pump(): void {
    while (
      this.active < this.o.concurrency &&
      this.head < this.queue.length &&
      (this.o.mayStart?.() ?? true)
    ) {
      const r = this.queue[this.head] as Reading;
      this.head += 1;
      this.active += 1;
      void this.post(r);
    }
  }

  /** One reading's post, to its end; then the next ones start. Never rejects. */
  private async post(r: Reading): Promise<void> {
    try {
      const target = this.targets.get(r.pump) as Target;
      // The body is two numbers (decode accepts only finite ones): written, not serialised.
      const json = `{"id_sensor":${r.id},"valor":${r.valor}}`;
      const key = readingKey(r);
      const result = await deliver(
        (signal) => target.client.post(r.sensor.endpoint, json, key, signal),
        target.delivery,
      );
      this.o.onDone(r, result);
    } catch (err) {
      // A failing callback must not become an unhandled rejection that ends the process.
      this.o.onError?.(err as Error, r);
    } finally {
      this.active -= 1;
      if (this.head > 1024 && this.head * 2 > this.queue.length) {
        this.queue.splice(0, this.head);
        this.head = 0;
      }
      if (this.depth === 0) for (const w of this.idleWaiters.splice(0)) w();
      if (!this.controller.signal.aborted) this.pump();
    }
  }
}
