import { randomBytes } from 'node:crypto';
import { EventEmitter, setMaxListeners } from 'node:events';
import { hostname } from 'node:os';
import type { CircuitBreakerPolicy } from 'cockatiel';
import type pg from 'pg';
import type { Logger } from 'pino';
import { Assembler, type DroppedGroup, type Vector } from '../assembler/assembler.js';
import type { Config, DatabaseConfig, PumpConfig } from '../config/env.js';
import { BackendClient, createAgent, RetryableError } from '../delivery/backend-client.js';
import { breakerState, createBreaker, type DeliveryResult } from '../delivery/policy.js';
import { SensorPoster } from '../delivery/sensor-poster.js';
import { parseReply, type SendResult, VectorSender } from '../delivery/vector-sender.js';
import { catchUp } from '../source/catch-up.js';
import { initCheckpoints, loadCheckpoints, saveCheckpoints, TableProgress } from '../source/checkpoints.js';
import { Decoder, type Reading, type Rejection } from '../source/decode.js';
import { backoffSchedule, Listener } from '../source/listener.js';
import { createPool, describePgError } from '../store/db.js';
import { type DeadLetter, insertDeadLetters } from '../store/dead-letters.js';
import { deleteDeferred, fetchDeferred, insertDeferred } from '../store/deferred-posts.js';
import {
  countPending,
  insertDropped,
  insertVectors,
  markSent,
  type OutboxRow,
  vectorKey,
} from '../store/outbox.js';
import { ensureEngineSchema, PrivilegeError } from '../store/schema.js';
import { BatchWriter } from '../util/batch.js';
import { type Clock, sleep, systemClock } from '../util/clock.js';
import { LeaseKeeper } from './leases.js';
import { Telemetry } from './telemetry.js';

export interface MonitorOptions {
  config: Config & { database: DatabaseConfig };
  logger: Logger;
  clock?: Clock;
  /** How often open groups are checked for settle time and expiry. */
  tickMs?: number;
  checkpointEveryMs?: number;
  /** Shows a long catch-up's progress (a terminal line); without it, only the final log line says it. */
  progress?: (text: string | undefined) => void;
}

export interface MonitorEvents {
  fatal: [error: Error];
}

/** How long records nothing waits on (a vector's delivery, a deferred post) gather before each write. */
const BOOKKEEPING_LINGER_MS = 100;
/** How long vectors gather before their outbox INSERT while vectors arrive faster than it completes. */
const BUSY_LINGER_MS = 5;

interface PendingDeadLetter {
  letter: DeadLetter;
  settle?: () => void;
}

/**
 * The engine: one LISTEN connection for the process's pumps, a decoder, an assembler per pump, the
 * outbox and its senders, the per-sensor poster and the checkpoints that make restarts lossless.
 */
export class Monitor extends EventEmitter<MonitorEvents> {
  readonly telemetry: Telemetry;
  readonly listener: Listener;
  readonly startedAt = Date.now();
  private readonly config: MonitorOptions['config'];
  private readonly log: Logger;
  private readonly clock: Clock;
  private readonly pool: pg.Pool;
  private readonly decoder: Decoder;
  private readonly progress = new Map<string, TableProgress>();
  private readonly assemblers = new Map<string, Assembler>();
  /** One sender per pump this replica owns. */
  private readonly senders = new Map<string, VectorSender>();
  readonly leases: LeaseKeeper;
  /** Names this process's database sessions: pm-listen:<id>, pm-lease:<group>:<id>. */
  readonly replicaId: string;
  /** Pumps whose lease this replica holds and whose state is ready: only their readings are processed. */
  private readonly active = new Set<string>();
  private started = false;
  private readonly backends = new Map<string, { client: BackendClient; breaker: CircuitBreakerPolicy }>();
  private readonly poster: SensorPoster;
  private readonly agent = createAgent();
  private readonly lifetime = new AbortController();
  private readonly vectorWriter: BatchWriter<Vector>;
  private readonly dropWriter: BatchWriter<DroppedGroup>;
  private readonly deadWriter: BatchWriter<PendingDeadLetter>;
  private readonly sentWriter: BatchWriter<{ pump: string; id: number; attempts: number; status: number }>;
  /** Per pump: outbox rows delivered by this process whose delivery is not recorded yet. */
  private readonly unrecorded = new Map<string, Set<number>>();
  private readonly firstSeen = new Map<string, number>();
  private readonly outboxDepth = new Map<string, number>();
  private timers: NodeJS.Timeout[] = [];
  private stopping = false;
  /** Checkouts of the pool: about one per query, since almost every query is a pool.query. */
  private dbQueries = 0;
  /** Per-sensor posts are being deferred to the database (the in-memory queue is full). */
  private overloaded = false;
  private deferredWaiting = true;
  /** Counts deferrals, so that a read that overlapped one does not conclude the table is empty. */
  private deferrals = 0;
  private drainingDeferred = false;
  private deferredCursor = 0;
  /** Deferred posts back in the queue and not yet removed from the table. */
  private readonly deferredInFlight = new Set<number>();
  private readonly deferWriter: BatchWriter<Reading>;
  private readonly deferredDone: BatchWriter<number>;
  private catchUpLoop: Promise<void> | undefined;
  private catchUpAgain = false;
  private savingCheckpoints = false;
  private readonly maxQueuedPosts: number;

