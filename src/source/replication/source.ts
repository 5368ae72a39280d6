import { EventEmitter } from 'node:events';
import type pg from 'pg';
import { LogicalReplicationService } from 'pg-logical-replication';
import type client from 'prom-client';
import type { DatabaseConfig } from '../../config/env.js';
import { CONNECT_TIMEOUT_MS, clientConfig, describePgError } from '../../store/db.js';
import {
  currentWal,
  endStaleReaders,
  postsOnRecord,
  qualifiedNames,
  readSlot,
} from '../../store/replication.js';
import { sleep } from '../../util/clock.js';
import { backoffSchedule } from '../listener.js';
import { StreamHorizon } from './horizon.js';
import {
  type Committed,
  outputPlugin,
  type PgoutputMessage,
  PgoutputReader,
  type Wal2JsonTransaction,
  wal2jsonTransaction,
} from './messages.js';
import { registerReplicationGauges } from './metrics.js';
import { formatLsn, Positions, parseLsn, type RowRef } from './positions.js';
import { handRow, type RowDoors } from './readers.js';
import { explainStreamError, prepareReplication, type ReplicationNames } from './setup.js';
import { untilVisible } from './visibility.js';

export interface ReplicationSourceOptions extends RowDoors {
  db: DatabaseConfig;
  /** For the slot's lag, the horizon, and the post ledger of replayed rows. */
  pool: pg.Pool;
  names: ReplicationNames;
  /** Whether a reader has settled the row (the ledger's checkpoint in memory is at or past it). */
  settled: (reader: string, table: string, id: number) => boolean;
  /** Whether this replica may read the slot: it holds the slot's lease and owns every pump and logbook. */
  active: () => boolean;
  /** Names the replication session (`application_name`): REPLICATION_SESSION and this replica's id. */
  replicaId: string;
  reconnect: { baseDelayMs: number; maxDelayMs: number };
  /** Prometheus registry for the lag gauges. */
  registry?: client.Registry;
  /** How often settled positions are confirmed (default 200 ms). */
  confirmEveryMs?: number;
  /**
   * The stream's own liveness check, on the LISTEN heartbeat's settings: a status update asking for the
   * server's reply every `intervalMs`, and a session that heard nothing for `intervalMs + timeoutMs` is
   * torn down and opened again (a half-open socket is otherwise noticed only when TCP gives up).
   */
  heartbeat: { intervalMs: number; timeoutMs: number };
}

export interface ReplicationSourceEvents {
  /** The stream is open: rows flow from the slot's confirmed position. */
  streaming: [];
  /** The stream ended (error, lost lease, stop). */
  stopped: [reason: string];
  confirmed: [lsn: string];
}

/**
 * Ends a replication session at once, in whatever state it is: its socket destroyed with an error. A
 * connection still opening then fails its connect, where pg's end() (and so the library's stop()) would
 * leave that connect pending for ever (pg 8.23), and the session with it. The library's stop() runs
 * once `subscribe` has returned.
 */
function tearDown(service: LogicalReplicationService): void {
  const client = (service as unknown as { _client?: pg.Client | null })._client;
  const socket = (client as unknown as { connection?: { stream?: { destroy(err?: Error): void } } } | null)
    ?.connection?.stream;
  socket?.destroy(new Error('replication session ended by the engine'));
}

/** What every replica's replication session is named by, before its replica's id. */
export const REPLICATION_SESSION = 'pm-repl:';

type StreamEvent =
  | { kind: 'data'; lsn: string; msg: unknown }
  | { kind: 'keepalive'; lsn: string; respond: boolean };

/** One replication session's state: a new session starts again from the slot. */
interface Session {
  service: LogicalReplicationService;
  positions: Positions;
  /** Transactions ending at or below it committed before the session began: replayed rows. */
  replayUntil: bigint;
  /** Every transaction ending at or below it has been handed over (or the server had sent nothing else). */
  handled: bigint;
  queue: StreamEvent[];
  draining: boolean;
  /** The pgoutput stream's relations and open transaction (wal2json gives a transaction in one message). */
  pgoutput: PgoutputReader;
  failed: string | undefined;
  fail(why: string): void;
}

/**
 * The replication source (SOURCE=replication): reads the inserts of the definitions' tables from a logical
 * replication slot (pgoutput with a publication, or wal2json), in commit order, with no trigger and no
 * NOTIFY. A transaction's rows are handed over when its commit arrives, each to the same door as a row
 * catch-up reads; rows the slot gives again after a restart or a takeover go the way catch-up's do (their
 * posts on record are not sent again). The slot's confirmed position advances only past transactions
 * whose every row its readers have settled. Reads only while `active()`: one slot, one reader. Owns its
 * replication connection, its sessions and timers; writes nothing but the slot's position.
 */
