import { randomBytes } from 'node:crypto';
import { EventEmitter, setMaxListeners } from 'node:events';
import { hostname } from 'node:os';
import type pg from 'pg';
import type { Logger } from 'pino';
import type { Config, DatabaseConfig } from '../config/env.js';
import { BackendClient, createAgent } from '../delivery/backend-client.js';
import { OutboxRecorder } from '../delivery/outbox-recorder.js';
import {
  breakerState,
  createBreaker,
  describeRouteFault,
  type RouteFault,
  RouteGuard,
} from '../delivery/policy.js';
import { PostPipeline } from '../delivery/post-pipeline.js';
import type { Backend } from '../delivery/sensor-poster.js';
import { HealthUnit } from '../health/health-unit.js';
import { observeHealth } from '../health/observe-health.js';
import { CheckpointKeeper, LedgerError } from '../ledger/checkpoint-keeper.js';
import { CatchUpRunner } from '../source/catch-up.js';
import { Decoder } from '../source/decode.js';
import { Intake } from '../source/intake.js';
import { backoffSchedule, Listener } from '../source/listener.js';
import { RowFetcher } from '../source/row-fetcher.js';
import type { Reader } from '../store/checkpoints.js';
import {
  createPool,
  DatabaseUnavailableError,
  describePgError,
  isPermanentConnectFault,
} from '../store/db.js';
import { bareDeadLetter, type DeadLetter, insertDeadLetters } from '../store/dead-letters.js';
import { SchemaVersionError } from '../store/migrations.js';
import { countPending } from '../store/outbox.js';
import { ensureEngineSchema, PrivilegeError } from '../store/schema.js';
import { missingTables } from '../store/sensor-rows.js';
import { BatchWriter, writersOf } from '../util/batch.js';
import { type Clock, sleep, systemClock } from '../util/clock.js';
import { Activation } from './activation.js';
import { registerGauges } from './gauges.js';
import { Housekeeper } from './housekeeper.js';
import { LeaseKeeper } from './leases.js';
import { LogbookLane } from './logbook-lane.js';
import { observe } from './observe.js';
import { PumpLane } from './pump-lane.js';
import { Telemetry } from './telemetry.js';

export interface MonitorOptions {
  config: Config & { database: DatabaseConfig };
  logger: Logger;
  clock?: Clock;
  /** How often open groups are checked for settle time and expiry. */
  tickMs?: number;
  checkpointEveryMs?: number;
  /** How often each pump's summary line is logged at info; 60 s. */
  summaryEveryMs?: number;
  /** Shows a long catch-up's progress (a terminal line); without it, only the final log line says it. */
  progress?: (text: string | undefined) => void;
}

export interface MonitorEvents {
  fatal: [error: Error];
}

interface PendingDeadLetter {
  letter: DeadLetter;
  settle?: () => void;
}

/**
 * The composition root. It builds the units along the data's path, wires them, starts them in order and
 * stops them in the reverse order, and lets telemetry observe their events. It holds no state of the
 * data's path itself:
 *
 *   Listener ─▶ Intake ─▶ PumpLane (assembler ─▶ OutboxRecorder ─▶ VectorSender) ─▶ backend
 *                  └────▶ PostPipeline (queue ─▶ SensorPoster, or deferred_posts) ─▶ backend
 *   CatchUpRunner ─▶ Intake (rows missed while not listening)
 *   CheckpointKeeper: rows begun by the intake, settled by the lanes and the posts
 *   Activation: leases ─▶ take / hand over / leave a pump's lane
 */