  constructor(private readonly o: MonitorOptions) {
    super();
    this.config = o.config;
    this.log = o.logger;
    this.clock = o.clock ?? systemClock;
    this.maxQueuedPosts = o.config.delivery.sensorQueue;
    const { config } = this;
    this.telemetry = new Telemetry(config.pumps);
    this.pool = createPool(config.database, 'pump-monitor', 6, config.dbQueryTimeoutMs);
    this.pool.on('acquire', () => {
      this.dbQueries += 1;
      this.telemetry.dbQueries.inc();
    });
    this.decoder = new Decoder(config.pumps);
    this.replicaId = `${hostname().slice(0, 24)}-${process.pid}-${randomBytes(3).toString('hex')}`;
    this.listener = new Listener({
      sessionName: `pm-listen:${this.replicaId}`,
      db: config.database,
      channels: this.decoder.channels,
      reconnect: config.reconnect,
      heartbeat: config.heartbeat,
      logger: this.log.child({ stage: 'source' }),
    });
    const signal = this.lifetime.signal;
    // Writers, senders, catch-up and waits all listen on the engine's lifetime.
    setMaxListeners(100, signal);
    const onWriteError = (what: string) => (err: unknown, n: number) =>
      this.log.warn({ err: describePgError(err), items: n }, `${what} failed; retrying`);
    this.vectorWriter = new BatchWriter((v) => this.writeVectors(v), {
      busyLingerMs: BUSY_LINGER_MS,
      maxBatch: 200,
      retryMs: 500,
      onError: onWriteError('writing vectors to the outbox'),
      signal,
    });
    this.dropWriter = new BatchWriter((d) => this.writeDropped(d), {
      maxBatch: 200,
      retryMs: 500,
      onError: onWriteError('recording dropped groups'),
      signal,
    });
    this.deadWriter = new BatchWriter((d) => this.writeDeadLetters(d), {
      maxBatch: 200,
      retryMs: 500,
      onError: onWriteError('writing dead letters'),
      signal,
    });
    this.deferWriter = new BatchWriter((r) => this.writeDeferred(r), {
      lingerMs: BOOKKEEPING_LINGER_MS,
      maxBatch: 1_000,
      retryMs: 500,
      onError: onWriteError('deferring per-sensor posts'),
      signal,
    });
    this.deferredDone = new BatchWriter((ids) => deleteDeferred(this.pool, ids), {
      lingerMs: BOOKKEEPING_LINGER_MS,
      maxBatch: 1_000,
      retryMs: 500,
      onError: onWriteError('removing sent deferred posts'),
      signal,
    });
    this.sentWriter = new BatchWriter(
      async (sent) => {
        await markSent(this.pool, sent);
        for (const s of sent) this.unrecorded.get(s.pump)?.delete(s.id);
      },
      {
        maxBatch: 500,
        retryMs: 500,
        onError: onWriteError('recording delivered vectors'),
        signal,
        // Nothing waits on it: a crash before it is written only resends under the same key.
        lingerMs: BOOKKEEPING_LINGER_MS,
      },
    );
    for (const p of config.pumps) {
      const breaker = createBreaker({
        threshold: config.delivery.breakerThreshold,
        halfOpenAfterMs: config.delivery.breakerHalfOpenMs,
        maxHalfOpenAfterMs: config.delivery.breakerHalfOpenMaxMs,
      });
      const client = new BackendClient({
        baseUrl: p.baseUrl,
        apiKey: config.apiKey,
        timeoutMs: config.delivery.timeoutMs,
        agent: this.agent,
        onAnswer: (path, status) => this.telemetry.backendAnswer(p.id, path === p.unifiedPath, status),
      });
      this.backends.set(p.id, { client, breaker });
      this.assemblers.set(p.id, this.newAssembler(p));
    }
    this.leases = new LeaseKeeper({
      db: config.database,
      pumps: config.pumps.map((p) => p.id),
      logger: this.log.child({ stage: 'leases' }),
      intervalMs: config.leaseIntervalMs,
      replicaId: this.replicaId,
      queryTimeoutMs: config.dbQueryTimeoutMs,
    });
    this.leases.on('acquired', (pump, resumed) => void this.takePump(pump, resumed));
    this.leases.on('lost', (pump) => void this.leavePump(pump));
    this.leases.beforeRelease = (pump) => this.drainPump(pump);
    this.poster = new SensorPoster({
      clients: this.backends,
      concurrency: config.delivery.sensorConcurrency,
      maxAttempts: config.delivery.sensorMaxAttempts,
      retryBaseMs: config.delivery.retryBaseMs,
      retryMaxMs: config.delivery.retryMaxMs,
      onDone: (r, result) => this.onSensorPosted(r, result),
      onError: (err, r) =>
        this.log.error({ err, table: r.sensor.table, id: r.id }, 'recording a per-sensor result failed'),
    });
    this.registerGauges();
  }

