import { EventEmitter } from 'node:events';
import type pg from 'pg';
import { LogicalReplicationService, PgoutputPlugin, Wal2JsonPlugin } from 'pg-logical-replication';
import type { Logger } from 'pino';
import client from 'prom-client';
import type { Config, DatabaseConfig, SourceConfig } from '../../config/env.js';
import { clientConfig, describePgError } from '../../store/db.js';
import {
  canReplicate,
  createSlot,
  currentWal,
  ensurePublication,
  horizonAt,
  notYetVisible,
  postsOnRecord,
  publicationTables,
  qualifiedNames,
  readSlot,
  walLevel,
} from '../../store/replication.js';
import { sleep } from '../../util/clock.js';
import type { RowFields } from '../decode.js';
import { backoffSchedule } from '../listener.js';
import { formatLsn, Positions, parseLsn, type RowRef } from './positions.js';
import { sensorRow } from './rows.js';

/** The slot and publication an installation uses: named by the operator, or derived from the database. */
export interface ReplicationNames {
  plugin: 'pgoutput' | 'wal2json';
  slot: string;
  publication: string;
  /** Whether the publication is the engine's own (migrate and start make it hold exactly the tables). */
  ownPublication: boolean;
}

export function replicationNames(source: SourceConfig, database: string): ReplicationNames {
  const derived = `pump_monitor_${database.toLowerCase().replace(/[^a-z0-9_]/g, '_')}`.slice(0, 63);
  return {
    plugin: source.plugin,
    slot: source.slot ?? derived,
    publication: source.publication ?? 'pump_monitor',
    ownPublication: source.publication === undefined,
  };
}

/** A set-up problem that retrying will not fix: one line with the fix. */
export class ReplicationSetupError extends Error {
  override name = 'ReplicationSetupError';
}

/** What a table's inserts are handed to. */
export interface TableRoute {
  /** Sensor channels of the table, each with its pumps: a row goes to the intake once per channel. */
  channels: { channel: string; pumps: string[] }[];
  /** The logbook stream reading the table, when it is a logbook's. */
  logbook?: { id: string; channel: string };
  /** The readers (pumps and logbooks) that settle the table's rows. */
  readers: string[];
}

/** The tables the definitions read, each with where its rows go. */
export function tableRoutes(config: Pick<Config, 'pumps' | 'logbooks'>): Map<string, TableRoute> {
  const routes = new Map<string, TableRoute>();
  const at = (table: string) => {
    let r = routes.get(table);
    if (!r) {
      r = { channels: [], readers: [] };
      routes.set(table, r);
    }
    return r;
  };
  for (const p of config.pumps) {
    for (const s of p.sensors) {
      const r = at(s.table);
      let ch = r.channels.find((c) => c.channel === s.channel);
      if (!ch) {
        ch = { channel: s.channel, pumps: [] };
        r.channels.push(ch);
      }
      if (!ch.pumps.includes(p.id)) ch.pumps.push(p.id);
      if (!r.readers.includes(p.id)) r.readers.push(p.id);
    }
  }
  for (const l of config.logbooks) {
    for (const s of l.streams) {
      const r = at(s.table);
      r.logbook ??= { id: l.id, channel: s.channel };
      if (!r.readers.includes(l.id)) r.readers.push(l.id);
    }
  }
  return routes;
}

/**
 * Makes what the source needs, where the engine may: the publication (when it is the engine's own) holding
 * exactly the tables, and the slot. A managed service may make slots only through its API (IBM Cloud's
 * wal2json slots): then the error says so. Run by `migrate` and at start. Throws ReplicationSetupError
 * with the fix when it cannot.
 */