export class Monitor extends EventEmitter<MonitorEvents> {
  readonly telemetry: Telemetry;
  readonly listener: Listener;
  readonly leases: LeaseKeeper;
  readonly housekeeper: Housekeeper;
  /** Verdicts of the pumps and their channels (issue 23): fed by the engine's events, never in their way. */
  readonly health: HealthUnit;
  readonly startedAt = Date.now();
  /** Names this process's database sessions: pm-listen:<id>, pm-lease:<group>:<id>. */
  readonly replicaId: string;
  private readonly config: MonitorOptions['config'];
  private readonly log: Logger;
  private readonly pool: pg.Pool;
  private readonly rowPool: pg.Pool;
  private readonly lifetime = new AbortController();
  private readonly agent = createAgent();
  private readonly backends = new Map<string, Backend>();
  private readonly ledger: CheckpointKeeper;
  private readonly deadLetters: BatchWriter<PendingDeadLetter>;
  private readonly recorder: OutboxRecorder;
  private readonly lanes = new Map<string, PumpLane>();
  private readonly logbooks = new Map<string, LogbookLane>();
  private readonly posts: PostPipeline;
  private readonly intake: Intake;
  private readonly rows: RowFetcher;
  private readonly catchUp: CatchUpRunner;
  private readonly activation: Activation;
  private readonly outboxDepth = new Map<string, number>();
  /** Each pump's readers (pump, table). */
  private readonly readersOf = new Map<string, Reader[]>();
  private timers: NodeJS.Timeout[] = [];
  private stopping = false;
  /** Checkouts of the pool: about one per query, since almost every query is a pool.query. */
  private dbQueries = 0;