  /** Prepares the engine's schema and checkpoints, then LISTENs and catches up. */
  async start(): Promise<void> {
    const tables = this.config.pumps.flatMap((p) => p.sensors.map((s) => s.table));
    await this.withStartupRetries(async () => {
      const client = await this.pool.connect();
      try {
        await ensureEngineSchema(client);
        await this.checkTables(client, tables);
        await initCheckpoints(client, tables);
        const checkpoints = await loadCheckpoints(client, tables);
        for (const [t, cp] of checkpoints) {
          const progress = new TableProgress(t, cp);
          progress.holdFromLatest(); // until the first catch-up has read the backlog
          this.progress.set(t, progress);
        }
      } finally {
        client.release();
      }
    });
    this.listener.on('notification', (channel, payload) => this.guarded(channel, payload));
    this.listener.on('listening', () => this.requestCatchUp());
    this.listener.on('disconnected', (reason) => {
      // Notifications sent from now until the next LISTEN are lost: keep the checkpoints for catch-up.
      for (const p of this.progress.values()) p.holdFromLatest();
      this.telemetry.reconnects.inc();
      this.telemetry.error(null, `LISTEN connection lost: ${reason}`);
    });
    this.listener.on('heartbeat', (ms) => this.telemetry.heartbeatLatency.set(ms / 1000));
    this.listener.on('fatal', (err) => this.emit('fatal', err));
    await this.leases.start();
    this.started = true;
    await this.listener.start();
    const tickMs = this.o.tickMs ?? 100;
    this.timers.push(setInterval(() => this.tick(), tickMs));
    this.timers.push(setInterval(() => void this.flushCheckpoints(), this.o.checkpointEveryMs ?? 250));
    this.timers.push(setInterval(() => void this.refreshOutboxDepth(), 2_000));
    this.timers.push(setInterval(() => void this.drainDeferred(), 500));
    this.log.info(
      {
        pumps: this.config.pumps.map((p) => p.id),
        owned: [...this.leases.owned],
        replica: this.leases.replicaId,
      },
      'monitor started',
    );
  }