export async function prepareReplication(
  db: pg.ClientBase,
  names: ReplicationNames,
  tables: string[],
  opts: { createSlot: boolean } = { createSlot: true },
): Promise<{ createdSlot: boolean }> {
  const level = await walLevel(db);
  if (level !== 'logical') {
    throw new ReplicationSetupError(
      `SOURCE=replication needs wal_level=logical, the server has ${level}: set wal_level = logical in postgresql.conf and restart PostgreSQL (a managed service: its "logical replication" setting)`,
    );
  }
  if (names.plugin === 'pgoutput') {
    const pub = await publicationTables(db, names.publication);
    if (names.ownPublication) {
      await ensurePublication(db, names.publication, tables).catch((err: unknown) => {
        throw new ReplicationSetupError(
          `cannot make publication ${names.publication}: ${describePgError(err)}; the tables' owner runs CREATE PUBLICATION ${names.publication} FOR TABLE ${tables.join(', ')} WITH (publish = 'insert'), or name one with REPLICATION_PUBLICATION`,
        );
      });
    } else if (!pub) {
      throw new ReplicationSetupError(
        `REPLICATION_PUBLICATION=${names.publication}: no such publication; create it: CREATE PUBLICATION ${names.publication} FOR TABLE ${tables.join(', ')} WITH (publish = 'insert')`,
      );
    }
  }
  const slot = await readSlot(db, names.slot);
  if (slot) {
    if (slot.plugin !== names.plugin) {
      throw new ReplicationSetupError(
        `replication slot ${names.slot} uses plug-in ${slot.plugin}, REPLICATION_PLUGIN is ${names.plugin}: set REPLICATION_PLUGIN=${slot.plugin}, or drop the slot (SELECT pg_drop_replication_slot('${names.slot}')) and let migrate make it`,
      );
    }
    return { createdSlot: false };
  }
  if (!(await canReplicate(db))) {
    throw new ReplicationSetupError(
      `the database user may not use replication slots: ALTER ROLE <user> WITH REPLICATION (or, on a managed service, use its replication user)`,
    );
  }
  const how = `${names.plugin === 'wal2json' ? "on IBM Cloud, through the Databases API's logical replication slot call with plugin wal2json; elsewhere " : ''}SELECT pg_create_logical_replication_slot('${names.slot}', '${names.plugin}'); see docs/deployment.md`;
  if (!opts.createSlot) {
    throw new ReplicationSetupError(`replication slot ${names.slot} does not exist: create it (${how})`);
  }
  await createSlot(db, names.slot, names.plugin).catch((err: unknown) => {
    throw new ReplicationSetupError(
      `replication slot ${names.slot} does not exist and cannot be created here (${describePgError(err)}): create it (${how})`,
    );
  });
  return { createdSlot: true };
}

export interface ReplicationSourceOptions {
  db: DatabaseConfig;
  /** For the slot's lag, the horizon, and the post ledger of replayed rows. */
  pool: pg.Pool;
  names: ReplicationNames;
  routes: Map<string, TableRoute>;
  /** A sensor row, for every pump listing the channel (the intake's door for rows read from a table). */
  sensor: (channel: string, row: RowFields) => void;
  /**
   * A row the slot gives again (committed before this session began: it may have been handled before a
   * crash or a hand-over), for one pump, as catch-up hands a row: `postSettled` when its post is on record.
   */
  replay: (channel: string, row: RowFields, pump: string, postSettled: boolean) => void;
  /** A logbook row: its id, read by the logbook lane as a notified one. */
  logbook: (channel: string, id: number) => void;
  /** A logbook row given again whose post is on record: only its place in the ledger is rebuilt. */
  logbookOnRecord: (logbook: string, table: string, id: number) => void;
  /** Whether a reader's saved checkpoint is at or past the row (settled before; nothing to do). */
  passed: (reader: string, table: string, id: number) => boolean;
  /** Whether a reader has settled the row (the ledger's checkpoint in memory is at or past it). */
  settled: (reader: string, table: string, id: number) => boolean;
  /** Whether this replica may read the slot: it holds the slot's lease and owns every pump and logbook. */
  active: () => boolean;
  sessionName: string;
  reconnect: { baseDelayMs: number; maxDelayMs: number };
  logger: Logger;
  /** Prometheus registry for the lag gauges. */
  registry?: client.Registry;
  /** How often settled positions are confirmed (default 200 ms). */
  confirmEveryMs?: number;
}

export interface ReplicationSourceEvents {
  /** The stream is open: rows flow from the slot's confirmed position. */
  streaming: [];
  /** The stream ended (error, lost lease, stop). */
  stopped: [reason: string];
  confirmed: [lsn: string];
}