  constructor(private readonly o: MonitorOptions) {
    super();
    const { config } = o;
    this.config = config;
    this.log = o.logger;
    const clock = o.clock ?? systemClock;
    const signal = this.lifetime.signal;
    // Writers, senders, catch-up and waits all listen on the engine's lifetime.
    setMaxListeners(100, signal);
    this.telemetry = new Telemetry(config.pumps);
    this.pool = createPool(config.database, 'pump-monitor', 6, config.dbQueryTimeoutMs);
    const queries = this.telemetry.dbQueries.tally();
    this.pool.on('acquire', () => {
      this.dbQueries += 1;
      queries.inc();
    });
    this.replicaId = `${hostname().slice(0, 24)}-${process.pid}-${randomBytes(3).toString('hex')}`;
    const decoder = new Decoder(config.pumps);
    this.listener = new Listener({
      sessionName: `pm-listen:${this.replicaId}`,
      db: config.database,
      channels: [...decoder.channels, ...config.logbooks.flatMap((l) => l.streams.map((s) => s.channel))],
      reconnect: config.reconnect,
      heartbeat: config.heartbeat,
      logger: this.log.child({ stage: 'source' }),
    });
    const storeLetters = async (items: PendingDeadLetter[], letters: DeadLetter[]) => {
      await insertDeadLetters(this.pool, letters);
      for (const i of items) {
        this.telemetry.deadLetters.inc({ pump: i.letter.pump ?? 'unknown', kind: i.letter.kind });
        i.settle?.();
      }
    };
    this.deadLetters = new BatchWriter(
      (items) =>
        storeLetters(
          items,
          items.map((i) => i.letter),
        ),
      {
        name: 'dead_letters',
        maxBatch: 200,
        retryMs: 500,
        onError: (err, n) =>
          this.log.warn({ err: describePgError(err), items: n }, 'writing dead letters failed; retrying'),
        // A letter refused even sanitised: stored without what it carried, rather than lost or in the way.
        onPoison: (i, err) => {
          this.log.error(
            { err: describePgError(err), kind: i.letter.kind, pump: i.letter.pump, reason: i.letter.reason },
            'a dead letter was refused by the database; storing it without its payload and answer',
          );
          return storeLetters([i], [bareDeadLetter(i.letter, err)]);
        },
        signal,
      },
    );
    /** A backend: its client on the shared connection pool, and a circuit breaker of its own. */
    const backend = (
      baseUrl: string,
      timeoutMs: number,
      onAnswer: (path: string, status: number) => void,
    ) => ({
      breaker: createBreaker({
        threshold: config.delivery.breakerThreshold,
        halfOpenAfterMs: config.delivery.breakerHalfOpenMs,
        maxHalfOpenAfterMs: config.delivery.breakerHalfOpenMaxMs,
      }),
      client: new BackendClient({ baseUrl, apiKey: config.apiKey, timeoutMs, agent: this.agent, onAnswer }),
    });
    for (const p of config.pumps) {
      const b: Backend = backend(p.baseUrl, config.delivery.timeoutMs, (path, status) =>
        this.telemetry.backendAnswer(p.id, path === p.unifiedPath, status),
      );
      // A refused route (redirect, 401, 403) holds the pump's deliveries: said once as it begins and ends.
      const routeLog = this.log.child({ stage: 'delivery', pump: p.id });
      b.route = new RouteGuard((fault, was) => {
        if (fault) {
          routeLog.error(
            { status: fault.status, ...(fault.location !== undefined ? { location: fault.location } : {}) },
            `backend route refused: ${describeRouteFault(fault)}; vectors stay pending and per-sensor posts queued or deferred, none dead-lettered`,
          );
        } else if (was) {
          routeLog.warn(
            { status: was.status, refusals: was.refusals },
            'backend route answers again; delivery resumes',
          );
        }
      });
      this.backends.set(p.id, b);
    }
    const owned = () => [...this.activation.active];
    for (const p of config.pumps)
      this.readersOf.set(
        p.id,
        p.sensors.map((s) => ({ pump: p.id, table: s.table })),
      );
    // The rows notifications name are read on a connection of their own, kept open: the live path waits
    // on no writer, catch-up or checkpoint save for a pooled connection.
    this.rowPool = createPool(config.database, 'pump-monitor', 1, config.dbQueryTimeoutMs, 0);
    this.rowPool.on('acquire', () => {
      this.dbQueries += 1;
      queries.inc();
    });
    this.rows = new RowFetcher({ pool: this.rowPool, logger: this.log.child({ stage: 'source' }) });
    this.ledger = new CheckpointKeeper({
      pool: this.pool,
      logger: this.log.child({ stage: 'ledger' }),
      everyMs: o.checkpointEveryMs ?? 250,
      horizon: () => this.listener.horizon(),
      ownedReaders: () => this.activation.ownedReaders(),
    });
    this.recorder = new OutboxRecorder({
      pool: this.pool,
      logger: this.log.child({ stage: 'outbox' }),
      signal,
    });
    for (const p of config.pumps) {
      this.lanes.set(
        p.id,
        new PumpLane({
          pump: p,
          assembler: config.assembler,
          clock,
          pool: this.pool,
          recorder: this.recorder,
          ledger: this.ledger,
          backend: this.backends.get(p.id) as Backend,
          retryBaseMs: config.delivery.retryBaseMs,
          retryMaxMs: config.delivery.retryMaxMs,
          logger: this.log.child({ stage: 'delivery', pump: p.id }),
        }),
      );
    }
    for (const l of config.logbooks) {
      // Its own client and breaker: a slow classification (an LLM) never holds up the sensor readings.
      const logbookBackend = backend(l.baseUrl, l.timeoutMs, (_path, status) =>
        this.telemetry.backendAnswer(l.id, false, status),
      );
      this.logbooks.set(
        l.id,
        new LogbookLane({
          logbook: l,
          pool: this.pool,
          ledger: this.ledger,
          backend: logbookBackend,
          concurrency: 2,
          maxAttempts: config.delivery.sensorMaxAttempts,
          retryBaseMs: config.delivery.retryBaseMs,
          retryMaxMs: config.delivery.retryMaxMs,
          batch: config.catchUpBatch,
          rows: this.rows,
          deadLetter: (letter, settle) => this.deadLetters.push({ letter, settle }),
          signal,
          logger: this.log.child({ stage: 'logbook', logbook: l.id }),
        }),
      );
    }
    this.posts = new PostPipeline({
      pool: this.pool,
      logger: this.log.child({ stage: 'posts' }),
      signal,
      backends: this.backends,
      decoder,
      maxQueued: config.delivery.sensorQueue,
      concurrency: config.delivery.sensorConcurrency,
      maxAttempts: config.delivery.sensorMaxAttempts,
      retryBaseMs: config.delivery.retryBaseMs,
      retryMaxMs: config.delivery.retryMaxMs,
      settle: (r) => this.ledger.settle(r.pump, r.sensor.table, r.id),
      deadLetter: (letter, settle) => this.deadLetters.push({ letter, settle }),
      // A logbook's queued retries are its lane's to read.
      owned: () => owned().filter((id) => !this.logbooks.has(id)),
    });
    this.activation = new Activation({
      pumps: config.pumps,
      lanes: this.lanes,
      logbooks: this.logbooks,
      logger: this.log.child({ stage: 'leases' }),
      haltGraceMs: Math.min(config.delivery.timeoutMs, 2_000),
      reload: (readers) => this.ledger.load(this.pool, readers),
      hold: (readers) => this.ledger.hold(readers),
      postsIdle: () => this.posts.idle(),
      flushRecords: async () => {
        await this.recorder.flush();
        await this.posts.flush();
      },
      saveCheckpoints: (readers) => this.ledger.flush(readers),
      taken: () => {
        this.posts.rewind();
        if (this.listener.listening) this.catchUp.request();
      },
    });
    this.intake = new Intake({
      decoder,
      clock,
      logger: this.log.child({ stage: 'intake' }),
      owns: (pump) => this.activation.owns(pump),
      begin: (pump, table, id, parts) => this.ledger.begin(pump, table, id, parts),
      reader: (pump, table) => this.ledger.reader(pump, table),
      rows: this.rows,
      missed: () => this.catchUp.request(),
      settle: (pump, table, id) => this.ledger.settle(pump, table, id),
      lane: (pump) => this.lanes.get(pump) as PumpLane,
      posts: config.delivery.sensorPosts ? this.posts : undefined,
      deadLetter: (letter, settle) => this.deadLetters.push({ letter, ...(settle ? { settle } : {}) }),
    });
    this.catchUp = new CatchUpRunner({
      pool: this.pool,
      pumps: () => config.pumps.filter((p) => this.activation.owns(p.id)),
      ledger: this.ledger,
      batch: config.catchUpBatch,
      handle: (channel, row, postSettled, pump) =>
        this.intake.row(channel, row, 'catchup', postSettled, pump),
      capacity: () => this.capacity(),
      signal,
      listening: () => this.listener.listening,
      logger: this.log.child({ stage: 'catch-up' }),
      ...(o.progress ? { progress: o.progress } : {}),
      onRows: (pump, n) => {
        this.telemetry.pump(pump).catchup_rows += n;
        this.telemetry.catchUpRows.inc({ pump }, n);
      },
    });
    this.leases = new LeaseKeeper({
      db: config.database,
      pumps: [...config.pumps.map((p) => p.id), ...config.logbooks.map((l) => l.id)],
      logger: this.log.child({ stage: 'leases' }),
      intervalMs: config.leaseIntervalMs,
      replicaId: this.replicaId,
      queryTimeoutMs: config.dbQueryTimeoutMs,
      hooks: this.activation,
    });
    this.housekeeper = new Housekeeper({
      pool: this.pool,
      retention: config.retention,
      owned,
      logger: this.log.child({ stage: 'retention' }),
    });
    observe(this.telemetry, {
      intake: this.intake,
      lanes: this.lanes,
      logbooks: this.logbooks,
      posts: this.posts,
      listener: this.listener,
      log: this.log,
      signal,
      ...(o.summaryEveryMs !== undefined ? { summaryEveryMs: o.summaryEveryMs } : {}),
    });
    // Health (issue 23): its own unit, fed from the intake's and lanes' events like telemetry.
    this.health = new HealthUnit({
      pumps: config.pumps,
      clock,
      owns: (pump) => this.activation.owns(pump),
      listening: () => this.listener.listening,
      pool: this.pool,
      logger: this.log.child({ stage: 'health' }),
      replica: this.replicaId,
      signal,
      retentionEveryMs: config.retention.intervalMs,
    });
    observeHealth(this.health, { intake: this.intake, lanes: this.lanes });
    this.health.registerMetrics((...a) => this.telemetry.gauge(...a));
    registerGauges(this.telemetry, {
      pool: this.pool,
      lanes: this.lanes,
      outboxDepth: this.outboxDepth,
      backends: this.backends,
      postsQueued: () => this.posts.depth,
      listening: () => this.listener.listening,
      catchUpRunning: () => this.catchUp.running,
      writers: () => writersOf(this.lifetime.signal),
    });
  }

