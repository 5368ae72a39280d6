import { EventEmitter, setMaxListeners } from 'node:events';
import type { CircuitBreakerPolicy } from 'cockatiel';
import type pg from 'pg';
import type { Logger } from 'pino';
import type { LogbookConfig } from '../config/env.js';
import type { LogbookStream } from '../config/pumps.js';
import type { BackendClient } from '../delivery/backend-client.js';
import { type DeliveryResult, deliver } from '../delivery/policy.js';
import type { CheckpointKeeper } from '../ledger/checkpoint-keeper.js';
import type { RowFetcher } from '../source/row-fetcher.js';
import type { Reader } from '../store/checkpoints.js';
import { describePgError } from '../store/db.js';
import type { DeadLetter } from '../store/dead-letters.js';
import { deleteDeferred, fetchDeferred } from '../store/deferred-posts.js';
import { readLogbookEntry, readLogbookRowsAfter } from '../store/logbook-rows.js';
import { recordSettledPosts } from '../store/sensor-posts.js';
import { BatchWriter } from '../util/batch.js';
import { sleep } from '../util/clock.js';

export type LogbookOutcome = 'received' | 'duplicate' | 'invalid' | 'sent' | 'dead' | 'retried';

export interface LogbookLaneEvents {
  /**
   * One step of one entry; `text`: the backend's classification of a sent entry; `bitacora`: the entry's
   * own text, where it is known (received from a notification, or sent).
   */
  entry: [
    outcome: LogbookOutcome,
    stream: LogbookStream,
    id: number | undefined,
    text: string | undefined,
    bitacora?: string | null,
  ];
}

export interface LogbookLaneOptions {
  logbook: LogbookConfig;
  pool: pg.Pool;
  ledger: CheckpointKeeper;
  /** Its own client (the long LOGBOOK_TIMEOUT_MS) and its own breaker: a slow classifier holds up nothing else. */
  backend: { client: BackendClient; breaker: CircuitBreakerPolicy };
  concurrency: number;
  maxAttempts: number;
  retryBaseMs: number;
  retryMaxMs: number;
  /** Rows read per catch-up batch. */
  batch: number;
  /** Reads the rows notifications name. */
  rows: RowFetcher;
  /** Writes a dead letter, then calls `settled` once it is on record. */
  deadLetter: (letter: DeadLetter, settled: () => void) => void;
  signal: AbortSignal;
  logger: Logger;
}

interface Entry {
  stream: LogbookStream;
  id: number;
  /** The row's text (null: it has none); undefined for an operator's retry, read from the row when sent. */
  bitacora: string | null | undefined;
  /** An operator's retry, queued in deferred_posts: not in the ledger (its row is below the checkpoint). */
  deferredId?: number;
  key?: string;
}

/**
 * One logbook definition's streams (operators' entries, one table per pump): each row is forwarded on its
 * own, never grouped, as POST {url} {id, bitacora, tabla} with Idempotency-Key lb-<table>-<id>. Owned by
 * one replica at a time through the lease named by the logbook's id (Activation calls take and leave).
 * Owns its queue, its small pool of workers, its catch-up loop, its post-ledger writer and the reading of
 * the retries an operator queued for it (deferred_posts with pump = the logbook id). Each row is
 * begun and settled in the ledger under the reader (logbook id, table), and recorded in
 * pump_monitor.sensor_posts with pump = the logbook id, so a restart does not send it again. Never touches
 * the sensor posts, the pump lanes or another definition's state.
 */
export class LogbookLane extends EventEmitter<LogbookLaneEvents> {
  private readonly byChannel = new Map<string, LogbookStream>();
  private readonly queue: Entry[] = [];
  private active = 0;
  private owned = false;
  private controller = new AbortController();
  private readonly records: BatchWriter<{ pump: string; table: string; id: number }>;
  private catchUpLoop: Promise<void> | undefined;
  private again = false;
  private idleWaiters: (() => void)[] = [];
  /** Retries queued by `dead-letters retry` (deferred_posts, pump = the logbook id): the read cursor. */
  private retryCursor = 0;
  private readonly retrying = new Set<number>();
  private retryTimer: NodeJS.Timeout | undefined;
  private readingRetries = false;

