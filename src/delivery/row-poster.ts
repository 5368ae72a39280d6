import { setMaxListeners } from 'node:events';
import type { CircuitBreakerPolicy } from 'cockatiel';
import type { BackendClient } from './backend-client.js';
import { type DeliveryOptions, type DeliveryResult, deliver, type RouteGuard } from './policy.js';

/** One backend: its client, its circuit breaker and its route state. */
export interface Backend {
  client: BackendClient;
  breaker: CircuitBreakerPolicy;
  route?: RouteGuard;
}

/**
 * What a row's post is, for one kind of row: the lane (bulkhead) it waits in, the route it goes to, its
 * body and its Idempotency-Key. A reading and a logbook entry differ here, and nowhere in the machinery.
 */
export interface PostShape<T> {
  /** The reader it belongs to (a pump or a logbook): its lane, its backend. */
  lane(item: T): string;
  route(item: T): string;
  body(item: T): string;
  key(item: T): string;
  /** A retryable failure, before the wait for the next attempt. */
  retried?: (item: T) => void;
}

export interface RowPosterOptions<T> {
  /** Each lane's backend, by the lane's name (`shape.lane`). */
  clients: Map<string, Backend>;
  shape: PostShape<T>;
  concurrency: number;
  maxAttempts: number;
  retryBaseMs: number;
  retryMaxMs: number;
  onDone: (item: T, result: DeliveryResult) => void;
  onError?: (err: Error, item: T) => void;
  /** Whether another post may start now; when it turns true again, call resume(). */
  mayStart?: () => boolean;
}

/**
 * One backend's share of the poster: its own queue, its posts in flight, and the delivery options its
 * posts share (built once, not per post).
 */
interface Lane<T> {
  client: BackendClient;
  delivery: DeliveryOptions;
  /** Its posts not started yet, from `head` on; a slot below `head` is emptied as its post starts. */
  queue: (T | undefined)[];
  head: number;
  active: number;
  /** Waiting in `turns` for a slot. */
  inTurns: boolean;
}

/**
 * Posts each row on its own to its route, with bounded concurrency and a bounded retry budget. Enqueueing
 * never waits: the notification loop is never blocked by HTTP.
 *
 * Bulkheads: each backend (lane) has a queue of its own, and the slots go to them in turns, round robin,
 * so one lane's backlog never waits in front of another's posts. A lane holds at most its share of the
 * slots, `ceil(concurrency / lanes)`, however long its posts take: a backend that fails, hangs or refuses
 * its route (whose posts retry, wait on an open circuit or hold) ties up its own slots only.
 */
export class RowPoster<T> {
  private readonly lanes = new Map<string, Lane<T>>();
  /** Lanes with queued posts and a free slot of their own, in the order they get their next slot. */
  private turns: Lane<T>[] = [];
  private turnHead = 0;
  private queued = 0;
  private active = 0;
  private readonly perLane: number;
  private controller = new AbortController();
  private idleWaiters: (() => void)[] = [];

  constructor(private readonly o: RowPosterOptions<T>) {
    this.perLane = Math.max(1, Math.ceil(o.concurrency / Math.max(1, o.clients.size)));
    this.open();
  }

  /** Posts queued or in flight, all lanes. */
  get depth(): number {
    return this.queued + this.active;
  }

  /** One lane's posts queued or in flight. */
  depthOf(lane: string): number {
    const l = this.lanes.get(lane);
    return l ? l.queue.length - l.head + l.active : 0;
  }

  /** The most slots one lane may hold at once. */
  get slotsPerLane(): number {
    return this.perLane;
  }

  enqueue(item: T): void {
    const lane = this.lanes.get(this.o.shape.lane(item)) as Lane<T>;
    lane.queue.push(item);
    this.queued += 1;
    this.offerTurn(lane);
    this.pump();
  }

