import { setMaxListeners } from 'node:events';
import type pg from 'pg';
import type { Logger } from 'pino';
import type { Config, DatabaseConfig } from '../config/env.js';
import { createAgent } from '../delivery/backend-client.js';
import { createBackends } from '../delivery/backends.js';
import { DeadLetterSink } from '../delivery/dead-letter-sink.js';
import { OutboxDepth } from '../delivery/outbox-depth.js';
import { OutboxRecorder } from '../delivery/outbox-recorder.js';
import { PostPipeline } from '../delivery/post-pipeline.js';
import type { Backend } from '../delivery/row-poster.js';
import { HealthUnit } from '../health/health-unit.js';
import { observeHealth } from '../health/observe-health.js';
import type { EngineSnapshot } from '../http/status.js';
import { CheckpointKeeper } from '../ledger/checkpoint-keeper.js';
import { CatchUpRunner } from '../source/catch-up.js';
import { Decoder } from '../source/decode.js';
import { Intake } from '../source/intake.js';
import { Listener } from '../source/listener.js';
import { tableRoutes } from '../source/replication/routes.js';
import { replicationNames } from '../source/replication/setup.js';
import { ReplicationSource } from '../source/replication/source.js';
import { ChannelRouter } from '../source/router.js';
import { RowFetcher } from '../source/row-fetcher.js';
import { createPool } from '../store/db.js';
import { writersOf } from '../util/batch.js';
import type { Clock } from '../util/clock.js';
import { Activation } from './activation.js';
import { GroupClock } from './group-clock.js';
import { Housekeeper } from './housekeeper.js';
import { LeaseKeeper } from './leases.js';
import { LogbookLane } from './logbook-lane.js';
import { PumpLane } from './pump-lane.js';
import { Telemetry } from './telemetry.js';

export interface WiringOptions {
  config: Config & { database: DatabaseConfig };
  logger: Logger;
  clock: Clock;
  replicaId: string;
  /** The engine's lifetime: every writer, sender, catch-up and wait listens on it. */
  signal: AbortSignal;
  checkpointEveryMs: number;
  progress?: ((text: string | undefined) => void) | undefined;
}

/** The units of one engine, built and wired; Monitor starts and stops them. */
export type Units = ReturnType<typeof wireUnits>;

/**
 * Builds the units along the data's path and wires them to one another: each gets the others it needs
 * as options (callbacks included), so this function is the one place where the runtime path's closures
 * are written. It starts nothing.
 */
