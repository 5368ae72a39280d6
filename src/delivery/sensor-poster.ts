import { setMaxListeners } from 'node:events';
import type { CircuitBreakerPolicy } from 'cockatiel';
import { readingKey } from '../model/keys.js';
import { sensorPostBody } from '../model/payload.js';
import type { Reading } from '../model/reading.js';
import type { BackendClient } from './backend-client.js';
import { type DeliveryOptions, type DeliveryResult, deliver, type RouteGuard } from './policy.js';

/** One backend: its client, its circuit breaker and its route state. */
export interface Backend {
  client: BackendClient;
  breaker: CircuitBreakerPolicy;
  route?: RouteGuard;
}

export interface SensorPosterOptions {
  clients: Map<string, Backend>;
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
 * One backend's (pump's) share of the poster: its own queue, its posts in flight, and the delivery
 * options its posts share (built once, not per post).
 */
interface Lane {
  pump: string;
  client: BackendClient;
  delivery: DeliveryOptions;
  queue: Reading[];
  head: number;
  active: number;
  /** Waiting in `turns` for a slot. */
  inTurns: boolean;
}

/**
 * Posts each reading on its own to its sensor's endpoint, with bounded concurrency and a bounded retry
 * budget. Enqueueing never waits: the notification loop is never blocked by HTTP.
 *
 * Bulkheads: each backend (pump) has a queue of its own, and the slots go to them in turns, round robin,
 * so one pump's backlog never waits in front of another's posts. A pump holds at most its share of the
 * slots, `ceil(concurrency / pumps)`, however long its posts take: a backend that fails, hangs or refuses
 * its route (whose posts retry, wait on an open circuit or hold) ties up its own slots only.
 */
export class SensorPoster {
  private readonly lanes = new Map<string, Lane>();
  /** Lanes with queued posts and a free slot of their own, in the order they get their next slot. */
  private turns: Lane[] = [];
  private turnHead = 0;
  private queued = 0;
  private active = 0;
  private readonly perLane: number;
  private readonly controller = new AbortController();
  private idleWaiters: (() => void)[] = [];

  constructor(private readonly o: SensorPosterOptions) {
    // Every post in flight listens on this one signal: its request, or its wait before a retry; with headroom.
    setMaxListeners(o.concurrency * 4 + 10, this.controller.signal);
    for (const [pump, { client, breaker, route }] of o.clients) {
      const delivery: DeliveryOptions = {
        breaker,
        maxAttempts: o.maxAttempts,
        baseMs: o.retryBaseMs,
        maxMs: o.retryMaxMs,
        signal: this.controller.signal,
      };
      if (route) delivery.route = route;
      this.lanes.set(pump, { pump, client, delivery, queue: [], head: 0, active: 0, inTurns: false });
    }
    this.perLane = Math.max(1, Math.ceil(o.concurrency / Math.max(1, this.lanes.size)));
  }

  /** Posts queued or in flight, all pumps. */
  get depth(): number {
    return this.queued + this.active;
  }

  /** One pump's posts queued or in flight. */
  depthOf(pump: string): number {
    const lane = this.lanes.get(pump);
    return lane ? lane.queue.length - lane.head + lane.active : 0;
  }

  /** The most slots one pump may hold at once. */
  get slotsPerPump(): number {
    return this.perLane;
  }

  enqueue(r: Reading): void {
    const lane = this.lanes.get(r.pump) as Lane;
    lane.queue.push(r);
    this.queued += 1;
    this.offerTurn(lane);
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

  /** A lane with queued posts and a free slot of its own waits for its turn. */
  private offerTurn(lane: Lane): void {
    if (lane.inTurns || lane.active >= this.perLane || lane.head >= lane.queue.length) return;
    lane.inTurns = true;
    this.turns.push(lane);
  }

  private pump(): void {
    while (
      this.active < this.o.concurrency &&
      this.turnHead < this.turns.length &&
      (this.o.mayStart?.() ?? true)
    ) {
      const lane = this.turns[this.turnHead] as Lane;
      this.turnHead += 1;
      lane.inTurns = false;
      const r = lane.queue[lane.head] as Reading;
      lane.head += 1;
      lane.active += 1;
      this.queued -= 1;
      this.active += 1;
      // Its next post, if any, goes behind the other lanes waiting.
      this.offerTurn(lane);
      void this.post(lane, r);
    }
    if (this.turnHead > 1024 && this.turnHead * 2 > this.turns.length) {
      this.turns = this.turns.slice(this.turnHead);
      this.turnHead = 0;
    }
  }

  /** One reading's post, to its end; then the next ones start. Never rejects. */
  private async post(lane: Lane, r: Reading): Promise<void> {
    try {
      const json = sensorPostBody(r.id, r.valor);
      const key = readingKey(r);
      const result = await deliver(
        (signal) => lane.client.post(r.sensor.endpoint, json, key, signal),
        lane.delivery,
      );
      this.o.onDone(r, result);
    } catch (err) {
      // A failing callback must not become an unhandled rejection that ends the process.
      this.o.onError?.(err as Error, r);
    } finally {
      lane.active -= 1;
      this.active -= 1;
      if (lane.head > 1024 && lane.head * 2 > lane.queue.length) {
        lane.queue.splice(0, lane.head);
        lane.head = 0;
      }
      if (this.depth === 0) for (const w of this.idleWaiters.splice(0)) w();
      if (!this.controller.signal.aborted) {
        this.offerTurn(lane);
        this.pump();
      }
    }
  }
}