  /**
   * Stops taking new work, delivers what it can within the deadline, leaves the rest in the outbox and
   * behind the checkpoints, and closes every connection.
   */
  async stop(deadlineMs = this.config.shutdownTimeoutMs): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    const deadline = AbortSignal.timeout(Math.max(1, deadlineMs));
    await this.listener.close();
    this.catchUpAgain = false;
    const drained = (async () => {
      await this.catchUpLoop;
      await this.poster.idle();
      await Promise.all([
        this.vectorWriter.flush(),
        this.dropWriter.flush(),
        this.deadWriter.flush(),
        this.deferWriter.flush(),
        this.deferredDone.flush(),
      ]);
      await Promise.all([...this.senders.values()].map((s) => s.stop({ drainUntil: deadline })));
      await this.sentWriter.flush();
    })();
    await Promise.race([drained, new Promise((r) => deadline.addEventListener('abort', r, { once: true }))]);
    this.poster.abort();
    this.lifetime.abort();
    for (const s of this.senders.values()) await s.stop({ drainUntil: AbortSignal.abort() });
    for (const t of this.timers) clearInterval(t);
    this.timers = [];
    await this.flushCheckpoints().catch(() => {});
    await this.leases.close();
    await this.agent.close().catch(() => {});
    await this.pool.end().catch(() => {});
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
    const owned = [...this.active];
    return {
      ready: true,
      reason: `listening on ${this.decoder.channels.length} channels; owns ${owned.length ? owned.join(', ') : 'no pump (hot standby)'}`,
    };
  }

  /** Open groups for display. */
  openGroupsView(pump: string, limit = 30) {
    return this.assemblers.get(pump)?.view(limit) ?? [];
  }

  status() {
    const listening = this.listener.listening;
    const pumps: Record<string, unknown> = {};
    for (const p of this.config.pumps) {
      const s = this.telemetry.pump(p.id);
      const backend = this.backends.get(p.id);
      pumps[p.id] = {
        name: p.name,
        owned: this.active.has(p.id),
        connected: listening,
        channels: listening ? p.sensors.length : 0,
        readings_received: s.readings_received,
        readings_invalid: s.readings_invalid,
        readings_duplicate: s.readings_duplicate,
        readings_late: s.readings_late,
        vectors_sent: s.vectors_sent,
        vectors_dropped: s.vectors_dropped,
        vectors_filled: s.vectors_filled,
        vectors_dead: s.vectors_dead,
        sensor_posts_ok: s.sensor_posts_ok,
        sensor_posts_failed: s.sensor_posts_failed,
        catchup_rows: s.catchup_rows,
        open_groups: this.assemblers.get(p.id)?.openGroups ?? 0,
        outbox_pending: this.outboxDepth.get(p.id) ?? 0,
        breaker: backend ? breakerState(backend.breaker) : 'closed',
        min_fields: p.minFields,
        last_prediction: s.last_prediction,
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
      replica: this.leases.replicaId,
      owned_pumps: [...this.active],
      sensor_posts_queued: this.poster.depth,
      overloaded: this.overloaded,
      db_queries: this.dbQueries,
      pumps,
    };
  }

  // ---- the notification path ----

  /** The notification loop must survive anything: an unexpected error is counted, logged and kept. */
  private guarded(channel: string, payload: string, origin: Reading['origin'] = 'notify'): void {
    try {
      this.onPayload(channel, payload, origin);
    } catch (err) {
      const pump = this.decoder.route(channel)?.pump ?? 'unknown';
      this.telemetry.readingsInvalid.inc({ pump, reason: 'internal_error' });
      this.telemetry.error(
        pump === 'unknown' ? null : pump,
        `internal error on ${channel}: ${(err as Error).message}`,
      );
      this.log.error({ err, channel, payload: payload.slice(0, 200) }, 'notification handling failed');
      this.deadWriter.push({
        letter: {
          kind: 'notification',
          channel,
          payload,
          reason: `internal_error: ${(err as Error).message}`,
        },
      });
    }
  }

  private onPayload(channel: string, payload: string, origin: Reading['origin'] = 'notify'): void {
    if (this.stopping) return;
    const route = this.decoder.route(channel);
    // A hot standby for this pump: another replica owns it. Only catch-up after a takeover reads these rows.
    if (route && !this.active.has(route.pump)) return;
    const decoded = this.decoder.decode(channel, payload, this.clock.now(), origin);
    if (!decoded.ok) {
      this.onRejected(decoded.rejection);
      return;
    }
    const r = decoded.reading;
    const progress = this.progress.get(r.sensor.table) as TableProgress;
    const stats = this.telemetry.pump(r.pump);
    if (!progress.begin(r.id, this.config.delivery.sensorPosts ? 2 : 1)) {
      stats.readings_duplicate += 1;
      this.telemetry.readingsDuplicate.inc({ pump: r.pump });
      return;
    }
    stats.readings_received += 1;
    this.telemetry.seen(r.pump, channel, r.valor, Date.now());
    const added = (this.assemblers.get(r.pump) as Assembler).add(r);
    if (added === 'late') {
      stats.readings_late += 1;
      this.telemetry.readingsLate.inc({ pump: r.pump });
      this.log.debug(
        { pump: r.pump, table: r.sensor.table, id: r.id, tiempo_sensor: r.tiempo },
        'late reading',
      );
      progress.settle(r.id);
    }
    if (this.config.delivery.sensorPosts) this.post(r);
  }

  /**
   * Queues a reading's per-sensor POST. Beyond the in-memory limit (a long backend outage) the post is
   * deferred to the database instead; the reading's group goes on as usual either way.
   */
  private post(r: Reading): void {
    if (this.poster.depth < this.maxQueuedPosts) {
      this.poster.enqueue(r);
      return;
    }
    if (!this.overloaded) {
      this.overloaded = true;
      this.log.warn({ queued: this.poster.depth }, 'per-sensor queue full; deferring posts to the database');
    }
    this.deferWriter.push(r);
  }

  private async writeDeferred(readings: Reading[]): Promise<void> {
    await insertDeferred(
      this.pool,
      readings.map((r) => ({
        pump: r.pump,
        channel: r.sensor.channel,
        payload: JSON.stringify({ id_sensor: r.id, valor: r.valor, tiempo_sensor: r.tiempo }),
      })),
    );
    this.deferrals += 1;
    this.deferredWaiting = true;
    for (const r of readings) this.progress.get(r.sensor.table)?.settle(r.id);
  }

  /**
   * Moves deferred posts back into the queue while it is under half full. Runs on a timer and whenever a
   * finished post takes the queue below a fifth of its limit, so the poster never idles while posts wait.
   */
  private async drainDeferred(): Promise<void> {
    const room = () => this.maxQueuedPosts / 2 - this.poster.depth;
    if (!this.deferredWaiting || this.drainingDeferred || room() <= 0) return;
    this.drainingDeferred = true;
    try {
      while (this.deferredWaiting && !this.stopping && room() > 0) {
        const batch = Math.max(1, Math.min(2_000, Math.floor(room())));
        const deferrals = this.deferrals;
        const posts = await fetchDeferred(this.pool, [...this.active], batch, this.deferredCursor);
        if (posts.length < batch && deferrals === this.deferrals) this.deferredWaiting = false;
        for (const d of posts) {
          this.deferredCursor = Math.max(this.deferredCursor, d.id);
          if (this.deferredInFlight.has(d.id)) continue;
          this.deferredInFlight.add(d.id);
          const decoded = this.decoder.decode(d.channel, d.payload, this.clock.now(), 'catchup');
          if (decoded.ok) this.poster.enqueue({ ...decoded.reading, deferredId: d.id });
          else this.deferredDone.push(d.id);
        }
      }
      if (this.overloaded && !this.deferredWaiting) {
        this.overloaded = false;
        this.log.info('deferred per-sensor posts are back in the queue');
      }
    } catch (err) {
      this.log.warn({ err: describePgError(err) }, 'reading deferred posts failed; will retry');
    } finally {
      this.drainingDeferred = false;
    }
  }

  private onRejected(rej: Rejection): void {
    const pump = rej.pump ?? this.decoder.route(rej.channel)?.pump ?? 'unknown';
    const stats = this.telemetry.pumps.get(pump);
    if (stats) stats.readings_invalid += 1;
    this.telemetry.readingsInvalid.inc({ pump, reason: rej.reason });
    const message = `invalid notification on ${rej.channel}: ${rej.detail}`;
    this.telemetry.error(stats ? pump : null, message);
    this.log.warn(
      { pump, channel: rej.channel, reason: rej.reason, payload: rej.payload.slice(0, 200) },
      message,
    );
    // A rejected payload never enters the (table, id) ledger: a forged or garbled payload naming a row id
    // must not shadow the real row's notification. Not being in flight, it does not hold the checkpoint.
    this.deadWriter.push({
      letter: {
        kind: 'notification',
        pump: stats ? pump : undefined,
        channel: rej.channel,
        payload: rej.payload,
        reason: `${rej.reason}: ${rej.detail}`,
      },
    });
  }

  private tick(): void {
    for (const a of this.assemblers.values()) a.tick();
  }

  // ---- group resolution ----

  private onVector(v: Vector): void {
    if (v.filled.length > 0 || v.omitted.length > 0) {
      this.log.info(
        {
          pump: v.pump,
          tiempo_sensor: v.tiempo,
          present: v.present,
          missing: [...v.filled.map((f) => f.field), ...v.omitted],
          filled: v.filled.map((f) => `${f.field}=${f.value} (${f.from})`),
        },
        'partial vector completed',
      );
    }
    this.vectorWriter.push(v);
  }

  private onDropped(d: DroppedGroup): void {
    const stats = this.telemetry.pump(d.pump);
    stats.vectors_dropped += 1;
    this.telemetry.vectors.inc({ pump: d.pump, outcome: 'dropped' });
    this.log.warn(
      { pump: d.pump, tiempo_sensor: d.tiempo, present: Object.keys(d.values).length, missing: d.missing },
      `group ${d.reason} below what can be sent; dropped`,
    );
    this.dropWriter.push(d);
  }

  private async writeVectors(vectors: Vector[]): Promise<void> {
    const rows = await insertVectors(this.pool, vectors);
    const inserted = new Set(rows.map((r) => r.key));
    for (const v of vectors) {
      const key = vectorKey(v.pump, v.tiempo);
      if (inserted.has(key)) {
        this.rememberFirstSeen(key, v.firstReceivedAt);
        if (v.filled.length > 0) {
          this.telemetry.pump(v.pump).vectors_filled += 1;
          this.telemetry.vectors.inc({ pump: v.pump, outcome: 'filled' });
        }
      } else {
        // Already sent (or dropped) before a restart or by another replica: never twice.
        this.telemetry.pump(v.pump).vectors_suppressed += 1;
      }
      this.settleMembers(v.members);
    }
    for (const [pump, sender] of this.senders) {
      const own = rows.filter((r) => r.pump === pump);
      if (own.length > 0) sender.offer(own);
    }
  }

  private async writeDropped(groups: DroppedGroup[]): Promise<void> {
    await insertDropped(this.pool, groups);
    for (const g of groups) this.settleMembers(g.members);
  }

  private async writeDeadLetters(items: PendingDeadLetter[]): Promise<void> {
    await insertDeadLetters(
      this.pool,
      items.map((i) => i.letter),
    );
    for (const i of items) i.settle?.();
  }

  private settleMembers(members: { table: string; id: number }[]): void {
    for (const m of members) this.progress.get(m.table)?.settle(m.id);
  }

  // ---- delivery results ----

  private onSent(row: OutboxRow, result: SendResult): void {
    const stats = this.telemetry.pump(row.pump);
    const started = this.firstSeen.get(row.key);
    this.firstSeen.delete(row.key);
    if (result.kind === 'dead') {
      stats.vectors_dead += 1;
      this.telemetry.vectors.inc({ pump: row.pump, outcome: 'dead' });
      this.telemetry.error(row.pump, `backend answered ${result.status} to the vector of ${row.tiempo}`);
      return;
    }
    stats.vectors_sent += 1;
    this.telemetry.vectors.inc({ pump: row.pump, outcome: 'sent' });
    if (started !== undefined) {
      this.telemetry.deliveryLatency.observe({ pump: row.pump }, (this.clock.now() - started) / 1000);
    }
    if (result.prediccion !== undefined) {
      this.telemetry.prediction(row.pump, {
        tiempo_sensor: row.tiempo,
        prediccion: result.prediccion,
        at: Date.now(),
      });
    }
  }

  private onSensorPosted(r: Reading, result: DeliveryResult): void {
    if (result.kind === 'cancelled') return; // unsettled: caught up on the next start
    if (this.deferredWaiting && this.poster.depth < this.maxQueuedPosts / 5) void this.drainDeferred();
    const stats = this.telemetry.pump(r.pump);
    const progress = this.progress.get(r.sensor.table) as TableProgress;
    const deferredId = r.deferredId;
    // A deferred post's reading was settled when it was deferred; its row in deferred_posts goes instead.
    const settle =
      deferredId === undefined
        ? () => progress.settle(r.id)
        : () => {
            this.deferredInFlight.delete(deferredId);
            this.deferredDone.push(deferredId);
          };
    if (result.kind === 'ok') {
      stats.sensor_posts_ok += 1;
      this.noteClassification(r, result.answer.body);
      settle();
      return;
    }
    stats.sensor_posts_failed += 1;
    const reason =
      result.kind === 'gave_up'
        ? `gave up after ${result.attempts} attempts: ${result.error.message}`
        : result.answer.status === 404
          ? 'the backend does not know this row (404)'
          : `backend answered ${result.answer.status}`;
    this.telemetry.error(r.pump, `per-sensor POST ${r.sensor.endpoint} id ${r.id}: ${reason}`);
    this.log.warn({ pump: r.pump, table: r.sensor.table, id: r.id, reason }, 'per-sensor POST not delivered');
    // The response kept with it: the rejection, or the last answer of an exhausted budget (none when no
    // answer came, e.g. a timeout).
    const last =
      result.kind === 'rejected'
        ? result.answer
        : result.error instanceof RetryableError && result.error.status !== undefined
          ? { status: result.error.status, body: result.error.body }
          : undefined;
    this.deadWriter.push({
      letter: {
        kind: 'sensor_post',
        pump: r.pump,
        channel: r.sensor.channel,
        payload: JSON.stringify({ id_sensor: r.id, valor: r.valor, tiempo_sensor: r.tiempo }),
        reason,
        responseStatus: last?.status,
        responseBody: last?.body,
      },
      settle,
    });
  }

  private noteClassification(r: Reading, body: string): void {
    const c = this.telemetry.pump(r.pump).channels.get(r.sensor.channel);
    if (!c) return;
    // The classification is informational; a body we cannot read changes nothing.
    const { prediccion, contador_anomalias } = parseReply(body);
    if (prediccion !== undefined) c.lastClass = prediccion;
    if (contador_anomalias !== undefined) c.anomalies = contador_anomalias;
  }

  // ---- catch-up, checkpoints, housekeeping ----

  private requestCatchUp(): void {
    if (this.stopping) return;
    if (this.catchUpLoop) {
      this.catchUpAgain = true;
      return;
    }
    this.catchUpLoop = (async () => {
      do {
        this.catchUpAgain = false;
        try {
          const started = Date.now();
          const rows = await catchUp({
            pool: this.pool,
            pumps: this.config.pumps.filter((p) => this.active.has(p.id)),
            progress: this.progress,
            batch: this.config.catchUpBatch,
            handle: (channel, payload) => this.guarded(channel, payload, 'catchup'),
            capacity: () => this.capacity(),
            signal: this.lifetime.signal,
            onProgress: (n, left) => this.o.progress?.(`catching up: ${n} rows read, ${left} tables left`),
            onRows: (pump, n) => {
              this.telemetry.pump(pump).catchup_rows += n;
              this.telemetry.catchUpRows.inc({ pump }, n);
            },
          });
          this.o.progress?.(undefined);
          if (rows > 0) this.log.info({ rows, ms: Date.now() - started }, 'caught up from the tables');
        } catch (err) {
          if (this.stopping) break;
          this.log.warn({ err: describePgError(err) }, 'catch-up failed; will retry');
          await sleep(1_000, this.lifetime.signal);
          this.catchUpAgain = this.listener.listening;
        }
      } while (this.catchUpAgain && !this.stopping);
      this.catchUpLoop = undefined;
    })();
  }

  /**
   * Lets catch-up read another batch only when the queues have room. Groups below the threshold are not
   * waited for: only expiry closes them, and the assembler's cap bounds them (waiting would only stall).
   */
  private async capacity(): Promise<void> {
    const openLimit = this.config.assembler.maxOpenGroups / 2;
    while (
      !this.lifetime.signal.aborted &&
      !this.stopping &&
      (this.poster.depth > this.maxQueuedPosts / 10 ||
        [...this.assemblers.values()].some((a) => a.settlingGroups > openLimit) ||
        this.vectorWriter.pending > 1_000)
    ) {
      await sleep(20, this.lifetime.signal);
    }
  }

  private async flushCheckpoints(): Promise<void> {
    if (this.savingCheckpoints) return;
    this.savingCheckpoints = true;
    try {
      await saveCheckpoints(this.pool, this.ownedProgress());
    } catch (err) {
      this.log.debug({ err: describePgError(err) }, 'saving checkpoints failed; will retry');
    } finally {
      this.savingCheckpoints = false;
    }
  }

  private ownedProgress(): TableProgress[] {
    return this.config.pumps
      .filter((p) => this.active.has(p.id))
      .flatMap((p) => p.sensors.map((s) => this.progress.get(s.table) as TableProgress));
  }

  // ---- pump ownership ----

  private newAssembler(p: PumpConfig): Assembler {
    return new Assembler(p, this.config.assembler, this.clock, {
      vector: (v) => this.onVector(v),
      dropped: (d) => this.onDropped(d),
    });
  }

  /**
   * This replica now owns the pump. Resumed: nobody else owned it meanwhile, so the state in memory is
   * still right and a catch-up fills the gap. Otherwise another replica worked on it: start again from
   * the checkpoints it left.
   */
  private async takePump(pump: string, resumed: boolean): Promise<void> {
    const p = this.config.pumps.find((x) => x.id === pump) as PumpConfig;
    const tables = p.sensors.map((s) => s.table);
    // At start-up the checkpoints were just loaded: that is the state to go on from.
    if (resumed || !this.started) {
      for (const t of tables) this.progress.get(t)?.holdFromLatest();
    } else {
      try {
        const checkpoints = await loadCheckpoints(this.pool, tables);
        for (const [t, cp] of checkpoints) {
          const progress = new TableProgress(t, cp);
          progress.holdFromLatest();
          this.progress.set(t, progress);
        }
      } catch (err) {
        this.log.warn({ pump, err: describePgError(err) }, 'loading checkpoints after a takeover failed');
      }
      this.assemblers.set(pump, this.newAssembler(p));
    }
    const backend = this.backends.get(pump);
    if (!backend || this.stopping || !this.leases.owned.has(pump)) return;
    let unrecorded = this.unrecorded.get(pump);
    if (!unrecorded) {
      unrecorded = new Set();
      this.unrecorded.set(pump, unrecorded);
    }
    const sender = new VectorSender({
      pump: p,
      pool: this.pool,
      client: backend.client,
      breaker: backend.breaker,
      retryBaseMs: this.config.delivery.retryBaseMs,
      retryMaxMs: this.config.delivery.retryMaxMs,
      logger: this.log.child({ stage: 'delivery', pump }),
      onResult: (row, result) => this.onSent(row, result),
      recordSent: (sent) => {
        unrecorded.add(sent.id);
        this.sentWriter.push({ pump, ...sent });
      },
      unrecorded,
    });
    this.senders.set(pump, sender);
    sender.start();
    this.active.add(pump);
    // Its deferred posts may lie below the cursor used so far.
    this.deferredCursor = 0;
    this.deferredWaiting = true;
    if (this.listener.listening) this.requestCatchUp();
  }

  /** The lease is gone: stop sending this pump's outbox after the vector in flight; another replica may take it. */
  private async leavePump(pump: string): Promise<void> {
    this.active.delete(pump);
    const sender = this.senders.get(pump);
    this.senders.delete(pump);
    await sender?.halt(Math.min(this.config.delivery.timeoutMs, 2_000));
  }

  /** Before giving a pump to another replica: finish its in-flight work and save its checkpoints. */
  private async drainPump(pump: string): Promise<void> {
    await this.leavePump(pump);
    await Promise.race([this.poster.idle(), sleep(5_000)]);
    await this.vectorWriter.flush();
    // What the sender delivered must be on record before the next owner reads the outbox.
    await this.sentWriter.flush();
    const p = this.config.pumps.find((x) => x.id === pump) as PumpConfig;
    await saveCheckpoints(
      this.pool,
      p.sensors.map((s) => this.progress.get(s.table) as TableProgress),
    ).catch(() => {});
  }

  private async refreshOutboxDepth(): Promise<void> {
    try {
      const depth = await countPending(this.pool);
      for (const p of this.config.pumps) this.outboxDepth.set(p.id, depth.get(p.id) ?? 0);
    } catch {
      // Display only; the next refresh tries again.
    }
  }

  private rememberFirstSeen(key: string, at: number): void {
    this.firstSeen.set(key, at);
    if (this.firstSeen.size > 10_000) {
      const oldest = this.firstSeen.keys().next().value;
      if (oldest !== undefined) this.firstSeen.delete(oldest);
    }
  }

  private async checkTables(client: pg.PoolClient, tables: string[]): Promise<void> {
    const { rows } = await client.query<{ t: string }>(
      'SELECT t FROM unnest($1::text[]) AS t WHERE to_regclass(quote_ident(t)) IS NULL',
      [tables],
    );
    if (rows.length > 0) {
      throw new StartupError(
        `sensor tables missing: ${rows.map((r) => r.t).join(', ')}; run pump-monitor migrate, or check DB_NAME and PUMPS`,
      );
    }
  }

  /** Start-up database work, retried with the original's limits (MAX_INTENTOS_INICIAL, TIEMPO_ESPERA_BASE). */
  private async withStartupRetries(fn: () => Promise<void>): Promise<void> {
    const { maxInitialAttempts, baseDelayMs, maxDelayMs } = this.config.reconnect;
    for (let attempt = 1; ; attempt++) {
      try {
        return await fn();
      } catch (err) {
        if (err instanceof PrivilegeError || err instanceof StartupError) throw err;
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

  private registerGauges(): void {
    const t = this.telemetry;
    t.gauge('open_groups', 'Open (incomplete) groups', ['pump'], (set) => {
      for (const [pump, a] of this.assemblers) set({ pump }, a.openGroups);
    });
    t.gauge('outbox_depth', 'Vectors waiting in the outbox', ['pump'], (set) => {
      for (const [pump, n] of this.outboxDepth) set({ pump }, n);
    });
    t.gauge('sensor_posts_queued', 'Per-sensor posts queued or in flight', [], (set) =>
      set({}, this.poster.depth),
    );
    t.gauge('listening', '1 while every channel is LISTENed', [], (set) =>
      set({}, this.listener.listening ? 1 : 0),
    );
    t.gauge('notification_queue_usage', 'pg_notification_queue_usage() of the server', [], async (set) => {
      try {
        const { rows } = await this.pool.query<{ u: number }>('SELECT pg_notification_queue_usage() AS u');
        set({}, Number(rows[0]?.u ?? 0));
      } catch {
        // No value while the database is away.
      }
    });
  }
}

/** A start-up problem that retrying will not fix. */
export class StartupError extends Error {
  override name = 'StartupError';
}