  constructor(private readonly o: LogbookLaneOptions) {
    super();
    for (const s of o.logbook.streams) this.byChannel.set(s.channel, s);
    setMaxListeners(o.concurrency * 4 + 10, this.controller.signal);
    this.records = new BatchWriter((posts) => recordSettledPosts(o.pool, posts), {
      name: `logbook_posts:${o.logbook.id}`,
      lingerMs: 20,
      maxBatch: 50,
      retryMs: 500,
      onError: (err, n, refused) =>
        refused
          ? o.logger.error({ err: describePgError(err) }, 'recording a logbook post: refused by the database')
          : o.logger.warn(
              { err: describePgError(err), items: n },
              'recording logbook posts failed; retrying',
            ),
      signal: o.signal,
    });
  }

  get id(): string {
    return this.o.logbook.id;
  }

  get channels(): string[] {
    return [...this.byChannel.keys()];
  }

  /** Entries queued or being sent. */
  get depth(): number {
    return this.queue.length + this.active;
  }

  /** Its catch-up loop is reading the tables. */
  get catchingUp(): boolean {
    return this.catchUpLoop !== undefined;
  }

  get isOwned(): boolean {
    return this.owned;
  }

  readers(): Reader[] {
    return this.o.logbook.streams.map((s) => ({ pump: this.id, table: s.table }));
  }

  handles(channel: string): boolean {
    return this.byChannel.has(channel);
  }

  /** This replica owns the logbook now: accept its notifications and catch up. */
  take(): void {
    if (this.owned) return;
    if (this.controller.signal.aborted) {
      this.controller = new AbortController();
      setMaxListeners(this.o.concurrency * 4 + 10, this.controller.signal);
    }
    this.owned = true;
    this.retryCursor = 0;
    this.retryTimer ??= setInterval(() => void this.readRetries(), 1_000);
    this.catchUp();
  }

  /** Another replica takes over: stop accepting, let what is in flight finish (up to `graceMs`). */
  async leave(graceMs: number): Promise<void> {
    this.owned = false;
    this.stopRetries();
    this.queue.length = 0; // unsettled: the next owner reads them from the table
    await Promise.race([this.idle(), sleep(graceMs)]);
    await this.catchUpLoop;
    await this.records.flush();
  }

  /** Cancels what is in flight; those rows stay unsettled and are read again later. */
  abort(): void {
    this.owned = false;
    this.stopRetries();
    this.queue.length = 0;
    this.controller.abort();
    for (const w of this.idleWaiters.splice(0)) w();
  }