  /** Resolves when the queue is empty, or at once after abort(). */
  idle(): Promise<void> {
    if (this.depth === 0 || this.controller.signal.aborted) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /** Drops what is queued (not what is in flight); those rows stay unsettled. */
  clear(): void {
    for (const lane of this.lanes.values()) {
      this.queued -= lane.queue.length - lane.head;
      lane.queue = [];
      lane.head = 0;
    }
    this.turns = [];
    this.turnHead = 0;
    for (const lane of this.lanes.values()) lane.inTurns = false;
    this.wakeIfIdle();
  }

  /** Cancels what is queued and in flight; those rows stay unsettled and are caught up later. */
  abort(): void {
    this.controller.abort();
    this.clear();
    for (const w of this.idleWaiters.splice(0)) w();
  }

  /** After abort(): posts may be sent again (a logbook taken back), on a new signal. */
  reopen(): void {
    if (this.controller.signal.aborted) this.open();
  }

  /** Starts queued posts again after mayStart() said no. */
  resume(): void {
    if (!this.controller.signal.aborted) this.pump();
  }

  private open(): void {
    const { o } = this;
    this.controller = new AbortController();
    // Every post in flight listens on this one signal: its request, or its wait before a retry; with headroom.
    setMaxListeners(o.concurrency * 4 + 10, this.controller.signal);
    for (const [name, { client, breaker, route }] of o.clients) {
      const delivery: DeliveryOptions = {
        breaker,
        maxAttempts: o.maxAttempts,
        baseMs: o.retryBaseMs,
        maxMs: o.retryMaxMs,
        signal: this.controller.signal,
      };
      if (route) delivery.route = route;
      const lane = this.lanes.get(name);
      if (lane) lane.delivery = delivery;
      else this.lanes.set(name, { client, delivery, queue: [], head: 0, active: 0, inTurns: false });
    }
  }

  /** A lane with queued posts and a free slot of its own waits for its turn. */
  private offerTurn(lane: Lane<T>): void {
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
      const lane = this.turns[this.turnHead] as Lane<T>;
      this.turnHead += 1;
      lane.inTurns = false;
      const item = lane.queue[lane.head] as T;
      // Not kept by the queue once started: each lane held up to 1,024 posted rows until its next
      // compaction, 34 MB of the heap at 200 pumps (docs/performance.md).
      lane.queue[lane.head] = undefined;
      lane.head += 1;
      if (lane.head === lane.queue.length) {
        lane.queue = [];
        lane.head = 0;
      }
      lane.active += 1;
      this.queued -= 1;
      this.active += 1;
      // Its next post, if any, goes behind the other lanes waiting.
      this.offerTurn(lane);
      void this.post(lane, item);
    }
    if (this.turnHead > 1024 && this.turnHead * 2 > this.turns.length) {
      this.turns = this.turns.slice(this.turnHead);
      this.turnHead = 0;
    }
  }

  /** One row's post, to its end; then the next ones start. Never rejects. */
  private async post(lane: Lane<T>, item: T): Promise<void> {
    const { shape } = this.o;
    try {
      const json = shape.body(item);
      const route = shape.route(item);
      const key = shape.key(item);
      const retried = shape.retried;
      const delivery = retried ? { ...lane.delivery, onRetry: () => retried(item) } : lane.delivery;
      const result = await deliver((signal) => lane.client.post(route, json, key, signal), delivery);
      this.o.onDone(item, result);
    } catch (err) {
      // A failing callback must not become an unhandled rejection that ends the process.
      this.o.onError?.(err as Error, item);
    } finally {
      lane.active -= 1;
      this.active -= 1;
      if (lane.head > 1024 && lane.head * 2 > lane.queue.length) {
        lane.queue.splice(0, lane.head);
        lane.head = 0;
      }
      this.wakeIfIdle();
      if (!this.controller.signal.aborted) {
        this.offerTurn(lane);
        this.pump();
      }
    }
  }

  private wakeIfIdle(): void {
    if (this.depth === 0) for (const w of this.idleWaiters.splice(0)) w();
  }
}
