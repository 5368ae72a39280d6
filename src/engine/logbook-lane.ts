import { EventEmitter } from 'node:events';
import type { CircuitBreakerPolicy } from 'cockatiel';
import type pg from 'pg';
import type { Logger } from 'pino';
import type { LogbookConfig } from '../config/env.js';
import type { LogbookStream } from '../config/pumps.js';
import type { BackendClient } from '../delivery/backend-client.js';
import { budgetOf, PostQueue } from '../delivery/post-queue.js';
import type { CheckpointKeeper } from '../ledger/checkpoint-keeper.js';
import { logbookClassification } from '../model/payload.js';
import { isProbe } from '../source/probe.js';
import type { RowFetcher } from '../source/row-fetcher.js';
import type { Reader } from '../store/checkpoints.js';
import type { DeadLetter } from '../store/dead-letters.js';
import { recordSettledPosts } from '../store/sensor-posts.js';
import { sleep } from '../util/clock.js';
import { Mode } from '../util/mode.js';
import { LogbookBacklog } from './logbook-backlog.js';
import { type Entry, entryPosts, LANE_MODES, type LaneMode } from './logbook-entry.js';
import { LogbookRetries, type QueuedRetry } from './logbook-retries.js';

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
  /** A diagnose probe (source/probe.ts): no row, no dead letter. */
  probe: [channel: string];
}

export interface LogbookLaneOptions {
  logbook: LogbookConfig;
  pool: pg.Pool;
  ledger: CheckpointKeeper;
  /** Its own client (the long LOGBOOK_TIMEOUT_MS) and its own breaker: a slow classifier holds up nothing else. */
  backend: { client: BackendClient; breaker: CircuitBreakerPolicy };
  /** Its slots: entries posted at once. */
  concurrency: number;
  maxAttempts: number;
  retryBaseMs: number;
  retryMaxMs: number;
  /** Rows read per catch-up batch. */
  batch: number;
  /** Reads the rows notifications name. */
  rows: RowFetcher;
  /**
   * Whether the LISTEN session is up. A catch-up waits for it, as the pumps' does: one read before it
   * could pass a row committed out of id order after that read and before LISTEN, whose notification
   * nobody heard. The listener's `listening` event asks every logbook for its catch-up.
   */
  listening: () => boolean;
  /** Writes a dead letter, then calls `settled` once it is on record. */
  deadLetter: (letter: DeadLetter, settled: () => void) => void;
  signal: AbortSignal;
  logger: Logger;
}

/**
 * One logbook definition's streams (operators' entries, one table per pump): each row is forwarded on its
 * own, never grouped, through the per-row delivery queue every post uses (delivery/post-queue.ts): its
 * lane is the logbook, on the logbook's own backend (LOGBOOK_TIMEOUT_MS, its own breaker), with its own
 * slots. Owned by one replica at a time through the lease named by the logbook's id (Activation calls
 * take and leave). Owns what is its own: the reading of its notifications (the row's text, never the
 * payload's), its catch-up (LogbookBacklog), the retries an operator queued for it (LogbookRetries), and
 * its `entry` events. Each row is begun in the ledger under the reader (logbook id, table); the queue
 * settles its post part and records it in pump_monitor.sensor_posts with pump = the logbook id. Entries
 * are not deferred to the database: the table is their backlog. Past `2 × batch` entries in memory a
 * notified row is not begun; its reader is held from it and catch-up reads it when there is room.
 */
export class LogbookLane extends EventEmitter<LogbookLaneEvents> {
  private readonly byChannel = new Map<string, LogbookStream>();
  private readonly mode = new Mode<LaneMode>('logbook lane', 'released', LANE_MODES);
  private readonly queue: PostQueue<Entry>;
  private readonly backlog: LogbookBacklog;
  /** Retries queued by `dead-letters retry` (deferred_posts, pump = the logbook id). */
  private readonly retries: LogbookRetries;