export function wireUnits(o: WiringOptions) {
  const { config, signal } = o;
  const log = o.logger;
  setMaxListeners(100, signal);
  const telemetry = new Telemetry(config.pumps);
  const queries = telemetry.dbQueries.tally();
  let dbQueries = 0;
  const counted = (pool: pg.Pool) => {
    pool.on('acquire', () => {
      dbQueries += 1;
      queries.inc();
    });
    return pool;
  };
  // Both without parallel workers (store/db.ts).
  const pool = counted(createPool(config.database, 'pump-monitor', 6, config.dbQueryTimeoutMs, 30_000, true));
  // The rows notifications name are read on a connection of their own, kept open: the live path waits
  // on no writer, catch-up or checkpoint save for a pooled connection.
  const rowPool = counted(createPool(config.database, 'pump-monitor', 1, config.dbQueryTimeoutMs, 0, true));
  const decoder = new Decoder(config.pumps, config.wiring.definitions.pumps);
  const listener = new Listener({
    sessionName: `pm-listen:${o.replicaId}`,
    db: config.database,
    channels: [...decoder.channels, ...config.logbooks.flatMap((l) => l.streams.map((s) => s.channel))],
    reconnect: config.reconnect,
    heartbeat: config.heartbeat,
    logger: log.child({ stage: 'source' }),
  });
  const agent = createAgent(32, config.delivery.pipelining);
  const backends = createBackends({
    config,
    agent,
    logger: log,
    onAnswer: (id, unified, status) => telemetry.backendAnswer(id, unified, status),
  });
  const deadLetters = new DeadLetterSink({ pool, logger: log.child({ stage: 'dead-letters' }), signal });
  const rows = new RowFetcher({ pool: rowPool, logger: log.child({ stage: 'source' }) });
  // Late-bound: the ledger and the posts ask Activation, which is built from the lanes below.
  let activation: Activation | undefined;
  // Late-bound: SOURCE=replication's source, built once the intake and the lanes are.
  let replication: ReplicationSource | undefined;
  const owned = () => activation?.owned() ?? [];
  const ledger = new CheckpointKeeper({
    pool,
    logger: log.child({ stage: 'ledger' }),
    everyMs: o.checkpointEveryMs,
    // The replication source's horizon is in the slot's order, as the LISTEN session's is in NOTIFY's.
    horizon: () => (replication ? replication.horizon() : listener.horizon()),
    ownedReaders: () => activation?.ownedReaders() ?? [],
  });
  const recorder = new OutboxRecorder({ pool, logger: log.child({ stage: 'outbox' }), signal });
  /** One pump's lane: its assembler, and its sender while owned, on the pump's own backend. */
  const laneOf = (p: Config['pumps'][number]) =>
    new PumpLane({
      pump: p,
      assembler: config.assembler,
      clock: o.clock,
      pool,
      recorder,
      ledger,
      backend: backends.pumps.get(p.id) as Backend,
      retryBaseMs: config.delivery.retryBaseMs,
      retryMaxMs: config.delivery.retryMaxMs,
      vectorWindow: config.delivery.vectorWindow,
      deadLetters,
      logger: log.child({ stage: 'delivery', pump: p.id }),
    });
  const lanes = new Map<string, PumpLane>(config.pumps.map((p) => [p.id, laneOf(p)]));
  const logbooks = new Map<string, LogbookLane>();
  for (const l of config.logbooks) {
    logbooks.set(
      l.id,
      new LogbookLane({
        logbook: l,
        pool,
        ledger,
        backend: backends.logbooks.get(l.id) as Backend,
        concurrency: 2,
        maxAttempts: config.delivery.sensorMaxAttempts,
        retryBaseMs: config.delivery.retryBaseMs,
        retryMaxMs: config.delivery.retryMaxMs,
        batch: config.catchUpBatch,
        rows,
        listening: () => listener.listening,
        deadLetter: (letter, settled) => deadLetters.push(letter, settled),
        signal,
        logger: log.child({ stage: 'logbook', logbook: l.id }),
      }),
    );
  }
  const posts = new PostPipeline({
    pool,
    logger: log.child({ stage: 'posts' }),
    signal,
    backends: backends.pumps,
    decoder,
    maxQueued: config.delivery.sensorQueue,
    concurrency: config.delivery.sensorConcurrency,
    maxAttempts: config.delivery.sensorMaxAttempts,
    retryBaseMs: config.delivery.retryBaseMs,
    retryMaxMs: config.delivery.retryMaxMs,
    deadLetter: (letter, settled) => deadLetters.push(letter, settled),
    // A logbook's queued retries are its lane's to read.
    owned: () => owned().filter((id) => !logbooks.has(id)),
  });
  const catchUp: CatchUpRunner = new CatchUpRunner({
    pool,
    pumps: () => config.pumps.filter((p) => activation?.owns(p.id)),
    ledger,
    batch: config.catchUpBatch,
    handle: (channel, rows, pump) => intake.rows(channel, rows, pump),
    units: [posts, recorder, ...lanes.values()],
    signal,
    listening: () => listener.listening,
    logger: log.child({ stage: 'catch-up' }),
    ...(o.progress ? { progress: o.progress } : {}),
    onRows: (pump, n) => {
      telemetry.pump(pump).catchup_rows += n;
      telemetry.catchUpRows.inc({ pump }, n);
    },
  });
  activation = new Activation({
    pumps: config.pumps,
    lanes,
    logbooks,
    logger: log.child({ stage: 'leases' }),
    haltGraceMs: Math.min(config.delivery.timeoutMs, 2_000),
    reload: (readers) => ledger.load(pool, readers),
    hold: (readers) => ledger.hold(readers),
    postsIdle: () => posts.idle(),
    flushRecords: async () => {
      await recorder.flush();
      await posts.flush();
    },
    saveCheckpoints: (readers) => ledger.flush(readers),
    taken: () => {
      posts.rewind();
      if (listener.listening) catchUp.request();
    },
  });
  const active = activation;
  const intake = new Intake({
    decoder,
    clock: o.clock,
    logger: log.child({ stage: 'intake' }),
    owns: (pump) => active.owns(pump),
    ledger,
    rows,
    missed: () => catchUp.request(),
    lane: (pump) => lanes.get(pump) as PumpLane,
    posts: config.delivery.sensorPosts ? posts : undefined,
    deadLetter: (letter, settled) => deadLetters.push(letter, settled),
  });
  const router = new ChannelRouter(intake);
  for (const l of logbooks.values()) router.add(l.channels, l);
  let stopping = false;
  // SOURCE=replication: the slot replaces NOTIFY as the live path (catch-up still covers start and takeovers).
  const names =
    config.source.kind === 'replication'
      ? replicationNames(config.source, config.database.database)
      : undefined;
  const logbookOfChannel = new Map<string, LogbookLane>();
  for (const l of logbooks.values()) for (const c of l.channels) logbookOfChannel.set(c, l);
  const served = [...config.pumps.map((p) => p.id), ...config.logbooks.map((l) => l.id)];
  replication = names
    ? new ReplicationSource({
        db: config.database,
        pool,
        names,
        routes: tableRoutes(config),
        sensor: (channel, row) => intake.row(channel, row, 'notify'),
        replay: (channel, row, pump, postSettled) => intake.row(channel, row, 'catchup', postSettled, pump),
        // The row's post is on record: only its place in the ledger is rebuilt (a row begun with no part).
        logbookOnRecord: (logbook, table, id) => void ledger.begin(logbook, table, id, []),
        passed: (reader, table, id) => ledger.passed(reader, table, id),
        logbook: (channel, id) => logbookOfChannel.get(channel)?.notified(channel, `{"id":${id}}`),
        settled: (reader, table, id) => ledger.settledThrough(reader, table, id),
        active: () => !stopping && active.isStarted && served.every((id) => active.owns(id)),
        replicaId: o.replicaId,
        heartbeat: config.heartbeat,
        reconnect: config.reconnect,
        logger: log.child({ stage: 'source' }),
        registry: telemetry.registry,
      })
    : undefined;
  const leases = new LeaseKeeper({
    ...(names ? { exclusive: `replication-slot:${names.slot}` } : {}),
    db: config.database,
    pumps: [...config.pumps.map((p) => p.id), ...config.logbooks.map((l) => l.id)],
    logger: log.child({ stage: 'leases' }),
    intervalMs: config.leaseIntervalMs,
    replicaId: o.replicaId,
    queryTimeoutMs: config.dbQueryTimeoutMs,
    hooks: active,
  });
  const housekeeper = new Housekeeper({
    pool,
    retention: config.retention,
    owned,
    logger: log.child({ stage: 'retention' }),
  });
  // Verdicts of the pumps and their channels: fed by the intake's and lanes' events, never in their way.
  const health = new HealthUnit({
    pumps: config.pumps,
    clock: o.clock,
    owns: (pump) => active.owns(pump),
    listening: () => listener.listening,
    pool,
    logger: log.child({ stage: 'health' }),
    replica: o.replicaId,
    signal,
    retentionEveryMs: config.retention.intervalMs,
  });
  observeHealth(health, { intake, lanes });
  health.registerMetrics((...a) => telemetry.gauge(...a));
  const outboxDepth = new OutboxDepth(
    pool,
    config.pumps.map((p) => p.id),
  );
  /** Each pump's readers (pump, table): a group waits past its settle time while one of them is held (GroupClock). */
  const readersOf = new Map(
    config.pumps.map((p) => [p.id, p.sensors.map((s) => ({ pump: p.id, table: s.table }))]),
  );
  const groupClock = new GroupClock({
    lanes,
    readersOf,
    settleMs: config.assembler.settleMs,
    rowsWaitingMs: () => rows.waitingMs(),
    streamStalled: () => replication?.stalled() ?? false,
    catchUpWaitingForRoom: () => catchUp.waitingForRoom,
    held: (r) => ledger.held(r),
  });
  /** Every stream the engine reads: each pump's tables, each logbook's. */
  const readers = [
    ...config.pumps.flatMap((p) => p.sensors.map((s) => ({ pump: p.id, table: s.table }))),
    ...[...logbooks.values()].flatMap((l) => l.readers()),
  ];
  // The path's first hop: each notification to the sink that owns its channel (no event comes before
  // the listener is started).
  // Under SOURCE=replication the slot is the live path: a notification (a trigger left from SOURCE=notify)
  // would only repeat it.
  listener.on('notification', (channel, payload) => {
    if (!replication) router.notified(channel, payload);
  });
  listener.on('listening', () => {
    catchUp.request();
    for (const l of logbooks.values()) l.catchUp();
  });
  // Notifications sent from now until the next LISTEN are lost: keep the checkpoints for catch-up.
  listener.on('disconnected', () => ledger.hold(readers));
  const snapshot: EngineSnapshot = {
    startedAt: Date.now(),
    replicaId: o.replicaId,
    pumps: config.pumps,
    logbooks: config.logbooks,
    telemetry,
    listener,
    stopping: () => stopping,
    owned,
    owns: (id) => active.owns(id),
    backend: (id) => backends.pumps.get(id) ?? backends.logbooks.get(id),
    openGroups: (pump) => lanes.get(pump)?.openGroups ?? 0,
    groupsView: (pump, limit) => lanes.get(pump)?.view(limit) ?? [],
    outboxPending: (pump) => outboxDepth.of(pump),
    postsQueued: (pump) => (pump === undefined ? posts.depth : posts.depthOf(pump)),
    overloaded: () => posts.deferring,
    logbookQueued: (id) => logbooks.get(id)?.depth ?? 0,
    dbQueries: () => dbQueries,
    checkpointSaves: () => ledger.saves,
    writers: () => writersOf(signal),
    catchingUp: () => catchUp.running || [...logbooks.values()].some((l) => l.catchingUp),
    rowsBeingRead: () => rows.depth + (rows.waitingMs() > 0 ? 1 : 0),
    readersHeld: () => ledger.heldCount(active.ownedReaders()),
    health: (pump) => health.view(pump),
    source: config.source.kind,
    replication: () => replication?.status() ?? null,
    replicationFault: () => replication?.fault(),
  };
  return {
    telemetry,
    pool,
    rowPool,
    agent,
    backends,
    listener,
    router,
    rows,
    intake,
    replication,
    catchUp,
    ledger,
    recorder,
    lanes,
    logbooks,
    posts,
    deadLetters,
    activation: active,
    leases,
    housekeeper,
    health,
    outboxDepth,
    groupClock,
    readers,
    snapshot,
    /** Marks the engine as shutting down, for /readyz. */
    stopping: () => {
      stopping = true;
    },
  };
}