export class ReplicationSource extends EventEmitter<ReplicationSourceEvents> {
  private stopped = false;
  private loop: Promise<void> | undefined;
  private current: Session | undefined;
  private streaming = false;
  private failures = 0;
  private lastError: string | undefined;
  private lagBytes: number | undefined;
  private lagTimer: NodeJS.Timeout | undefined;
  private confirmedText: string | undefined;
  private readonly horizons = new StreamHorizon();
  /** Rows handed over in all, and of them replayed: tests and the page read them. */
  rows = 0;
  replayed = 0;
  confirmations = 0;
  private readonly abort = new AbortController();
  private qualified = new Map<string, string>();
  /** A table of the definitions by the schema and name the slot gives (its qualified name when known). */
  private readonly tableOf = (schema: string, name: string): string | undefined => {
    if (!this.o.routes.has(name)) return undefined;
    const q = this.qualified.get(name);
    return q === undefined || q === `${schema}.${name}` ? name : undefined;
  };

  constructor(private readonly o: ReplicationSourceOptions) {
    super();
    if (o.registry) {
      registerReplicationGauges(o.registry, {
        lagBytes: () => this.lagBytes ?? 0,
        lagSeconds: () => this.lagSeconds(),
        streaming: () => this.streaming,
      });
    }
  }

  /** Checks (and where it may, makes) the publication and slot; throws ReplicationSetupError. */
  async prepare(db: pg.ClientBase): Promise<void> {
    const tables = [...this.o.routes.keys()];
    const { createdSlot } = await prepareReplication(db, this.o.names, tables);
    if (createdSlot) this.o.logger.info({ slot: this.o.names.slot }, 'replication slot created');
    this.qualified = await qualifiedNames(db, tables);
  }

  start(): void {
    this.loop ??= this.run();
    this.lagTimer ??= setInterval(() => void this.refreshLag(), 5_000);
    void this.refreshLag();
  }

  /** Ends the stream; rows already handed over stay the engine's, and the slot keeps what is not confirmed. */
  async stop(): Promise<void> {
    this.stopped = true;
    // The session open, or opening, ends itself on the abort (session()).
    this.abort.abort();
    clearInterval(this.lagTimer);
    await this.loop;
  }

  /**
   * Why this replica is not reading the slot although it should (it holds the slot's lease and every
   * pump): the stream is down, with its last error, or not open yet. Undefined while it streams, on a
   * standby, and once stopped. /readyz reads it.
   */
  fault(): string | undefined {
    if (this.stopped || this.streaming || !this.o.active()) return undefined;
    const why = this.lastError ? `: ${this.lastError}` : ' (opening)';
    return `replication stream of slot ${this.o.names.slot} not read${why}`;
  }

  get isStreaming(): boolean {
    return this.streaming;
  }

  /**
   * The horizon the ledger bounds checkpoints by, in the stream's order (as the LISTEN session's is in
   * the notifications' order): `StreamHorizon` (horizon.ts). Undefined until one is.
   */
  horizon(): Promise<number | undefined> {
    return this.horizons.next(this.o.pool, this.current?.handled ?? 0n);
  }

  /**
   * Rows committed may not have reached the engine yet: the stream is down, or it is still giving again
   * what was committed before it (re)started. Groups then wait past their settle time, as they do while a
   * LISTEN connection is lost, so a timestamp is not sent short of rows still to come.
   */
  stalled(): boolean {
    const s = this.current;
    return !this.streaming || !s || s.handled < s.replayUntil;
  }

  lagSeconds(): number {
    const oldest = this.current?.positions.oldestWaiting();
    return oldest === undefined ? 0 : Math.max(0, (Date.now() - oldest) / 1000);
  }

  status() {
    return {
      slot: this.o.names.slot,
      plugin: this.o.names.plugin,
      publication: this.o.names.plugin === 'pgoutput' ? this.o.names.publication : null,
      streaming: this.streaming,
      confirmed_lsn: this.confirmedText ?? null,
      lag_bytes: this.lagBytes ?? null,
      lag_seconds: Math.round(this.lagSeconds() * 10) / 10,
      rows_pending: this.current?.positions.pending ?? 0,
      rows: this.rows,
      rows_replayed: this.replayed,
      last_error: this.lastError ?? null,
    };
  }

  private async refreshLag(): Promise<void> {
    try {
      this.lagBytes = (await readSlot(this.o.pool, this.o.names.slot))?.lagBytes;
    } catch {
      // Display only; the next refresh tries again.
    }
  }

