import type pg from 'pg';
import type client from 'prom-client';
import { describePgError } from '../../store/db.js';
import { currentWal, endStaleReaders, qualifiedNames, readSlot } from '../../store/replication.js';
import { sleep } from '../../util/clock.js';
import { backoffSchedule } from '../listener.js';
import { StreamHorizon } from './horizon.js';
import { registerReplicationGauges } from './metrics.js';
import { parseLsn } from './positions.js';
import { REPLICATION_SESSION, type SessionOptions, StreamSession } from './session.js';
import { explainStreamError, prepareReplication } from './setup.js';

export interface ReplicationSourceOptions extends SessionOptions {
  reconnect: { baseDelayMs: number; maxDelayMs: number };
  /** Prometheus registry for the lag gauges. */
  registry?: client.Registry;
}

/**
 * The replication source (SOURCE=replication): reads the inserts of the definitions' tables from a logical
 * replication slot (pgoutput with a publication, or wal2json), in commit order, with no trigger and no
 * NOTIFY. A transaction's rows are handed over when its commit arrives, each to the same door as a row
 * catch-up reads; rows the slot gives again after a restart or a takeover go the way catch-up's do (their
 * posts on record are not sent again). The slot's confirmed position advances only past transactions
 * whose every row its readers have settled. Reads only while `active()`: one slot, one reader. Owns its
 * replication connection and its sessions (`StreamSession`, session.ts), one at a time, each opened again
 * after a fault on the reconnection's schedule; writes nothing but the slot's position.
 */
export class ReplicationSource {
  private stopped = false;
  private loop: Promise<void> | undefined;
  private current: StreamSession | undefined;
  private failures = 0;
  private lastError: string | undefined;
  private lagBytes: number | undefined;
  private lagTimer: NodeJS.Timeout | undefined;
  private confirmedText: string | undefined;
  private readonly horizons = new StreamHorizon();
  private handed = 0;
  private replayed = 0;
  private readonly abort = new AbortController();
  private qualified = new Map<string, string>();
  /** A table of the definitions by the schema and name the slot gives (its qualified name when known). */
  private readonly tableOf = (schema: string, name: string): string | undefined => {
    if (!this.o.routes.has(name)) return undefined;
    const q = this.qualified.get(name);
    return q === undefined || q === `${schema}.${name}` ? name : undefined;
  };

  constructor(private readonly o: ReplicationSourceOptions) {
    if (o.registry) {
      registerReplicationGauges(o.registry, {
        lagBytes: () => this.lagBytes ?? 0,
        lagSeconds: () => this.lagSeconds(),
        streaming: () => this.isStreaming,
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
    if (this.stopped || this.isStreaming || !this.o.active()) return undefined;
    const why = this.lastError ? `: ${this.lastError}` : ' (opening)';
    return `replication stream of slot ${this.o.names.slot} not read${why}`;
  }

  get isStreaming(): boolean {
    return this.current?.isStreaming ?? false;
  }

  /** Rows handed to the engine in all (the replayed among them). */
  get rows(): number {
    return this.handed;
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
    return !s?.isStreaming || s.replaying;
  }

  lagSeconds(): number {
    const oldest = this.current?.oldestWaiting();
    return oldest === undefined ? 0 : Math.max(0, (Date.now() - oldest) / 1000);
  }

  status() {
    return {
      slot: this.o.names.slot,
      plugin: this.o.names.plugin,
      publication: this.o.names.plugin === 'pgoutput' ? this.o.names.publication : null,
      streaming: this.isStreaming,
      confirmed_lsn: this.confirmedText ?? null,
      lag_bytes: this.lagBytes ?? null,
      lag_seconds: Math.round(this.lagSeconds() * 10) / 10,
      rows_pending: this.current?.pending ?? 0,
      rows: this.handed,
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
    const s = new StreamSession(this.o, replayUntil, this.tableOf, {
      streaming: () => {
        this.failures = 0;
        this.lastError = undefined;
      },
      handed: (replayed) => {
        this.handed += 1;
        if (replayed) this.replayed += 1;
      },
      confirmed: (lsn) => {
        this.confirmedText = lsn;
      },
      ending: ({ failed, ended }) => {
        if (failed) this.lastError = explainStreamError(failed, names.slot);
        else if (ended !== 'inactive') this.lastError = ended ?? 'the server ended the stream';
      },
    });
    this.current = s;
    const tables = [...this.o.routes.keys()].map((t) => this.qualified.get(t) ?? `public.${t}`);
    const { failed, ended } = await s.run(tables, this.abort.signal);
    if (failed) {
      // A change that failed while the connection closed still names the end.
      this.lastError = explainStreamError(failed, names.slot);
      return this.lastError;
    }
    return this.stopped ? 'stopped' : (ended ?? 'ended');
  }
}
