import type { CircuitBreakerPolicy } from 'cockatiel';
import type pg from 'pg';
import type { Logger } from 'pino';
import type { PumpConfig } from '../config/env.js';
import { insertDeadLetters } from '../store/dead-letters.js';
import { fetchPending, markDelivered, type OutboxRow } from '../store/outbox.js';
import { sleep } from '../util/clock.js';
import type { BackendClient } from './backend-client.js';
import { deliver } from './policy.js';

export interface VectorSenderOptions {
  pump: PumpConfig;
  pool: pg.Pool;
  client: BackendClient;
  breaker: CircuitBreakerPolicy;
  retryBaseMs: number;
  retryMaxMs: number;
  logger: Logger;
  /** Called after each vector leaves the outbox. */
  onResult: (row: OutboxRow, result: SendResult) => void;
  /** How often to look at the outbox without a wake-up (rows left by a previous run or replica). */
  pollMs?: number;
  batch?: number;
}

export type SendResult =
  | { kind: 'sent'; status: number; prediccion: number | undefined; attempts: number }
  | { kind: 'dead'; status: number; body: string; attempts: number };

/**
 * Sends one pump's outbox in order, one vector at a time, retrying each until the backend takes it
 * (a head-of-line wait during an outage keeps the order). The outbox, not memory, holds the backlog,
 * so an outage of any length costs no memory.
 */
export class VectorSender {
  private wakeUp: (() => void) | undefined;
  private woken = false;
  private readonly stopController = new AbortController();
  private draining = false;
  private loop: Promise<void> | undefined;
  inFlight = false;

  constructor(private readonly o: VectorSenderOptions) {}

  start(): void {
    this.loop ??= this.run();
  }

  wake(): void {
    this.woken = true;
    this.wakeUp?.();
  }

  /** Stops taking new rows after the outbox is empty (drain) or at once (abort). */
  async stop(opts: { drainUntil: AbortSignal }): Promise<void> {
    this.draining = true;
    this.wake();
    const onAbort = () => this.stopController.abort();
    opts.drainUntil.addEventListener('abort', onAbort, { once: true });
    if (opts.drainUntil.aborted) onAbort();
    await this.loop;
  }

  private async run(): Promise<void> {
    const signal = this.stopController.signal;
    while (!signal.aborted) {
      let rows: OutboxRow[];
      try {
        rows = await fetchPending(this.o.pool, this.o.pump.id, this.o.batch ?? 100);
      } catch (err) {
        this.o.logger.warn({ err: (err as Error).message }, 'outbox read failed; retrying');
        await sleep(1_000, signal);
        continue;
      }
      if (rows.length === 0) {
        if (this.draining) return;
        await this.idle(signal);
        continue;
      }
      for (const row of rows) {
        if (signal.aborted) return;
        if (!(await this.send(row, signal))) return;
      }
    }
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
      const timer = setTimeout(done, this.o.pollMs ?? 1_000);
      signal.addEventListener('abort', done, { once: true });
      this.wakeUp = done;
    });
  }

  /** Returns false when cancelled by shutdown: the row stays pending for the next run. */
  private async send(row: OutboxRow, signal: AbortSignal): Promise<boolean> {
    const { pump } = this.o;
    this.inFlight = true;
    const result = await deliver(
      (s) => this.o.client.post(pump.unifiedPath, row.body, { 'idempotency-key': row.key }, s),
      {
        breaker: this.o.breaker,
        maxAttempts: Number.POSITIVE_INFINITY,
        baseMs: this.o.retryBaseMs,
        maxMs: this.o.retryMaxMs,
        signal,
        onRetry: (err, delay, attempt) =>
          this.o.logger.warn(
            { tiempo_sensor: row.tiempo, attempt, delay_ms: Math.round(delay), err: err.message },
            'unified POST failed; retrying',
          ),
      },
    );
    this.inFlight = false;
    if (result.kind === 'cancelled') return false;
    if (result.kind === 'gave_up') throw result.error; // unbounded budget: cannot happen
    const attempts = row.attempts + result.attempts;
    const { status, body } = result.answer;
    const dead = result.kind === 'rejected';
    // The backend has answered: record it even if the database is briefly away, or it would be re-sent.
    // Only a shutdown stops the attempts; the row then stays pending and is sent again (same key) next time.
    const recorded = await this.persist(signal, async (db) => {
      await markDelivered(db, row.id, {
        status: dead ? 'dead' : 'sent',
        attempts,
        responseStatus: status,
        responseBody: dead ? body.slice(0, 2000) : null,
      });
      if (dead) {
        await insertDeadLetters(db, [
          {
            kind: 'vector',
            pump: pump.id,
            payload: JSON.stringify(row.body),
            reason: `backend answered ${status} to the unified POST for tiempo_sensor ${row.tiempo}`,
            responseStatus: status,
            responseBody: body,
          },
        ]);
      }
    });
    if (!recorded) return false;
    if (dead) {
      this.o.logger.error(
        { tiempo_sensor: row.tiempo, status, response: body.slice(0, 300) },
        status === 401
          ? 'backend rejected the API key (401): check API_KEY; vector kept as a dead letter'
          : 'backend rejected the vector; kept as a dead letter',
      );
      this.o.onResult(row, { kind: 'dead', status, body, attempts });
    } else {
      this.o.onResult(row, { kind: 'sent', status, prediccion: parsePrediction(body), attempts });
    }
    return true;
  }

  private async persist(signal: AbortSignal, fn: (db: pg.Pool) => Promise<void>): Promise<boolean> {
    for (let attempt = 1; !signal.aborted; attempt++) {
      try {
        await fn(this.o.pool);
        return true;
      } catch (err) {
        this.o.logger.warn({ err: (err as Error).message, attempt }, 'recording a delivery failed; retrying');
        await sleep(Math.min(5_000, 100 * 2 ** attempt), signal);
      }
    }
    return false;
  }
}

export function parsePrediction(body: string): number | undefined {
  try {
    const v = (JSON.parse(body) as { prediccion?: unknown }).prediccion;
    return typeof v === 'number' && Number.isFinite(v) ? v : undefined;
  } catch {
    return undefined;
  }
}
