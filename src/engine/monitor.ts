import { randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { hostname } from 'node:os';
import type { Logger } from 'pino';
import type { Config, DatabaseConfig } from '../config/env.js';
import { readiness, statusModel } from '../http/status.js';
import { ReplicationSetupError } from '../source/replication/setup.js';
import { describePgError } from '../store/db.js';
import { ensureEngineSchema } from '../store/schema.js';
import { recordWiring } from '../store/wiring.js';
import { type Clock, systemClock, whenAborted } from '../util/clock.js';
import { registerGauges } from './gauges.js';
import { observe } from './observe.js';
import { checkTables, StartupError, withStartupRetries } from './startup.js';
import { type Units, wireUnits } from './wiring.js';

export { StartupError } from './startup.js';

/**
 * A stop's steps after the deadline (cancelling, saving the checkpoints, releasing the leases, closing)
 * share this long; with the database reachable they take milliseconds.
 */
export const AFTER_DEADLINE_MS = 10_000;

export interface MonitorOptions {
  config: Config & { database: DatabaseConfig };
  logger: Logger;
  clock?: Clock;
  checkpointEveryMs?: number;
  /** How often each pump's summary line is logged at info; 60 s. */
  summaryEveryMs?: number;
  /** Shows a long catch-up's progress (a terminal line); without it, only the final log line says it. */
  progress?: (text: string | undefined) => void;
}

/**
 * The units others read (http/, cli/, tests): telemetry, the listener, the replication source (undefined
 * under SOURCE=notify), the leases, the housekeeper, the pumps' verdicts, and the snapshot /status,
 * /readyz and the page read (http/status.ts).
 */
export type MonitorUnits = Pick<
  Units,
  'telemetry' | 'listener' | 'replication' | 'leases' | 'housekeeper' | 'health' | 'snapshot'
>;

export interface MonitorEvents {
  fatal: [error: Error];
}

/**
 * The engine's lifecycle: `wireUnits` (engine/wiring.ts) builds and wires the units; this starts them in
 * order, stops them in the reverse order, and lets telemetry observe their events. It holds no state of
 * the data's path: a row goes Listener ─▶ ChannelRouter ─▶ Intake or a LogbookLane ─▶ … ─▶ backend
 * without passing through here (docs/architecture.md draws it).
 */
export class Monitor extends EventEmitter<MonitorEvents> {
  /** Names this process's database sessions: pm-listen:<id>, pm-lease:<group>:<id>. */
  readonly replicaId = `${hostname().slice(0, 24)}-${process.pid}-${randomBytes(3).toString('hex')}`;
  private readonly lifetime = new AbortController();
  private readonly u: Units;
  /** The units others read: the same objects, fewer of them. */
  readonly units: MonitorUnits;
  private stage = 'running';
  private stopping = false;

  constructor(private readonly o: MonitorOptions) {
    super();
    this.u = wireUnits({
      config: o.config,
      logger: o.logger,
      clock: o.clock ?? systemClock,
      replicaId: this.replicaId,
      signal: this.lifetime.signal,
      checkpointEveryMs: o.checkpointEveryMs ?? 250,
      progress: o.progress,
    });
    const { u } = this;
    this.units = u;
    observe(u.telemetry, {
      ...u,
      log: o.logger,
      signal: this.lifetime.signal,
      ...(o.summaryEveryMs !== undefined ? { summaryEveryMs: o.summaryEveryMs } : {}),
    });
    registerGauges(u.telemetry, {
      pool: u.pool,
      lanes: u.lanes,
      outboxDepth: () => u.outboxDepth.entries(),
      backends: new Map([...u.backends.pumps, ...u.backends.logbooks]),
      postsQueued: () => u.posts.depth,
      listening: () => u.listener.listening,
      catchUpRunning: () => u.catchUp.running,
      writers: () => u.snapshot.writers(),
    });
  }

  /** Prepares the engine's schema and checkpoints, takes its leases, then LISTENs and catches up. */
  async start(): Promise<void> {
    const { u, o } = this;
    const tables = [...new Set(u.readers.map((r) => r.table))];
    await withStartupRetries({ ...o.config, logger: o.logger }, async () => {
      const client = await u.pool.connect();
      try {
        await ensureEngineSchema(client);
        // For the operator commands: the wiring served here (a failure to record it only warns).
        const served = [...o.config.pumps, ...o.config.logbooks].map((d) => d.id);
        await recordWiring(client, o.config.wiring, served).catch((err) =>
          o.logger.warn({ err: describePgError(err) }, 'could not record the wiring in the engine schema'),
        );
        await checkTables(client, tables);
        await u.replication?.prepare(client).catch((err: unknown) => {
          throw err instanceof ReplicationSetupError ? new StartupError(err.message) : err;
        });
        await u.ledger.load(client, u.readers);
        await u.health.restore(client);
      } finally {
        client.release();
      }
    });
    u.listener.on('fatal', (err) => this.emit('fatal', err));
    await u.leases.start();
    u.activation.markStarted();
    await u.listener.start();
    u.replication?.start();
    u.groupClock.start();
    u.outboxDepth.start();
    u.ledger.start();
    u.posts.start();
    u.housekeeper.start();
    u.health.start();
    o.logger.info(
      { pumps: o.config.pumps.map((p) => p.id), owned: u.snapshot.owned(), replica: this.replicaId },
      'monitor started',
    );
  }

  /**
   * Stops taking new work, delivers what it can within the deadline, leaves the rest in the outbox and
   * behind the checkpoints, and closes every connection. The order:
   * 1. stop listening, cleaning and judging; 2. finish the rows being read, catch-up, and the per-sensor and
   * logbook posts in memory; 3. write the outbox, dead letters and post records; 4. drain the outbox
   * until the deadline; 5. write the delivery records and health transitions; then, at the deadline or once drained: 6. cancel
   * what is left, stop the timers and save the checkpoints; 7. release the leases and close.
   * Steps 2-5 end at the deadline; every other step ends by the deadline plus AFTER_DEADLINE_MS at the
   * latest (the database gone, each statement would wait for its own timeout): a step cut short is let go,
   * as a crash would leave it, and named in a warning.
   */
  async stop(deadlineMs = this.o.config.shutdownTimeoutMs): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    const { u } = this;
    u.stopping();
    const deadline = AbortSignal.timeout(Math.max(1, deadlineMs));
    const bound = AbortSignal.timeout(Math.max(1, deadlineMs) + AFTER_DEADLINE_MS);
    const letGo: string[] = [];
    const step = async (stage: string, until: AbortSignal, work: () => Promise<unknown>) => {
      this.stage = stage;
      const done = work().then(
        () => true,
        () => true,
      );
      if (!(await Promise.race([done, whenAborted(until).then(() => false)]))) letGo.push(stage);
    };
    await step('closing the sources', bound, async () => {
      await u.listener.close();
      await u.replication?.stop();
      await u.housekeeper.stop();
      u.health.stop();
    });
    const logbooks = [...u.logbooks.values()];
    await step('draining', deadline, async () => {
      await u.rows.idle();
      await u.catchUp.stop();
      await u.posts.idle();
      await Promise.all(logbooks.map((l) => l.idle()));
      await Promise.all([u.recorder.flush(), u.deadLetters.flush(), u.posts.flush()]);
      await Promise.all(logbooks.map((l) => l.flush()));
      await Promise.all([...u.lanes.values()].map((l) => l.drain(deadline)));
      await Promise.all([u.recorder.flush(), u.posts.flush(), u.health.flush()]);
    });
    // Reaching the deadline is what a drain is for: what is left stays in the outbox, not a step let go.
    if (letGo.at(-1) === 'draining') letGo.pop();
    u.posts.abort();
    for (const l of logbooks) l.abort();
    this.lifetime.abort();
    await step('cancelling what is left', bound, async () => {
      for (const lane of u.lanes.values()) await lane.abort();
    });
    u.groupClock.stop();
    u.outboxDepth.stop();
    await step('saving the checkpoints', bound, () => u.ledger.stop());
    await step('releasing the leases', bound, () => u.leases.close());
    await step('closing the HTTP agent', bound, () => u.agent.close());
    await step('closing the database pools', bound, () => Promise.all([u.pool.end(), u.rowPool.end()]));
    this.stage = 'stopped';
    if (letGo.length > 0) {
      this.o.logger.warn(
        { let_go: letGo, after_ms: Math.max(1, deadlineMs) + AFTER_DEADLINE_MS },
        `the stop let go of what did not finish in time (${letGo.join(', ')}): the database or a backend did not answer; the next start reads again from the checkpoints on record`,
      );
    }
    this.o.logger.info('monitor stopped');
  }

  get shutdownTimeoutMs(): number {
    return this.o.config.shutdownTimeoutMs;
  }

  /** Where a stop is (`running` before one): named in the log if a stop outlives its bound (cli/runtime.ts). */
  get stopStage(): string {
    return this.stage;
  }

  /** 200 only while the connection is up and every channel is LISTENed (http/status.ts). */
  readiness(): { ready: boolean; reason: string } {
    return readiness(this.u.snapshot);
  }

  status() {
    return statusModel(this.u.snapshot);
  }
}