  private async run(): Promise<void> {
    const { logger, reconnect } = this.o;
    while (!this.stopped) {
      if (!this.o.active()) {
        await sleep(100, this.abort.signal).catch(() => {});
        continue;
      }
      const reason = await this.session();
      if (this.stopped) break;
      if (reason === 'inactive') continue;
      this.lastError ??= reason;
      this.failures += 1;
      const delay = backoffSchedule(this.failures, reconnect.baseDelayMs, reconnect.maxDelayMs);
      logger.warn(
        { slot: this.o.names.slot, failures: this.failures, delay_ms: delay },
        `replication stream ended: ${reason}; resuming from the slot`,
      );
      await sleep(delay, this.abort.signal).catch(() => {});
    }
  }

  /** One replication session, from the slot's confirmed position until it ends; returns why it ended. */
  private async session(): Promise<string> {
    const { names, logger } = this.o;
    let replayUntil: bigint;
    try {
      replayUntil = parseLsn(await currentWal(this.o.pool));
      // This replica holds the slot's lease: a session of ours still on the slot is a stale one, and the
      // server would refuse this one until its wal_sender_timeout.
      const ended = await endStaleReaders(this.o.pool, names.slot, `${REPLICATION_SESSION}%`);
      if (ended > 0) logger.warn({ slot: names.slot, sessions: ended }, 'ended a stale session on the slot');
    } catch (err) {
      return describePgError(err);
    }
    if (this.stopped) return 'stopped';
    // A new service each time: the library would resume from the last position it received, and the
    // server honours a start position past the confirmed one, skipping rows not yet settled.
    const sessionName = `${REPLICATION_SESSION}${this.o.replicaId}`;
    const service = new LogicalReplicationService(clientConfig(this.o.db, sessionName), {
      acknowledge: { auto: false, timeoutSeconds: 0 },
    });
    const s: Session = {
      service,
      positions: new Positions(),
      replayUntil,
      handled: 0n,
      queue: [],
      draining: false,
      pgoutput: new PgoutputReader(this.tableOf),
      failed: undefined,
      fail: (why) => {
        s.failed ??= why;
        tearDown(service);
      },
    };
    this.current = s;
    const onStop = () => s.fail('stopped');
    this.abort.signal.addEventListener('abort', onStop, { once: true });
    let ended: string | undefined;
    // When the session was opened, and when the server was last heard (from the stream's start on).
    const opened = Date.now();
    let heard = opened;
    service.on('error', (err: Error) => {
      if (!ended) s.fail(describePgError(err));
    });
    service.on('start', () => {
      if (s.failed || ended) return;
      heard = Date.now();
      this.streaming = true;
      this.failures = 0;
      this.lastError = undefined;
      logger.info({ slot: names.slot, plugin: names.plugin }, 'reading the replication slot');
      // A keepalive at once: it tells how far the server has sent, so the replay's end is known soon.
      void service.acknowledge('0/0', true).catch(() => {});
      this.emit('streaming');
    });
    // Every message in arrival order, one at a time: a keepalive never overtakes a transaction still
    // being handed over, so it never confirms past one.
    service.on('heartbeat', (lsn: string, _ts: number, respond: boolean) => {
      heard = Date.now();
      s.queue.push({ kind: 'keepalive', lsn, respond });
      void this.drain(s);
    });
    service.on('data', (lsn: string, msg: unknown) => {
      heard = Date.now();
      s.queue.push({ kind: 'data', lsn, msg });
      void this.drain(s);
    });
    const timer = setInterval(() => {
      if (!this.o.active()) {
        ended ??= 'inactive';
        tearDown(service);
        return;
      }
      this.confirm(s);
    }, this.o.confirmEveryMs ?? 200);
    const { intervalMs, timeoutMs } = this.o.heartbeat;
    const keepalive = setInterval(() => {
      if (this.current !== s) return;
      // Ended, and not returned yet: a connection the library opened since the end goes too.
      if (s.failed || ended) {
        tearDown(service);
        return;
      }
      if (!this.streaming) {
        // Connecting, or START_REPLICATION unanswered: bounded as a connection is, and then the check's.
        const waited = Date.now() - opened;
        if (waited > CONNECT_TIMEOUT_MS + intervalMs + timeoutMs)
          s.fail(`the stream did not open within ${waited} ms`);
        return;
      }
      const silent = Date.now() - heard;
      if (silent <= intervalMs + timeoutMs) {
        this.reply(s, true);
        return;
      }
      // A half-open socket: torn down, since ending it politely would wait for the peer for ever.
      s.fail(`no message from the server for ${silent} ms (HEARTBEAT_INTERVAL_MS + HEARTBEAT_TIMEOUT_MS)`);
    }, intervalMs);
    try {
      await service.subscribe(
        outputPlugin(
          names,
          [...this.o.routes.keys()].map((t) => this.qualified.get(t) ?? `public.${t}`),
        ),
        names.slot,
      );
      ended ??= 'the server ended the stream';
    } catch (err) {
      if (!ended) s.failed ??= describePgError(err);
    } finally {
      this.abort.signal.removeEventListener('abort', onStop);
      clearInterval(timer);
      clearInterval(keepalive);
      // The reason first: /readyz, asked while the service stops below, names it rather than "opening".
      if (s.failed) this.lastError = explainStreamError(s.failed, names.slot);
      else if (ended !== 'inactive') this.lastError = ended ?? 'the server ended the stream';
      this.streaming = false;
      await service.stop().catch(() => {});
      service.removeAllListeners();
      s.queue.length = 0;
    }
    const why = this.stopped ? 'stopped' : (s.failed ?? ended ?? 'ended');
    if (s.failed) this.lastError = explainStreamError(s.failed, names.slot);
    this.emit('stopped', why);
    return s.failed ? explainStreamError(s.failed, names.slot) : why;
  }

