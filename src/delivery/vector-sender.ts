import type { CircuitBreakerPolicy } from 'cockatiel';
import type pg from 'pg';
import type { Logger } from 'pino';
import type { PumpConfig } from '../config/env.js';
import { parseReply } from '../model/payload.js';
import { inTransaction } from '../store/db.js';
import { bareDeadLetter, type DeadLetter, insertDeadLetters } from '../store/dead-letters.js';
import { fetchPending, markDelivered, type OutboxRow } from '../store/outbox.js';
import { isDataError } from '../util/batch.js';
import { sleep } from '../util/clock.js';
import { Mode } from '../util/mode.js';
import type { BackendClient } from './backend-client.js';
import { deliver, type RouteGuard } from './policy.js';

export interface VectorSenderOptions {
  pump: PumpConfig;
  pool: pg.Pool;
  client: BackendClient;
  breaker: CircuitBreakerPolicy;
  /** The backend's route state: a refused route (3xx, 401, 403) holds the vector pending, never dead. */
  route?: RouteGuard;
  retryBaseMs: number;
  retryMaxMs: number;
  logger: Logger;
  /** Told of the dead letter a rejected vector leaves, once it is on record (written here, with its row). */
  deadLetters: { stored(letter: DeadLetter): void };
  /** Called after each vector leaves the outbox. */
  onResult: (row: OutboxRow, result: SendResult) => void;
  /**
   * Records a delivered row in the outbox (batched by the caller; it may outlive this sender). Resolves
   * false when the engine stopped before it was written.
   */
  recordSent: (sent: { id: number; attempts: number; status: number }) => Promise<boolean>;
  /**
   * The window (VECTOR_WINDOW, at least 1): how many vectors may be sent whose delivery is not yet on
   * record, the one in flight included. A crash therefore leaves at most this many per pump to be sent
   * again. 1 waits for each record before the next vector. Default 1.
   */
  window?: number;
  /** How often to look at the outbox without a wake-up (rows left by a previous run or replica). */
  pollMs?: number;
  batch?: number;
}

export type SendResult =
  | { kind: 'sent'; status: number; prediccion: number | undefined; attempts: number }
  | { kind: 'dead'; status: number; body: string; attempts: number };

export type SenderMode = 'sending' | 'draining' | 'halting' | 'stopped';

/** The sender's transitions: a drain may turn into a halt (a hand-over during a stop), never back. */
export const SENDER_MODES: { readonly [K in SenderMode]: readonly SenderMode[] } = {
  sending: ['draining', 'halting', 'stopped'],
  draining: ['halting', 'stopped'],
  halting: ['stopped'],
  stopped: [],
};

/** Rows handed over in memory beyond this are dropped and read back from the outbox instead. */
const MAX_OFFERED = 1_000;

/**
 * Sends one pump's outbox in order, one request at a time, retrying each vector until the backend takes
 * it (a head-of-line wait during an outage keeps the order). The outbox, not memory, holds the backlog,
 * so an outage of any length costs no memory.
 *
 * The requests never overlap: the next vector is sent once the backend has answered the one before, so
 * the backend sees a pump's vectors in outbox order even when one of them is retried. What overlaps is
 * their records: up to `window` vectors may be sent before their deliveries are on record (written in
 * batches by the caller), and the next one waits for room. A rejected vector waits until every delivery
 * before it is on record, then is recorded with its dead letter, so the records follow the sends.
 *
 * Rows just inserted are handed over in memory (`offer`), so the common case costs no read. The outbox is
 * read at start, whenever the hand-over overflowed, and now and then (a row whose insert was retried
 * after a lost answer is found that way). The last ids sent, remembered from the answer on, keep a row
 * both offered and read (or read again while its record waits) from being sent twice.
 */
export class VectorSender {
  private wakeUp: (() => void) | undefined;
  private woken = false;
  private readonly stopController = new AbortController();
  /**
   * sending: the outbox is sent as it fills; draining (stop): until it is empty; halting (halt, a
   * hand-over): after the vector in flight; stopped: the loop has ended.
   */
  private readonly mode = new Mode<SenderMode>('vector sender', 'sending', SENDER_MODES);
  private loop: Promise<void> | undefined;
  private offered: OutboxRow[] = [];
  private mustRead = true;
  private lastRead = 0;
  /** The ids this sender sent last, so a row both offered and read is sent once. */
  private readonly recent = new Set<number>();
  private readonly window: number;
  /** Vectors answered whose record is not written yet (the window's use, besides the one in flight). */
  private unrecorded = 0;
  /** Woken when a record is written (or refused by a stopping engine). */
  private recordDone: (() => void) | undefined;
  /** A record was not written because the engine stopped: send nothing more. */
  private recordLost = false;

  constructor(private readonly o: VectorSenderOptions) {
    const w = o.window ?? 1;
    if (!Number.isInteger(w) || w < 1)
      throw new Error(`vector sender: window must be an integer >= 1, got ${w}`);
    this.window = w;
  }

  /** Vectors answered whose delivery record is not written yet: never more than the window. */
  get unrecordedCount(): number {
    return this.unrecorded;
  }