/** A row of a transaction, held until its commit arrives. */
interface Change {
  table: string;
  values: Record<string, unknown>;
  types: Map<string, { oid?: number; name?: string }>;
}

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
  txn: { committedAt: number; xid: number | undefined; changes: Change[] } | undefined;
  types: Map<number, Map<string, { oid?: number; name?: string }>>;
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
  /** Snapshots taken for the ledger's horizon, oldest first, until the stream has passed them. */
  private horizons: { xmin: number; lsn: bigint }[] = [];
  private lastHorizon: number | undefined;
  /** Rows handed over in all, and of them replayed: tests and the page read them. */
  rows = 0;
  replayed = 0;
  confirmations = 0;
  private readonly abort = new AbortController();
  private qualified = new Map<string, string>();

  constructor(private readonly o: ReplicationSourceOptions) {
    super();
    if (o.registry) {
      const self = this;
      new client.Gauge({
        name: 'pump_monitor_replication_lag_bytes',
        help: 'WAL the replication slot holds for this engine: from its confirmed position to the current one',
        registers: [o.registry],
        collect() {
          this.set(self.lagBytes ?? 0);
        },
      });
      new client.Gauge({
        name: 'pump_monitor_replication_lag_seconds',
        help: 'Age of the oldest transaction read from the slot and not yet confirmed (0 when none waits)',
        registers: [o.registry],
        collect() {
          this.set(self.lagSeconds());
        },
      });
      new client.Gauge({
        name: 'pump_monitor_replication_streaming',
        help: '1 while this replica reads the replication slot',
        registers: [o.registry],
        collect() {
          this.set(self.streaming ? 1 : 0);
        },
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
    this.abort.abort();
    clearInterval(this.lagTimer);
    await this.current?.service.stop().catch(() => {});
    await this.loop;
  }

  get isStreaming(): boolean {
    return this.streaming;
  }

  /**
   * The horizon the ledger bounds checkpoints by, in the stream's order (as the LISTEN session's is in
   * the notifications' order): the newest snapshot whose WAL position the stream has handed over. A
   * transaction older than it has finished, and its rows are in the engine. Undefined until one is.
   */
  async horizon(): Promise<number | undefined> {
    try {
      const h = await horizonAt(this.o.pool);
      this.horizons.push({ xmin: h.xmin, lsn: parseLsn(h.lsn) });
      if (this.horizons.length > 1_000) this.horizons.shift();
    } catch {
      // The last one found stands (an older horizon only holds checkpoints further back).
    }
    const handled = this.current?.handled ?? 0n;
    while (this.horizons.length > 0 && (this.horizons[0] as { lsn: bigint }).lsn <= handled) {
      this.lastHorizon = (this.horizons.shift() as { xmin: number }).xmin;
    }
    return this.lastHorizon;
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
    } catch (err) {
      return describePgError(err);
    }
    // A new service each time: the library would resume from the last position it received, and the
    // server honours a start position past the confirmed one, skipping rows not yet settled.
    const service = new LogicalReplicationService(clientConfig(this.o.db, this.o.sessionName), {
      acknowledge: { auto: false, timeoutSeconds: 0 },
    });
    const s: Session = {
      service,
      positions: new Positions(),
      replayUntil,
      handled: 0n,
      queue: [],
      draining: false,
      txn: undefined,
      types: new Map(),
      failed: undefined,
      fail: (why) => {
        s.failed ??= why;
        void service.stop().catch(() => {});
      },
    };
    this.current = s;
    let ended: string | undefined;
    service.on('error', (err: Error) => s.fail(describePgError(err)));
    service.on('start', () => {
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
      s.queue.push({ kind: 'keepalive', lsn, respond });
      void this.drain(s);
    });
    service.on('data', (lsn: string, msg: unknown) => {
      s.queue.push({ kind: 'data', lsn, msg });
      void this.drain(s);
    });
    const timer = setInterval(() => {
      if (!this.o.active()) {
        ended = 'inactive';
        void service.stop().catch(() => {});
        return;
      }
      this.confirm(s);
    }, this.o.confirmEveryMs ?? 200);
    const keepalive = setInterval(() => this.reply(s), 10_000);
    try {
      await service.subscribe(this.plugin(), names.slot);
      ended ??= 'the server ended the stream';
    } catch (err) {
      s.failed ??= describePgError(err);
    } finally {
      clearInterval(timer);
      clearInterval(keepalive);
      this.streaming = false;
      await service.stop().catch(() => {});
      service.removeAllListeners();
      s.queue.length = 0;
    }
    const why = this.stopped ? 'stopped' : (s.failed ?? ended ?? 'ended');
    if (s.failed) this.lastError = explain(s.failed, names.slot);
    this.emit('stopped', why);
    return s.failed ? explain(s.failed, names.slot) : why;
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
          if (!s.txn && at > s.handled) s.handled = at;
          if (!this.confirm(s) && e.respond) this.reply(s);
          continue;
        }
        if (this.o.names.plugin === 'pgoutput') await this.pgoutput(s, e.msg as PgoutputMessage);
        else await this.wal2json(s, e.lsn, e.msg as Wal2JsonTransaction);
      }
    } catch (err) {
      s.fail(`could not read a change: ${(err as Error).message}`);
    } finally {
      s.draining = false;
    }
  }

  private plugin(): PgoutputPlugin | Wal2JsonPlugin {
    const { names } = this.o;
    if (names.plugin === 'pgoutput') {
      return new PgoutputPlugin({ protoVersion: 1, publicationNames: [names.publication] });
    }
    const tables = [...this.o.routes.keys()].map((t) =>
      escapeWal2jsonName(this.qualified.get(t) ?? `public.${t}`),
    );
    return new Wal2JsonPlugin({
      includeXids: true,
      includeLsn: true,
      includeTimestamp: true,
      includeTypes: true,
      includeTypmod: false,
      addTables: tables.join(','),
    });
  }

  /** Confirms the settled prefix, if it moved; true when a status update went out. */
  private confirm(s: Session): boolean {
    if (!this.streaming || this.current !== s || !this.o.active()) return false;
    const to = s.positions.advance((r) => this.settled(r));
    if (to === undefined) return false;
    // The library reports `lsn + 1` as flushed: give it the byte before the position to confirm.
    void s.service.acknowledge(formatLsn(to - 1n));
    this.confirmedText = formatLsn(to);
    this.confirmations += 1;
    this.emit('confirmed', this.confirmedText);
    return true;
  }

  /** A status update that confirms nothing new (the server asked for a reply, or it is time for one). */
  private reply(s: Session): void {
    if (!this.streaming || this.current !== s) return;
    const at = s.positions.confirmed;
    void s.service.acknowledge(formatLsn(at > 0n ? at - 1n : 0n));
  }

  private settled(r: RowRef): boolean {
    try {
      return this.o.settled(r.reader, r.table, r.id);
    } catch {
      return false;
    }
  }

  private async pgoutput(s: Session, msg: PgoutputMessage): Promise<void> {
    switch (msg.tag) {
      case 'relation': {
        // The text output of every column, untouched: rows are rendered as the tables are read (rows.ts).
        for (const c of msg.columns) c.parser = (raw: unknown) => raw;
        s.types.set(msg.relationOid, new Map(msg.columns.map((c) => [c.name, { oid: c.typeOid }])));
        return;
      }
      case 'begin':
        s.txn = { committedAt: Number(BigInt(msg.commitTime as bigint) / 1000n), xid: msg.xid, changes: [] };
        return;
      case 'insert': {
        const table = this.tableOf(msg.relation.schema, msg.relation.name);
        if (table === undefined || !s.txn) return;
        s.txn.changes.push({
          table,
          values: msg.new,
          types: s.types.get(msg.relation.relationOid) ?? new Map(),
        });
        return;
      }
      case 'commit': {
        const t = s.txn ?? { committedAt: Date.now(), xid: undefined, changes: [] };
        await this.handOver(s, t.committedAt, t.changes, parseLsn(msg.commitEndLsn as string), t.xid);
        s.txn = undefined;
        return;
      }
      default:
        return;
    }
  }

  private async wal2json(s: Session, lsn: string, tx: Wal2JsonTransaction): Promise<void> {
    const at = tx.timestamp ? Date.parse(tx.timestamp.replace(' ', 'T')) : Number.NaN;
    const changes: Change[] = [];
    for (const c of tx.change ?? []) {
      if (c.kind !== 'insert') continue;
      const table = this.tableOf(c.schema ?? 'public', c.table);
      if (table === undefined) continue;
      const values: Record<string, unknown> = {};
      const types = new Map<string, { name?: string }>();
      (c.columnnames ?? []).forEach((n, i) => {
        values[n] = c.columnvalues?.[i];
        const t = c.columntypes?.[i];
        if (t !== undefined) types.set(n, { name: t });
      });
      changes.push({ table, values, types });
    }
    await this.handOver(
      s,
      Number.isFinite(at) ? at : Date.now(),
      changes,
      parseLsn(tx.nextlsn ?? lsn),
      tx.xid,
    );
  }

  /**
   * A committed transaction's rows to the engine, then its place among the positions to confirm. A
   * transaction that ended before the session began is a replay: its posts on record are looked up first.
   */
  private async handOver(
    s: Session,
    committedAt: number,
    changes: Change[],
    end: bigint,
    xid: number | undefined,
  ): Promise<void> {
    const replay = end <= s.replayUntil;
    if (!replay && changes.length > 0 && xid !== undefined) {
      await this.untilVisible(xid);
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
    s.positions.begin(committedAt);
    for (const c of changes) this.insert(s, c, onRecord);
    s.positions.commit(end);
    if (end > s.handled) s.handled = end;
    this.confirm(s);
  }

  /**
   * Waits (a few milliseconds at most, bounded) until other sessions see the transaction: the slot can
   * give a commit before it is visible, and the backend reads the row by its id. The notifications of
   * SOURCE=notify come after visibility, so they never needed this.
   */
  private async untilVisible(xid: number): Promise<void> {
    for (let attempt = 1; attempt <= VISIBILITY_TRIES; attempt++) {
      try {
        if ((await notYetVisible(this.o.pool, [xid])).length === 0) return;
      } catch (err) {
        this.o.logger.warn({ err: describePgError(err), xid }, 'could not check a transaction is visible');
        return;
      }
      await sleep(VISIBILITY_WAIT_MS);
    }
    this.o.logger.warn({ xid }, 'a transaction from the slot is still not visible; handing its rows on');
  }

  private tableOf(schema: string, name: string): string | undefined {
    if (!this.o.routes.has(name)) return undefined;
    const q = this.qualified.get(name);
    return q === undefined || q === `${schema}.${name}` ? name : undefined;
  }

  /** One row to its readers; `onRecord` (a replay) says which of them have its post on record. */
  private insert(s: Session, c: Change, onRecord: Set<string> | undefined): void {
    const { o } = this;
    const route = o.routes.get(c.table);
    if (!route) return;
    const id = Number(c.values.id);
    if (!Number.isSafeInteger(id)) {
      o.logger.warn({ table: c.table, id: c.values.id }, 'a row from the slot with no usable id; skipped');
      return;
    }
    this.rows += 1;
    // Registered before it is handed over: a row settled at once (a duplicate) is seen settled.
    for (const reader of route.readers) s.positions.row({ reader, table: c.table, id });
    const row = route.channels.length > 0 ? (sensorRow(c.values, c.types) as RowFields) : undefined;
    if (!onRecord) {
      if (row) for (const ch of route.channels) o.sensor(ch.channel, row);
      if (route.logbook) o.logbook(route.logbook.channel, id);
      return;
    }
    this.replayed += 1;
    if (row) {
      for (const ch of route.channels) {
        for (const pump of ch.pumps) {
          if (o.passed(pump, c.table, id)) continue;
          o.replay(ch.channel, row, pump, onRecord.has(`${pump}\0${c.table}\0${id}`));
        }
      }
    }
    if (route.logbook) {
      const { id: logbook, channel } = route.logbook;
      if (o.passed(logbook, c.table, id)) return;
      if (onRecord.has(`${logbook}\0${c.table}\0${id}`)) o.logbookOnRecord(logbook, c.table, id);
      else o.logbook(channel, id);
    }
  }
}