  constructor(private readonly o: LogbookLaneOptions) {
    super();
    for (const s of o.logbook.streams) this.byChannel.set(s.channel, s);
    const id = o.logbook.id;
    this.queue = new PostQueue<Entry>({
      name: `logbook_posts:${id}`,
      logger: o.logger,
      signal: o.signal,
      kind: entryPosts(id, o.logbook.endpoint, (e) =>
        this.emit('entry', 'retried', e.stream, e.id, undefined),
      ),
      backends: new Map([[id, o.backend]]),
      concurrency: o.concurrency,
      ...budgetOf(o),
      recordPosts: (posts) => recordSettledPosts(o.pool, posts),
      deadLetter: o.deadLetter,
      finished: (_e, deferredId) => this.retries.sent(deferredId),
      settled: (e, result) => {
        if (result.kind === 'ok') {
          this.emit('entry', 'sent', e.stream, e.id, logbookClassification(result.answer.body), e.text);
        } else this.emit('entry', 'dead', e.stream, e.id, undefined);
      },
    });
    this.backlog = new LogbookBacklog({
      pool: o.pool,
      logbook: id,
      streams: o.logbook.streams,
      ledger: o.ledger,
      batch: o.batch,
      owned: () => this.owned,
      full: () => this.queue.depth > o.batch,
      offer: (stream, rowId, bitacora) => this.offer(stream, rowId, bitacora),
      signal: o.signal,
      logger: o.logger,
    });
    this.retries = new LogbookRetries({
      pool: o.pool,
      logbook: id,
      streamOf: (channel) => this.byChannel.get(channel),
      room: () => this.owned && this.queue.depth <= o.batch,
      queue: (r) => this.retry(r),
      logger: o.logger,
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
    return this.queue.depth;
  }

  /** Its catch-up loop is reading the tables. */
  get catchingUp(): boolean {
    return this.backlog.running;
  }

  /** released, owned or stopped (LANE_MODES). */
  get state(): LaneMode {
    return this.mode.value;
  }

  private get owned(): boolean {
    return this.mode.is('owned');
  }

  readers(): Reader[] {
    return this.o.logbook.streams.map((s) => ({ pump: this.id, table: s.table }));
  }

  /** This replica owns the logbook now: accept its notifications and catch up. Nothing once stopped. */
  take(): void {
    if (!this.mode.is('released')) return;
    this.mode.to('owned');
    this.queue.reopen();
    this.retries.start();
    if (this.o.listening()) this.catchUp();
  }

  /** Another replica takes over: stop accepting, let what is in flight finish (up to `graceMs`). */
  async leave(graceMs: number): Promise<void> {
    if (this.owned) this.mode.to('released');
    this.retries.stop();
    this.queue.clear(); // unsettled: the next owner reads them from the table
    await Promise.race([this.idle(), sleep(graceMs)]);
    await this.backlog.idle();
    await this.queue.flush();
  }

  /** Cancels what is in flight; those rows stay unsettled and are read again later. */
  abort(): void {
    this.mode.to('stopped');
    this.retries.stop();
    this.queue.abort();
  }

  idle(): Promise<void> {
    return this.queue.idle();
  }

  flush(): Promise<void> {
    return this.queue.flush();
  }

  /**
   * A notification on one of the logbook's channels, {id, bitacora} or {id} alone for a long entry: a
   * claim that the table holds that row. The row is read and its text sent, never the payload's.
   */
  notified(channel: string, payload: string): void {
    const stream = this.byChannel.get(channel);
    if (!stream || !this.owned) return;
    let body: unknown;
    try {
      body = JSON.parse(payload);
    } catch {
      body = undefined;
    }
    const id = typeof body === 'object' && body !== null ? (body as Record<string, unknown>).id : undefined;
    const { ledger } = this.o;
    const table = stream.table;
    if (typeof id !== 'number' || !Number.isSafeInteger(id) || id < 0) {
      // A diagnose probe names no row: counted as a probe, not as invalid; held for catch-up like the rest.
      if (isProbe(payload)) this.emit('probe', channel);
      else this.invalid(channel, payload, stream, 'bad_id: not a logbook row id');
      // A row may stand behind it (a truncated payload): nothing above the saved checkpoint is passed
      // until the table has been read again.
      ledger.holdAfterSaved(this.id, table);
      this.catchUp();
      return;
    }
    if (ledger.passed(this.id, table, id)) {
      // At or below the saved checkpoint: a settled entry, named again.
      this.emit('entry', 'duplicate', stream, id, undefined);
      return;
    }
    if (this.queue.depth >= 2 * this.o.batch) {
      // Memory is full: the table is the backlog. Nothing passes this row until catch-up has read it.
      ledger.holdFrom(this.id, table, id);
      this.catchUp();
      return;
    }
    const claimed = (body as Record<string, unknown>).bitacora;
    ledger.claim(this.id, table, id);
    this.o.rows.fetch({
      table: stream.table,
      shape: 'logbook',
      id,
      found: (row) => {
        ledger.unclaim(this.id, table, id);
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
        if (this.owned) this.offer(stream, id, row.text);
      },
      failed: () => {
        ledger.holdFrom(this.id, table, id);
        ledger.unclaim(this.id, table, id);
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
    this.backlog.request();
  }

  /** A row of the stream, read from its table: begun in the ledger and queued (its text null: a dead letter). */
  private offer(stream: LogbookStream, id: number, text: string | null): void {
    const ticket = this.o.ledger.begin(this.id, stream.table, id, ['post']);
    if (!ticket) {
      this.emit('entry', 'duplicate', stream, id, undefined);
      return;
    }
    this.emit('entry', 'received', stream, id, undefined, text);
    this.send({ stream, id, text: text ?? '', ticket }, text);
  }

  /** An operator's retry, its text read from the row: sent like any entry, or a dead letter. */
  private retry(r: QueuedRetry): void {
    if (!this.owned) return; // the queued retry stays, for the next owner
    this.emit('entry', 'received', r.stream, r.id, undefined);
    const e: Entry = { stream: r.stream, id: r.id, text: r.text ?? '', deferredId: r.deferredId };
    if (r.key) e.key = r.key;
    if (r.text !== undefined) {
      this.send(e, r.text);
      return;
    }
    this.queue.reject(e, 'the row no longer exists');
    this.emit('entry', 'dead', r.stream, r.id, undefined);
  }

  private send(e: Entry, text: string | null): void {
    if (text !== null) {
      this.queue.submit(e);
      return;
    }
    this.queue.reject(e, 'the row has no bitacora text');
    this.emit('entry', 'dead', e.stream, e.id, undefined);
  }
}