  get state(): SenderMode {
    return this.mode.value;
  }

  start(): void {
    this.loop ??= this.run();
  }

  /** Rows just written to the outbox, in id order. */
  offer(rows: OutboxRow[]): void {
    if (this.offered.length + rows.length > MAX_OFFERED) {
      this.offered = [];
      this.mustRead = true;
    } else {
      this.offered.push(...rows);
    }
    this.wake();
  }

  private wake(): void {
    this.woken = true;
    this.wakeUp?.();
  }

  /** Stops taking new rows after the outbox is empty (drain) or at once (abort). */
  async stop(opts: { drainUntil: AbortSignal }): Promise<void> {
    if (this.mode.is('sending')) this.mode.to('draining');
    this.wake();
    const onAbort = () => this.stopController.abort();
    opts.drainUntil.addEventListener('abort', onAbort, { once: true });
    if (opts.drainUntil.aborted) onAbort();
    await this.loop;
  }

  /**
   * Stops after the vector in flight, if its answer comes within `graceMs`: aborting a request the backend
   * may already have taken would make the next owner send it again.
   */
  async halt(graceMs: number): Promise<void> {
    if (!this.mode.is('stopped')) this.mode.to('halting');
    this.wake();
    const timer = setTimeout(() => this.stopController.abort(), graceMs);
    await this.loop;
    clearTimeout(timer);
  }

  private async run(): Promise<void> {
    try {
      await this.sendAll();
    } finally {
      // Every record the window holds is written (or the engine stopped) before the sender says it
      // stopped: a hand-over then releases the pump with its deliveries on record.
      await this.recordsBelow(1);
      this.mode.to('stopped');
    }
  }

  /**
   * Waits until fewer than `n` answered vectors wait for their records. Resolves false if `signal` ended
   * the wait first or a record was lost (the engine stopped).
   */
  private async recordsBelow(n: number, signal?: AbortSignal): Promise<boolean> {
    while (this.unrecorded >= n && !this.recordLost) {
      if (signal?.aborted) return false;
      await new Promise<void>((resolve) => {
        const done = () => {
          signal?.removeEventListener('abort', done);
          this.recordDone = undefined;
          resolve();
        };
        this.recordDone = done;
        signal?.addEventListener('abort', done, { once: true });
      });
    }
    return !this.recordLost && !signal?.aborted;
  }

  /** Remembers a row as sent, from its answer on, so a read of the outbox before its record skips it. */
  private remember(id: number): void {
    this.recent.add(id);
    if (this.recent.size > 2_000 + this.window)
      this.recent.delete(this.recent.values().next().value as number);
  }

  private async sendAll(): Promise<void> {
    const signal = this.stopController.signal;
    const batch = this.o.batch ?? 100;
    const pollMs = this.o.pollMs ?? 5_000;
    while (!signal.aborted && !this.mode.is('halting')) {
      let rows: OutboxRow[];
      // Busy or idle, read the outbox now and then: a row whose insert was retried is only found there.
      if (Date.now() - this.lastRead > pollMs) this.mustRead = true;
      if (this.mustRead) {
        // The window's records first: the read then finds only rows not sent yet, so a window larger
        // than a batch never reads a batch of rows it has already sent.
        if (!(await this.recordsBelow(1, signal))) return;
        try {
          // Cleared before the read: rows inserted from now on are offered in memory.
          this.mustRead = false;
          this.offered = [];
          this.lastRead = Date.now();
          rows = await fetchPending(this.o.pool, this.o.pump.id, batch);
          if (rows.length === batch) this.mustRead = true;
        } catch (err) {
          this.mustRead = true;
          this.o.logger.warn({ err: (err as Error).message }, 'outbox read failed; retrying');
          await sleep(1_000, signal);
          continue;
        }
      } else {
        rows = this.offered.splice(0);
      }
      rows = rows.filter((r) => !this.done(r.id));
      if (rows.length === 0) {
        if (this.mode.is('draining') && !this.mustRead && this.offered.length === 0) return;
        await this.idle(signal);
        continue;
      }
      for (const row of rows) {
        if (signal.aborted || this.mode.is('halting') || this.recordLost) return;
        if (this.done(row.id)) continue;
        // Room in the window: the vector about to be sent is unrecorded from its request on.
        if (!(await this.recordsBelow(this.window, signal))) return;
        if (this.mode.is('halting')) return;
        if (!(await this.send(row, signal))) return;
      }
    }
  }

  private done(id: number): boolean {
    return this.recent.has(id);
  }