  idle(): Promise<void> {
    if (this.depth === 0 || this.controller.signal.aborted) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  flush(): Promise<void> {
    return this.records.flush();
  }

  /**
   * A notification on one of the logbook's channels, {id, bitacora} or {id} alone for a long entry: a
   * claim that the table holds that row. The row is read and its text sent, never the payload's.
   */
  accept(channel: string, payload: string): void {
    const stream = this.byChannel.get(channel);
    if (!stream || !this.owned) return;
    let body: unknown;
    try {
      body = JSON.parse(payload);
    } catch {
      body = undefined;
    }
    const id = typeof body === 'object' && body !== null ? (body as Record<string, unknown>).id : undefined;
    const progress = this.o.ledger.reader(this.id, stream.table);
    if (typeof id !== 'number' || !Number.isSafeInteger(id) || id < 0) {
      this.invalid(channel, payload, stream, 'bad_id: not a logbook row id');
      // A row may stand behind it (a truncated payload): nothing above the saved checkpoint is passed
      // until the table has been read again.
      progress.holdFrom(progress.persisted + 1);
      this.catchUp();
      return;
    }
    if (progress.passed(id)) {
      // At or below the saved checkpoint: a settled entry, named again.
      this.emit('entry', 'duplicate', stream, id, undefined);
      return;
    }
    const claimed = (body as Record<string, unknown>).bitacora;
    progress.claim(id);
    this.o.rows.fetch({
      table: stream.table,
      shape: 'logbook',
      id,
      found: (row) => {
        progress.unclaim(id);
        if (!row) {
          this.invalid(
            channel,
            payload,
            stream,
            `no_such_row: table ${stream.table} holds no row with id ${id}`,
          );
          return;
        }
        if (claimed !== undefined && claimed !== row.text) {
          this.invalid(
            channel,
            payload,
            stream,
            `payload_mismatch: row ${id} of ${stream.table} holds another bitacora; the row's is sent`,
          );
        }
        if (this.owned) this.offer({ stream, id, bitacora: row.text });
      },
      failed: () => {
        progress.holdFrom(id);
        progress.unclaim(id);
        this.catchUp();
      },
    });
  }

  /** A notification that is not a row of the stream as it claims: counted, logged and a dead letter. */
  private invalid(channel: string, payload: string, stream: LogbookStream, reason: string): void {
    this.o.logger.warn({ channel, payload: payload.slice(0, 200), reason }, 'invalid logbook notification');
    this.o.deadLetter({ kind: 'notification', pump: this.id, channel, payload, reason }, () => {});
    this.emit('entry', 'invalid', stream, undefined, undefined);
  }

  /** Catch-up after a (re)connect or a takeover: rows above each stream's saved checkpoint. */
  catchUp(): void {
    if (!this.owned) return;
    if (this.catchUpLoop) {
      this.again = true;
      return;
    }
    this.catchUpLoop = (async () => {
      do {
        this.again = false;
        try {
          await this.readBacklog();
        } catch (err) {
          this.o.logger.warn({ err: describePgError(err) }, 'logbook catch-up failed; will retry');
          await sleep(1_000, this.o.signal).catch(() => {});
          this.again = this.owned && !this.o.signal.aborted;
        }
      } while (this.again && this.owned);
    })().finally(() => {
      this.catchUpLoop = undefined;
    });
  }

  private async readBacklog(): Promise<void> {
    for (const stream of this.o.logbook.streams) {
      const progress = this.o.ledger.reader(this.id, stream.table);
      const token = progress.catchUpToken();
      let after = progress.persisted;
      for (;;) {
        if (!this.owned || this.o.signal.aborted) return;
        // Backpressure: the queue stays small, the table is the backlog.
        while (this.queue.length > this.o.batch && this.owned) await sleep(20, this.o.signal);
        const rows = await readLogbookRowsAfter(this.o.pool, stream.table, this.id, after, this.o.batch);
        for (const r of rows) {
          after = r.id;
          if (r.posted) {
            // On record before a restart: only its place in the ledger is rebuilt.
            if (progress.begin(r.id, 1)) progress.settle(r.id);
            continue;
          }
          this.offer({ stream, id: r.id, bitacora: r.bitacora });
        }
        if (rows.length < this.o.batch) break;
      }
      progress.release(token);
    }
  }

  private stopRetries(): void {
    clearInterval(this.retryTimer);
    this.retryTimer = undefined;
    this.retrying.clear();
  }

  /** Entries an operator queued again: sent like the others, their deferred row removed once settled. */
  private async readRetries(): Promise<void> {
    if (!this.owned || this.readingRetries || this.queue.length > this.o.batch) return;
    this.readingRetries = true;
    try {
      const rows = await fetchDeferred(this.o.pool, this.id, 20, this.retryCursor);
      const stale: number[] = [];
      for (const d of rows) {
        this.retryCursor = Math.max(this.retryCursor, d.id);
        if (this.retrying.has(d.id)) continue;
        const stream = this.byChannel.get(d.channel);
        let id: unknown;
        try {
          id = (JSON.parse(d.payload) as Record<string, unknown>).id;
        } catch {
          id = undefined;
        }
        if (!stream || typeof id !== 'number' || !Number.isSafeInteger(id) || id < 0) {
          this.o.logger.warn(
            { deferred: d.id, channel: d.channel },
            'queued logbook retry names no entry; removed',
          );
          stale.push(d.id);
          continue;
        }
        this.retrying.add(d.id);
        this.emit('entry', 'received', stream, id, undefined);
        this.queue.push({
          stream,
          id,
          bitacora: undefined,
          deferredId: d.id,
          ...(d.key ? { key: d.key } : {}),
        });
        this.work();
      }
      if (stale.length > 0) await deleteDeferred(this.o.pool, stale);
    } catch (err) {
      this.o.logger.warn({ err: describePgError(err) }, 'reading queued logbook retries failed; will retry');
    } finally {
      this.readingRetries = false;
    }
  }

  private offer(e: Entry): void {
    if (!this.o.ledger.begin(this.id, e.stream.table, e.id, 1)) {
      this.emit('entry', 'duplicate', e.stream, e.id, undefined);
      return;
    }
    this.emit('entry', 'received', e.stream, e.id, undefined, e.bitacora);
    this.queue.push(e);
    this.work();
  }

  private work(): void {
    while (this.active < this.o.concurrency && this.queue.length > 0 && this.owned) {
      const e = this.queue.shift() as Entry;
      this.active += 1;
      void this.send(e)
        .catch((err) =>
          this.o.logger.error({ err, table: e.stream.table, id: e.id }, 'logbook entry handling failed'),
        )
        .finally(() => {
          this.active -= 1;
          if (this.depth === 0) for (const w of this.idleWaiters.splice(0)) w();
          if (!this.controller.signal.aborted) this.work();
        });
    }
  }

  private async send(e: Entry): Promise<void> {
    const { o } = this;
    const table = e.stream.table;
    let text = e.bitacora;
    if (text === undefined) {
      // An operator's retry names the entry by id: its text is in the row.
      const stored = await this.withRetries(() => readLogbookEntry(o.pool, table, e.id));
      if (stored === 'cancelled') return;
      if (stored === undefined) {
        this.dead(e, 'the row no longer exists');
        return;
      }
      text = stored;
    }
    if (text === null) {
      this.dead(e, 'the row has no bitacora text');
      return;
    }
    const json = JSON.stringify({ id: e.id, bitacora: text, tabla: e.stream.tabla });
    const key = keyOf(e);
    const result: DeliveryResult = await deliver(
      (signal) => o.backend.client.post(o.logbook.endpoint, json, key, signal),
      {
        breaker: o.backend.breaker,
        maxAttempts: o.maxAttempts,
        baseMs: o.retryBaseMs,
        maxMs: o.retryMaxMs,
        signal: this.controller.signal,
        onRetry: () => this.emit('entry', 'retried', e.stream, e.id, undefined),
      },
    );
    if (result.kind === 'cancelled') return; // unsettled: read again later
    if (result.kind === 'ok') {
      this.settled(e);
      this.emit('entry', 'sent', e.stream, e.id, classification(result.answer.body), text);
      return;
    }
    const reason =
      result.kind === 'gave_up'
        ? `gave up after ${result.attempts} attempts: ${result.error.message}`
        : result.answer.status === 404
          ? 'the backend does not know this entry (404)'
          : `backend answered ${result.answer.status}`;
    this.dead(
      e,
      reason,
      result.kind === 'rejected' ? result.answer.status : undefined,
      result.kind === 'rejected' ? result.answer.body : undefined,
    );
  }

  private dead(e: Entry, reason: string, status?: number, responseBody?: string): void {
    this.o.logger.warn(
      { logbook: this.id, table: e.stream.table, id: e.id, reason },
      'logbook entry not delivered; kept as a dead letter',
    );
    this.o.deadLetter(
      {
        kind: 'logbook',
        pump: this.id,
        channel: e.stream.channel,
        payload: JSON.stringify({ id: e.id, tabla: e.stream.tabla }),
        reason,
        responseStatus: status,
        responseBody,
        idempotencyKey: keyOf(e),
      },
      () => this.settled(e),
    );
    this.emit('entry', 'dead', e.stream, e.id, undefined);
  }

  /** Done with a row: settled in the ledger, and on record for restarts. */
  private settled(e: Entry): void {
    this.records.push({ pump: this.id, table: e.stream.table, id: e.id });
    const deferred = e.deferredId;
    if (deferred === undefined) {
      this.o.ledger.settle(this.id, e.stream.table, e.id);
      return;
    }
    void deleteDeferred(this.o.pool, [deferred])
      .then(() => this.retrying.delete(deferred))
      .catch((err) =>
        this.o.logger.warn({ err: describePgError(err), deferred }, 'removing a sent logbook retry failed'),
      );
  }

  /** A database read, retried while the lane runs; 'cancelled' once it stops. */
  private async withRetries<T>(read: () => Promise<T>): Promise<T | 'cancelled'> {
    for (let attempt = 0; attempt < 1_000; attempt++) {
      if (this.controller.signal.aborted) return 'cancelled';
      try {
        return await read();
      } catch (err) {
        this.o.logger.warn({ err: describePgError(err) }, 'reading a logbook entry failed; retrying');
        await sleep(500, this.controller.signal).catch(() => {});
      }
    }
    return 'cancelled';
  }
}

/** The entry's Idempotency-Key: lb-<table>-<id>, unless an operator's retry carries its own. */
function keyOf(e: Entry): string {
  return e.key ?? `lb-${e.stream.table}-${e.id}`;
}

/** The backend's `clasificacion`, when its answer has one. */
function classification(body: string): string | undefined {
  try {
    const v = (JSON.parse(body) as Record<string, unknown>).clasificacion;
    return typeof v === 'string' ? v : undefined;
  } catch {
    return undefined;
  }
}