  /** Prepares the engine's schema and checkpoints, takes its leases, then LISTENs and catches up. */
  async start(): Promise<void> {
    const readers = [
      ...this.config.pumps.flatMap((p) => p.sensors.map((s) => ({ pump: p.id, table: s.table }))),
      ...[...this.logbooks.values()].flatMap((l) => l.readers()),
    ];
    const tables = [...new Set(readers.map((r) => r.table))];
    await this.withStartupRetries(async () => {
      const client = await this.pool.connect();
      try {
        await ensureEngineSchema(client);
        await checkTables(client, tables);
        await this.ledger.load(client, readers);
        await this.health.restore(client);
      } finally {
        client.release();
      }
    });
    const logbookOf = new Map<string, LogbookLane>();
    for (const l of this.logbooks.values()) for (const c of l.channels) logbookOf.set(c, l);
    this.listener.on('notification', (channel, payload) => {
      const logbook = logbookOf.get(channel);
      if (logbook) logbook.accept(channel, payload);
      else this.intake.notified(channel, payload);
    });
    this.listener.on('listening', () => {
      this.catchUp.request();
      for (const l of this.logbooks.values()) l.catchUp();
    });
    // Notifications sent from now until the next LISTEN are lost: keep the checkpoints for catch-up.
    this.listener.on('disconnected', () => this.ledger.hold(readers));
    this.listener.on('fatal', (err) => this.emit('fatal', err));
    await this.leases.start();
    this.activation.started = true;
    await this.listener.start();
    this.timers.push(setInterval(() => this.tick(), this.o.tickMs ?? 100));
    this.timers.push(setInterval(() => void this.refreshOutboxDepth(), 2_000));
    this.ledger.start();
    this.posts.start();
    this.housekeeper.start();
    this.health.start();
    this.log.info(
      { pumps: this.config.pumps.map((p) => p.id), owned: [...this.leases.owned], replica: this.replicaId },
      'monitor started',
    );
  }

