import type pg from 'pg';
import { LogicalReplicationService } from 'pg-logical-replication';
import type { DatabaseConfig } from '../../config/env.js';
import { CONNECT_TIMEOUT_MS, describePgError, engineSessionConfig } from '../../store/db.js';
import { postsOnRecord } from '../../store/replication.js';
import { abortSession } from '../../store/sessions.js';
import {
  type Committed,
  outputPlugin,
  type PgoutputMessage,
  PgoutputReader,
  type Wal2JsonTransaction,
  wal2jsonTransaction,
} from './messages.js';
import { formatLsn, Positions, parseLsn, type RowRef } from './positions.js';
import { handRow, type RowDoors } from './readers.js';
import type { ReplicationNames } from './setup.js';
import { untilVisible } from './visibility.js';

/** What every replica's replication session is named by, before its replica's id. */
export const REPLICATION_SESSION = 'pm-repl:';

/** What one session needs: the connection, the slot, the engine's doors and the ledger's answers. */
export interface SessionOptions extends RowDoors {
  db: DatabaseConfig;
  /** For the visibility wait and the post ledger of replayed rows. */
  pool: pg.Pool;
  names: ReplicationNames;
  /** Whether a reader has settled the row (the ledger's checkpoint in memory is at or past it). */
  settled: (reader: string, table: string, id: number) => boolean;
  /** Whether this replica may read the slot: it holds the slot's lease and owns every pump and logbook. */
  active: () => boolean;
  /** Names the replication session (`application_name`): REPLICATION_SESSION and this replica's id. */
  replicaId: string;
  /** How often settled positions are confirmed (default 200 ms). */
  confirmEveryMs?: number;
  /**
   * The stream's own liveness check, on the LISTEN heartbeat's settings: a status update asking for the
   * server's reply every `intervalMs`, and a session that heard nothing for `intervalMs + timeoutMs` is
   * torn down and opened again (a half-open socket is otherwise noticed only when TCP gives up).
   */
  heartbeat: { intervalMs: number; timeoutMs: number };
}

/** What a session tells its source, each as it happens. */
export interface SessionHooks {
  /** The stream is open: rows flow from the slot's confirmed position. */
  streaming(): void;
  /** A row handed to the engine; `replayed` when it went the way catch-up hands a row. */
  handed(replayed: boolean): void;
  confirmed(lsn: string): void;
  /** The session has ended, before its connection is closed (the reason is known from here on). */
  ending(end: SessionEnd): void;
}

/** Why a session ended: `failed` for a fault, else `ended` (the server ended it, or 'inactive'). */
export interface SessionEnd {
  failed: string | undefined;
  ended: string | undefined;
}

type StreamEvent =
  | { kind: 'data'; lsn: string; msg: unknown }
  | { kind: 'keepalive'; lsn: string; respond: boolean };

/** Ends a replication session at once, in whatever state it is (`abortSession`). */
function tearDown(service: LogicalReplicationService): void {
  const client = (service as unknown as { _client?: pg.Client | null })._client;
  if (client) abortSession(client, 'replication session ended by the engine');
}

/**
 * One replication session, from the slot's confirmed position until it ends: its connection, the
 * messages in arrival order, the positions it may confirm, and its liveness check. A new session starts
 * again from the slot (a new service each time: the library would resume from the last position it
 * received, and the server honours a start position past the confirmed one, skipping rows not yet
 * settled). Writes nothing but the slot's position.
 */
export class StreamSession {
  private readonly positions = new Positions();
  private readonly service: LogicalReplicationService;
  /** The pgoutput stream's relations and open transaction (wal2json gives a transaction in one message). */
  private readonly pgoutput: PgoutputReader;
  private readonly queue: StreamEvent[] = [];
  private draining = false;
  private open = false;
  /** Set once `run` has returned from the stream: nothing more is handed over or confirmed. */
  private over = false;
  private failed: string | undefined;
  private ended: string | undefined;
  /** Every transaction ending at or below it has been handed over (or the server had sent nothing else). */
  private handledTo = 0n;

  /**
   * `replayUntil`: transactions ending at or below it committed before the session began (replayed rows).
   * `tableOf`: a table of the definitions by the schema and name the slot gives.
   */
  constructor(
    private readonly o: SessionOptions,
    private readonly replayUntil: bigint,
    private readonly tableOf: (schema: string, name: string) => string | undefined,
    private readonly hooks: SessionHooks,
  ) {
    this.service = new LogicalReplicationService(
      engineSessionConfig(o.db, `${REPLICATION_SESSION}${o.replicaId}`),
      {
        acknowledge: { auto: false, timeoutSeconds: 0 },
      },
    );
    this.pgoutput = new PgoutputReader(tableOf);
  }

  get isStreaming(): boolean {
    return this.open;
  }

  get handled(): bigint {
    return this.handledTo;
  }

  /** Still giving again what was committed before it began. */
  get replaying(): boolean {
    return this.handledTo < this.replayUntil;
  }

  get pending(): number {
    return this.positions.pending;
  }

  /** When the oldest transaction not yet confirmable committed (ms since the epoch). */
  oldestWaiting(): number | undefined {
    return this.positions.oldestWaiting();
  }

  /** Ends the session with a fault (the first reason stays), its connection torn down. */
  fail(why: string): void {
    this.failed ??= why;
    tearDown(this.service);
  }