  private async drain(s: Session): Promise<void> {
    if (s.draining) return;
    s.draining = true;
    try {
      while (s.queue.length > 0 && !s.failed && this.current === s) {
        const e = s.queue.shift() as StreamEvent;
        if (e.kind === 'keepalive') {
          const at = parseLsn(e.lsn);
          s.positions.keepalive(at);
          if (!s.pgoutput.open && at > s.handled) s.handled = at;
          if (!this.confirm(s) && e.respond) this.reply(s);
          continue;
        }
        const t =
          this.o.names.plugin === 'pgoutput'
            ? s.pgoutput.read(e.msg as PgoutputMessage)
            : wal2jsonTransaction(e.msg as Wal2JsonTransaction, e.lsn, this.tableOf);
        if (t) await this.handOver(s, t);
      }
    } catch (err) {
      s.fail(`could not read a change: ${(err as Error).message}`);
    } finally {
      s.draining = false;
    }
  }

  /** Confirms the settled prefix, if it moved; true when a status update went out. */
  private confirm(s: Session): boolean {
    if (!this.streaming || this.current !== s || s.failed || !this.o.active()) return false;
    const to = s.positions.advance((r) => this.settled(r));
    if (to === undefined) return false;
    // The library reports `lsn + 1` as flushed: give it the byte before the position to confirm.
    void s.service.acknowledge(formatLsn(to - 1n)).catch(() => {});
    this.confirmedText = formatLsn(to);
    this.confirmations += 1;
    this.emit('confirmed', this.confirmedText);
    return true;
  }

  /**
   * A status update that confirms nothing new (the server asked for a reply, or it is time for one);
   * `ask`: the server is to answer it at once (the stream's liveness check).
   */
  private reply(s: Session, ask = false): void {
    if (!this.streaming || this.current !== s || s.failed) return;
    const at = s.positions.confirmed;
    void s.service.acknowledge(formatLsn(at > 0n ? at - 1n : 0n), ask).catch(() => {});
  }

  private settled(r: RowRef): boolean {
    try {
      return this.o.settled(r.reader, r.table, r.id);
    } catch {
      return false;
    }
  }

  /**
   * A committed transaction's rows to the engine, then its place among the positions to confirm. A
   * transaction that ended before the session began is a replay: its posts on record are looked up first.
   */
  private async handOver(s: Session, t: Committed): Promise<void> {
    const { changes, end, xid } = t;
    const replay = end <= s.replayUntil;
    if (!replay && changes.length > 0 && xid !== undefined) {
      await untilVisible(this.o.pool, this.o.logger, xid);
      if (this.current !== s || s.failed) return;
    }
    let onRecord: Set<string> | undefined;
    if (replay && changes.length > 0) {
      onRecord = await postsOnRecord(
        this.o.pool,
        changes.map((c) => ({ table: c.table, id: Number(c.values.id) })),
      );
      if (this.current !== s || s.failed) return;
    }
    s.positions.begin(t.committedAt);
    for (const c of changes) {
      const became = handRow(this.o, c, onRecord, (r) => s.positions.row(r));
      if (became !== 'skipped') this.rows += 1;
      if (became === 'replayed') this.replayed += 1;
    }
    s.positions.commit(end);
    if (end > s.handled) s.handled = end;
    this.confirm(s);
  }
}