  private idle(signal: AbortSignal): Promise<void> {
    if (this.woken) {
      this.woken = false;
      return Promise.resolve();
    }
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        signal.removeEventListener('abort', done);
        this.wakeUp = undefined;
        this.woken = false;
        resolve();
      };
      // Without a wake-up, look at the outbox now and then: rows may have been left by a previous run.
      const timer = setTimeout(done, this.o.pollMs ?? 5_000);
      signal.addEventListener('abort', done, { once: true });
      this.wakeUp = done;
    });
  }

  /** Returns false when cancelled by shutdown: the row stays pending for the next run. */
  private async send(row: OutboxRow, signal: AbortSignal): Promise<boolean> {
    const { pump } = this.o;
    let result = await this.deliverOnce(row, signal);
    // The budget is unbounded, so giving up means an unexpected error: never drop the row, never stop.
    while (result.kind === 'gave_up') {
      this.o.logger.error(
        { tiempo_sensor: row.tiempo, err: result.error.message },
        'unified POST failed unexpectedly',
      );
      if (!(await sleep(this.o.retryMaxMs, signal))) break;
      result = await this.deliverOnce(row, signal);
    }
    if (result.kind === 'cancelled' || result.kind === 'gave_up') return false;
    const attempts = row.attempts + result.attempts;
    const { status, body } = result.answer;
    const dead = result.kind === 'rejected';
    if (dead) {
      // Rare: recorded at once, with its dead letter. Only a shutdown stops the attempts; the row then
      // stays pending and is sent again (same key) next time. A record the database refuses as it is (a
      // data error: SQLSTATE 22, 23) is written bare instead, without the answer's text, so that this
      // pump's vectors never wait behind it.
      const letter: DeadLetter = {
        kind: 'vector',
        pump: pump.id,
        payload: JSON.stringify(row.body),
        reason: `backend answered ${status} to the unified POST for tiempo_sensor ${row.tiempo}`,
        responseStatus: status,
        responseBody: body,
        outboxId: row.id,
        idempotencyKey: row.key,
      };
      let refused: unknown;
      let written: DeadLetter = letter;
      // The deliveries before it go on record first, so the outbox's records follow the sends.
      this.remember(row.id);
      if (!(await this.recordsBelow(1, signal))) return false;
      const recorded = await this.persist(
        signal,
        // One transaction: a crash between the two left the vector dead with no letter to retry it by.
        (db) =>
          inTransaction(db, async (tx) => {
            await markDelivered(tx, row.id, {
              status: 'dead',
              attempts,
              responseStatus: status,
              responseBody: refused === undefined ? body.slice(0, 2000) : null,
            });
            written = refused === undefined ? letter : bareDeadLetter(letter, refused);
            await insertDeadLetters(tx, [written]);
          }),
        (err) => {
          if (refused === undefined && isDataError(err)) refused = err;
        },
      );
      if (!recorded) {
        this.recent.delete(row.id);
        return false;
      }
      this.o.deadLetters.stored(written);
      this.o.logger.error(
        { tiempo_sensor: row.tiempo, status, response: body.slice(0, 300) },
        'backend rejected the vector; kept as a dead letter',
      );
      this.o.onResult(row, { kind: 'dead', status, body, attempts });
      return true;
    }
    // Taken: its record is written in the background while the next vectors go, within the window.
    this.remember(row.id);
    this.unrecorded += 1;
    const sent: SendResult = { kind: 'sent', status, prediccion: parseReply(body).prediccion, attempts };
    void this.o.recordSent({ id: row.id, attempts, status }).then(
      (written) => this.recorded(row, sent, written),
      (err: unknown) => {
        this.o.logger.error({ err: (err as Error).message }, 'recording a delivered vector failed');
        this.recorded(row, sent, false);
      },
    );
    return true;
  }

  private recorded(row: OutboxRow, result: SendResult, written: boolean): void {
    this.unrecorded -= 1;
    // Not written: the engine stopped; the row stays pending and is sent again (same key) next time.
    if (!written) this.recordLost = true;
    else this.o.onResult(row, result);
    this.recordDone?.();
  }

  private deliverOnce(row: OutboxRow, signal: AbortSignal) {
    const json = JSON.stringify(row.body);
    return deliver((s) => this.o.client.post(this.o.pump.unifiedPath, json, row.key, s), {
      breaker: this.o.breaker,
      maxAttempts: Number.POSITIVE_INFINITY,
      baseMs: this.o.retryBaseMs,
      maxMs: this.o.retryMaxMs,
      signal,
      ...(this.o.route ? { route: this.o.route } : {}),
      onHold: (answer, delay, holds) =>
        this.o.logger.warn(
          {
            tiempo_sensor: row.tiempo,
            status: answer.status,
            ...(answer.location !== undefined ? { location: answer.location } : {}),
            holds,
            delay_ms: Math.round(delay),
          },
          'unified POST refused by the route (redirect, 401 or 403): the vector stays pending; check BASE_URL and API_KEY',
        ),
      onRetry: (err, delay, attempt) =>
        this.o.logger.warn(
          { tiempo_sensor: row.tiempo, attempt, delay_ms: Math.round(delay), err: err.message },
          'unified POST failed; retrying',
        ),
    });
  }

  private async persist(
    signal: AbortSignal,
    fn: (db: pg.Pool) => Promise<void>,
    onError?: (err: unknown) => void,
  ): Promise<boolean> {
    for (let attempt = 1; !signal.aborted; attempt++) {
      try {
        await fn(this.o.pool);
        return true;
      } catch (err) {
        onError?.(err);
        this.o.logger.warn({ err: (err as Error).message, attempt }, 'recording a delivery failed; retrying');
        await sleep(Math.min(5_000, 100 * 2 ** attempt), signal);
      }
    }
    return false;
  }
}