  /** Streams `tables` (qualified names) until the session ends, or `signal` aborts it; says why it ended. */
  async run(tables: string[], signal: AbortSignal): Promise<SessionEnd> {
    const { names, logger } = this.o;
    const service = this.service;
    const onStop = () => this.fail('stopped');
    signal.addEventListener('abort', onStop, { once: true });
    // When the session was opened, and when the server was last heard (from the stream's start on).
    const opened = Date.now();
    let heard = opened;
    service.on('error', (err: Error) => {
      if (!this.ended) this.fail(describePgError(err));
    });
    service.on('start', () => {
      if (this.failed || this.ended) return;
      heard = Date.now();
      this.open = true;
      logger.info({ slot: names.slot, plugin: names.plugin }, 'reading the replication slot');
      // A keepalive at once: it tells how far the server has sent, so the replay's end is known soon.
      void service.acknowledge('0/0', true).catch(() => {});
      this.hooks.streaming();
    });
    // Every message in arrival order, one at a time: a keepalive never overtakes a transaction still
    // being handed over, so it never confirms past one.
    service.on('heartbeat', (lsn: string, _ts: number, respond: boolean) => {
      heard = Date.now();
      this.queue.push({ kind: 'keepalive', lsn, respond });
      void this.drain();
    });
    service.on('data', (lsn: string, msg: unknown) => {
      heard = Date.now();
      this.queue.push({ kind: 'data', lsn, msg });
      void this.drain();
    });
    const timer = setInterval(() => {
      if (!this.o.active()) {
        this.ended ??= 'inactive';
        tearDown(service);
        return;
      }
      this.confirm();
    }, this.o.confirmEveryMs ?? 200);
    const { intervalMs, timeoutMs } = this.o.heartbeat;
    const keepalive = setInterval(() => {
      // Ended, and not returned yet: a connection the library opened since the end goes too.
      if (this.failed || this.ended) {
        tearDown(service);
        return;
      }
      if (!this.open) {
        // Connecting, or START_REPLICATION unanswered: bounded as a connection is, and then the check's.
        const waited = Date.now() - opened;
        if (waited > CONNECT_TIMEOUT_MS + intervalMs + timeoutMs)
          this.fail(`the stream did not open within ${waited} ms`);
        return;
      }
      const silent = Date.now() - heard;
      if (silent <= intervalMs + timeoutMs) {
        this.reply(true);
        return;
      }
      // A half-open socket: torn down, since ending it politely would wait for the peer for ever.
      this.fail(`no message from the server for ${silent} ms (HEARTBEAT_INTERVAL_MS + HEARTBEAT_TIMEOUT_MS)`);
    }, intervalMs);
    try {
      await service.subscribe(outputPlugin(names, tables), names.slot);
      this.ended ??= 'the server ended the stream';
    } catch (err) {
      if (!this.ended) this.failed ??= describePgError(err);
    } finally {
      signal.removeEventListener('abort', onStop);
      clearInterval(timer);
      clearInterval(keepalive);
      this.over = true;
      this.open = false;
      // The reason first: /readyz, asked while the service stops below, names it rather than "opening".
      this.hooks.ending({ failed: this.failed, ended: this.ended });
      await service.stop().catch(() => {});
      service.removeAllListeners();
      this.queue.length = 0;
    }
    return { failed: this.failed, ended: this.ended };
  }

  private get live(): boolean {
    return !this.over && !this.failed;
  }

  private async drain(): Promise<void> {
    if (this.draining) return;
    this.draining = true;
    try {
      while (this.queue.length > 0 && this.live) {
        const e = this.queue.shift() as StreamEvent;
        if (e.kind === 'keepalive') {
          const at = parseLsn(e.lsn);
          this.positions.keepalive(at);
          if (!this.pgoutput.open && at > this.handledTo) this.handledTo = at;
          if (!this.confirm() && e.respond) this.reply();
          continue;
        }
        const t =
          this.o.names.plugin === 'pgoutput'
            ? this.pgoutput.read(e.msg as PgoutputMessage)
            : wal2jsonTransaction(e.msg as Wal2JsonTransaction, e.lsn, this.tableOf);
        if (t) await this.handOver(t);
      }
    } catch (err) {
      this.fail(`could not read a change: ${(err as Error).message}`);
    } finally {
      this.draining = false;
    }
  }

  /** Confirms the settled prefix, if it moved; true when a status update went out. */
  private confirm(): boolean {
    if (!this.open || !this.live || !this.o.active()) return false;
    const to = this.positions.advance((r) => this.settled(r));
    if (to === undefined) return false;
    // The library reports `lsn + 1` as flushed: give it the byte before the position to confirm.
    void this.service.acknowledge(formatLsn(to - 1n)).catch(() => {});
    this.hooks.confirmed(formatLsn(to));
    return true;
  }

  /**
   * A status update that confirms nothing new (the server asked for a reply, or it is time for one);
   * `ask`: the server is to answer it at once (the stream's liveness check).
   */
  private reply(ask = false): void {
    if (!this.open || !this.live) return;
    const at = this.positions.confirmed;
    void this.service.acknowledge(formatLsn(at > 0n ? at - 1n : 0n), ask).catch(() => {});
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
  private async handOver(t: Committed): Promise<void> {
    const { changes, end, xid } = t;
    const replay = end <= this.replayUntil;
    if (!replay && changes.length > 0 && xid !== undefined) {
      await untilVisible(this.o.pool, this.o.logger, xid);
      if (!this.live) return;
    }
    let onRecord: Set<string> | undefined;
    if (replay && changes.length > 0) {
      onRecord = await postsOnRecord(
        this.o.pool,
        changes.map((c) => ({ table: c.table, id: Number(c.values.id) })),
      );
      if (!this.live) return;
    }
    this.positions.begin(t.committedAt);
    for (const c of changes) {
      const became = handRow(this.o, c, onRecord, (r) => this.positions.row(r));
      if (became !== 'skipped') this.hooks.handed(became === 'replayed');
    }
    this.positions.commit(end);
    if (end > this.handledTo) this.handledTo = end;
    this.confirm();
  }
}