  /**
   * Stops taking new work, delivers what it can within the deadline, leaves the rest in the outbox and
   * behind the checkpoints, and closes every connection. The order:
   * 1. stop listening and cleaning; 2. finish catch-up and the per-sensor posts in memory;
   * 3. write the outbox, dead letters and post records; 4. drain the outbox until the deadline;
   * 5. write the delivery records; 6. save the checkpoints; 7. release the leases and close.
   */
  async stop(deadlineMs = this.config.shutdownTimeoutMs): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    const deadline = AbortSignal.timeout(Math.max(1, deadlineMs));
    await this.listener.close();
    await this.housekeeper.stop();
    this.health.stop();
    const drained = (async () => {
      await this.rows.idle();
      await this.catchUp.stop();
      await this.posts.idle();
      await Promise.all([...this.logbooks.values()].map((l) => l.idle()));
      await Promise.all([this.recorder.flush(), this.deadLetters.flush(), this.posts.flush()]);
      await Promise.all([...this.logbooks.values()].map((l) => l.flush()));
      await Promise.all([...this.lanes.values()].map((l) => l.drain(deadline)));
      await Promise.all([this.recorder.flush(), this.posts.flush(), this.health.flush()]);
    })();
    await Promise.race([drained, new Promise((r) => deadline.addEventListener('abort', r, { once: true }))]);
    this.posts.abort();
    for (const l of this.logbooks.values()) l.abort();
    this.lifetime.abort();
    for (const lane of this.lanes.values()) await lane.abort();
    for (const t of this.timers) clearInterval(t);
    this.timers = [];
    await this.ledger.stop();
    await this.leases.close();
    await this.agent.close().catch(() => {});
    await this.pool.end().catch(() => {});
    await this.rowPool.end().catch(() => {});
    this.log.info('monitor stopped');
  }

  /** 200 only while the connection is up and every channel is LISTENed. */
  readiness(): { ready: boolean; reason: string } {
    if (this.stopping) return { ready: false, reason: 'shutting down' };
    if (!this.listener.listening) {
      return {
        ready: false,
        reason: `LISTEN connection ${this.listener.state}${this.listener.lastError ? `: ${this.listener.lastError}` : ''}`,
      };
    }
    const stuck = this.writersRetrying();
    if (stuck.length > 0) {
      return {
        ready: false,
        reason: stuck
          .map(
            (w) =>
              `${w.writer} writer retrying since ${w.since} (${w.failures} failures, ${w.pending} queued): ${w.error}`,
          )
          .join('; '),
      };
    }
    const owned = [...this.activation.active];
    const refused = this.routeFaults(owned);
    if (refused.length > 0) {
      return {
        ready: false,
        reason: `backend route refused: ${refused.map(([pump, f]) => `pump ${pump}: ${describeRouteFault(f)}`).join('; ')}`,
      };
    }
    return {
      ready: true,
      reason: `listening on ${this.listener.channelCount} channels; owns ${owned.length ? owned.join(', ') : 'no pump (hot standby)'}`,
    };
  }

  /** The batch writers retrying a failed write (the database away, or a server fault), for /readyz and /status. */
  writersRetrying() {
    return writersOf(this.lifetime.signal)
      .filter((w) => w.retryingSince !== undefined)
      .map((w) => ({
        writer: w.name,
        since: new Date(w.retryingSince as number).toISOString(),
        failures: w.failures,
        pending: w.pending,
        error: w.lastError ?? 'unknown',
      }));
  }

  /** The owned pumps whose backend route is refused now (a redirect, 401 or 403). */
  private routeFaults(pumps: string[]): [string, RouteFault][] {
    const out: [string, RouteFault][] = [];
    for (const pump of pumps) {
      const fault = this.backends.get(pump)?.route?.fault;
      if (fault) out.push([pump, fault]);
    }
    return out;
  }

  /** Open groups for display. */
  openGroupsView(pump: string, limit = 30) {
    return this.lanes.get(pump)?.view(limit) ?? [];
  }

  status() {
    const listening = this.listener.listening;
    const pumps: Record<string, unknown> = {};
    for (const p of this.config.pumps) {
      const s = this.telemetry.pump(p.id);
      const backend = this.backends.get(p.id);
      pumps[p.id] = {
        name: p.name,
        owned: this.activation.owns(p.id),
        connected: listening,
        channels: listening ? p.sensors.length : 0,
        readings_received: s.readings_received,
        readings_invalid: s.readings_invalid,
        readings_duplicate: s.readings_duplicate,
        readings_late: s.readings_late,
        readings_conflicting: s.readings_conflicting,
        vectors_sent: s.vectors_sent,
        vectors_dropped: s.vectors_dropped,
        vectors_filled: s.vectors_filled,
        vectors_dead: s.vectors_dead,
        vectors_suppressed: s.vectors_suppressed,
        sensor_posts_ok: s.sensor_posts_ok,
        sensor_posts_failed: s.sensor_posts_failed,
        catchup_rows: s.catchup_rows,
        open_groups: this.lanes.get(p.id)?.openGroups ?? 0,
        outbox_pending: this.outboxDepth.get(p.id) ?? 0,
        breaker: backend ? breakerState(backend.breaker) : 'closed',
        route_fault: routeFaultView(backend?.route?.fault),
        sensor_posts_queued: this.posts.depthOf(p.id),
        min_fields: p.minFields,
        last_prediction: s.last_prediction,
        health: this.health.view(p.id),
      };
    }
    return {
      state: this.listener.state,
      uptime_s: Math.round((Date.now() - this.startedAt) / 1000),
      connected_since: this.listener.connectedSince ?? null,
      reconnects: this.listener.reconnects,
      intentos_conexion: this.listener.intentosConexion,
      reconexiones_consecutivas: this.listener.reconexionesConsecutivas,
      last_heartbeat_at: this.listener.lastHeartbeatAt ?? null,
      last_heartbeat_ms: this.listener.lastHeartbeatMs ?? null,
      replica: this.replicaId,
      owned_pumps: [...this.activation.active],
      sensor_posts_queued: this.posts.depth,
      overloaded: this.posts.deferring,
      db_queries: this.dbQueries,
      checkpoint_saves: this.ledger.saves,
      writers_retrying: this.writersRetrying(),
      // Work under way that is not a queue of posts or an open group: for a caller (a test, an operator)
      // that must know the engine has settled everything it was given.
      work: {
        catch_up_running: this.catchUp.running || [...this.logbooks.values()].some((l) => l.catchingUp),
        rows_being_read: this.rows.depth + (this.rows.waitingMs() > 0 ? 1 : 0),
        readers_held: this.ledger.heldCount(this.activation.ownedReaders()),
        // Records waiting for their batch write (the outbox, its delivery records, the post ledger, …).
        records_queued: writersOf(this.lifetime.signal).reduce((n, w) => n + w.pending, 0),
      },
      pumps,
      logbooks: Object.fromEntries(
        [...this.logbooks.values()].map((l) => {
          const s = this.telemetry.logbook(l.id);
          return [
            l.id,
            {
              name: this.config.logbooks.find((x) => x.id === l.id)?.name ?? l.id,
              owned: this.activation.owns(l.id),
              streams: this.config.logbooks
                .find((x) => x.id === l.id)
                ?.streams.map((x) => ({ tabla: x.tabla, table: x.table, pump: x.pump })),
              queued: l.depth,
              received: s.received,
              duplicate: s.duplicate,
              invalid: s.invalid,
              sent: s.sent,
              failed: s.failed,
              retried: s.retried,
              last_classification: s.last_classification,
            },
          ];
        }),
      ),
    };
  }

  /**
   * Resolves the pumps' groups in time. A group waits past its settle time while rows of its pump may be
   * unread: its readers are held for a catch-up, or a row a notification named has waited for its read
   * more than a quarter of the settle time (the database or the connection stalls).
   */
  private tick(): void {
    const stalled = this.rows.waitingMs() > this.config.assembler.settleMs / 4;
    for (const [pump, lane] of this.lanes) {
      lane.tick(stalled || this.ledger.held(this.readersOf.get(pump) ?? []));
    }
  }

  /**
   * Lets catch-up read another batch only when the queues have room (each pump's own post queue). Groups below the threshold are not
   * waited for: only expiry closes them, and the assembler's cap bounds them (waiting would only stall).
   */
  private async capacity(): Promise<void> {
    const openLimit = this.config.assembler.maxOpenGroups / 2;
    // Only the posts of pumps whose backend takes them now: a pump whose backend fails or refuses its route
    // has its posts deferred to the database past its share, and must not stall the others' catch-up.
    const postsFull = () => {
      let depth = 0;
      for (const [pump, b] of this.backends) {
        if (b.route?.fault || breakerState(b.breaker) !== 'closed') continue;
        depth += this.posts.depthOf(pump);
      }
      return depth > this.config.delivery.sensorQueue / 10;
    };
    const full = () =>
      postsFull() ||
      [...this.lanes.values()].some((l) => l.settlingGroups > openLimit) ||
      this.recorder.backlog > 1_000;
    while (!this.lifetime.signal.aborted && !this.stopping && full()) await sleep(20, this.lifetime.signal);
  }

  private async refreshOutboxDepth(): Promise<void> {
    try {
      const depth = await countPending(this.pool);
      for (const p of this.config.pumps) this.outboxDepth.set(p.id, depth.get(p.id) ?? 0);
    } catch {
      // Display only; the next refresh tries again.
    }
  }

  /** Start-up database work, retried with the original's limits (MAX_INTENTOS_INICIAL, TIEMPO_ESPERA_BASE). */
  private async withStartupRetries(fn: () => Promise<void>): Promise<void> {
    const { maxInitialAttempts, baseDelayMs, maxDelayMs } = this.config.reconnect;
    for (let attempt = 1; ; attempt++) {
      try {
        return await fn();
      } catch (err) {
        if (
          err instanceof PrivilegeError ||
          err instanceof StartupError ||
          err instanceof LedgerError ||
          err instanceof SchemaVersionError
        ) {
          throw err;
        }
        // A refused password or a missing database: one line, no retries (issue 19).
        if (isPermanentConnectFault(err)) throw new DatabaseUnavailableError(this.config.database, err);
        if (attempt >= maxInitialAttempts) {
          throw new Error(
            `gave up connecting to PostgreSQL after ${attempt} attempts (MAX_INTENTOS_INICIAL=${maxInitialAttempts}): ${describePgError(err)}`,
          );
        }
        const delay = backoffSchedule(attempt, baseDelayMs, maxDelayMs);
        this.log.warn(
          { intentos_conexion: attempt, delay_ms: delay, err: describePgError(err) },
          'database not ready',
        );
        await sleep(delay);
      }
    }
  }
}

async function checkTables(client: pg.PoolClient, tables: string[]): Promise<void> {
  const missing = await missingTables(client, tables);
  if (missing.length > 0) {
    throw new StartupError(
      `sensor tables missing: ${missing.join(', ')}; run pump-monitor migrate, or check DB_NAME and PUMPS`,
    );
  }
}

/** A refused route for /status and the page: its status, a redirect's target, since when, and the fix. */
function routeFaultView(f: RouteFault | undefined) {
  if (!f) return null;
  return {
    status: f.status,
    location: f.location ?? null,
    since: new Date(f.since).toISOString(),
    refusals: f.refusals,
    reason: describeRouteFault(f),
  };
}

/** A start-up problem that retrying will not fix. */
export class StartupError extends Error {
  override name = 'StartupError';
}