/** How often, and how long apart, a transaction's visibility is asked before its rows are handed on. */
const VISIBILITY_TRIES = 200;
const VISIBILITY_WAIT_MS = 5;

/** A wal2json table name in add-tables: dots, commas and backslashes escaped. */
function escapeWal2jsonName(qualified: string): string {
  const dot = qualified.indexOf('.');
  const esc = (s: string) => s.replace(/([\\,.])/g, '\\$1');
  return `${esc(qualified.slice(0, dot))}.${esc(qualified.slice(dot + 1))}`;
}

/** A stream error in one line with its fix, for the log and /status. */
function explain(err: string, slot: string): string {
  if (/is active for PID/i.test(err)) return `slot ${slot} is read by another session (${err})`;
  if (/does not exist/i.test(err))
    return `${err}: run pump-monitor migrate with SOURCE=replication, or create the slot`;
  if (/must be superuser or replication role|permission denied/i.test(err)) {
    return `${err}: the database user needs REPLICATION (ALTER ROLE <user> WITH REPLICATION)`;
  }
  return err;
}

interface PgoutputColumn {
  name: string;
  typeOid: number;
  parser: (raw: unknown) => unknown;
}

type PgoutputMessage =
  | { tag: 'relation'; relationOid: number; schema: string; name: string; columns: PgoutputColumn[] }
  | { tag: 'begin'; commitTime: bigint; xid: number }
  | {
      tag: 'insert';
      relation: { relationOid: number; schema: string; name: string };
      new: Record<string, unknown>;
    }
  | { tag: 'commit'; commitEndLsn: string | null }
  | { tag: 'other' };

interface Wal2JsonTransaction {
  xid?: number;
  nextlsn?: string;
  timestamp?: string;
  change?: {
    kind: string;
    schema?: string;
    table: string;
    columnnames?: string[];
    columntypes?: string[];
    columnvalues?: unknown[];
  }[];
}
