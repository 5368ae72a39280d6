import type { CircuitBreakerPolicy } from 'cockatiel';
import type { GroupView } from '../assembler/assembler.js';
import type { LogbookConfig, PumpConfig } from '../config/env.js';
import { breakerState, describeRouteFault, type RouteFault, type RouteGuard } from '../delivery/policy.js';
import type { Telemetry } from '../engine/telemetry.js';
import type { ListenerView } from '../source/listener.js';
import type { WriterHealth } from '../util/batch.js';

/**
 * What /status, /readyz and the page read of a running engine, and nothing more: each field is a unit's
 * own answer (the composition root wires them). The views below only read it.
 */
export interface EngineSnapshot {
  readonly startedAt: number;
  readonly replicaId: string;
  readonly pumps: PumpConfig[];
  readonly logbooks: LogbookConfig[];
  readonly telemetry: Pick<Telemetry, 'pump' | 'logbook' | 'classification' | 'recentErrors'>;
  readonly listener: ListenerView;
  stopping(): boolean;
  /** The pumps and logbooks this replica serves now. */
  owned(): string[];
  owns(id: string): boolean;
  /** A pump's or a logbook's backend. */
  backend(id: string): { breaker: CircuitBreakerPolicy; route?: RouteGuard | undefined } | undefined;
  openGroups(pump: string): number;
  groupsView(pump: string, limit: number): GroupView[];
  outboxPending(pump: string): number;
  /** Per-sensor posts queued or in flight in memory: one pump's, or all. */
  postsQueued(pump?: string): number;
  /** Posts wait in the database because the in-memory queue overflowed. */
  overloaded(): boolean;
  logbookQueued(id: string): number;
  dbQueries(): number;
  checkpointSaves(): number;
  writers(): WriterHealth[];
  catchingUp(): boolean;
  rowsBeingRead(): number;
  readersHeld(): number;
  /** A pump's verdict, its channels' marks and its recent transitions (health/health-unit.ts). */
  health(pump: string): unknown;
  /** Where rows come from: `notify` (LISTEN and the tables) or `replication` (a logical slot). */
  readonly source: 'notify' | 'replication';
  /** The replication source's state (slot, plug-in, lag, rows); null under SOURCE=notify. */
  replication(): unknown;
  /**
   * Why this replica, which holds the replication slot's lease, is not reading the slot (the stream is
   * down or not yet open); undefined while it streams, on a standby, and under SOURCE=notify.
   */
  replicationFault(): string | undefined;
}

/** The batch writers retrying a failed write (the database away, or a server fault), for /readyz and /status. */
export function writersRetrying(s: Pick<EngineSnapshot, 'writers'>) {
  return s
    .writers()
    .filter((w) => w.retryingSince !== undefined)
    .map((w) => ({
      writer: w.name,
      since: new Date(w.retryingSince as number).toISOString(),
      failures: w.failures,
      pending: w.pending,
      error: w.lastError ?? 'unknown',
    }));
}

/**
 * 200 only while the connection is up, every channel is LISTENed, the replication stream is read (its
 * holder, SOURCE=replication), no writer is stuck and no route refused.
 */
export function readiness(s: EngineSnapshot): { ready: boolean; reason: string } {
  if (s.stopping()) return { ready: false, reason: 'shutting down' };
  const { listener } = s;
  if (!listener.listening) {
    const { lastError } = listener.counters();
    return {
      ready: false,
      reason: `LISTEN connection ${listener.state}${lastError ? `: ${lastError}` : ''}`,
    };
  }
  // SOURCE=replication: the slot is the live path. Its holder not reading it delivers nothing new.
  const stream = s.replicationFault();
  if (stream) return { ready: false, reason: stream };
  const stuck = writersRetrying(s);
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
  const owned = s.owned();
  const refused: [string, RouteFault][] = [];
  for (const id of owned) {
    const fault = s.backend(id)?.route?.fault;
    const kind = s.logbooks.some((l) => l.id === id) ? 'logbook' : 'pump';
    if (fault) refused.push([`${kind} ${id}`, fault]);
  }
  if (refused.length > 0) {
    return {
      ready: false,
      reason: `backend route refused: ${refused.map(([who, f]) => `${who}: ${describeRouteFault(f)}`).join('; ')}`,
    };
  }
  return {
    ready: true,
    reason: `listening on ${listener.channelCount} channels; owns ${owned.length ? owned.join(', ') : 'no pump (hot standby)'}`,
  };
}

/** /status: the engine, each pump and each logbook. */
export function statusModel(s: EngineSnapshot) {
  const { listener } = s;
  const listening = listener.listening;
  const lc = listener.counters();
  const pumps: Record<string, unknown> = {};
  for (const p of s.pumps) {
    const c = s.telemetry.pump(p.id);
    const backend = s.backend(p.id);
    pumps[p.id] = {
      name: p.name,
      owned: s.owns(p.id),
      connected: listening,
      channels: listening ? p.sensors.length : 0,
      readings_received: c.readings_received,
      readings_invalid: c.readings_invalid,
      readings_duplicate: c.readings_duplicate,
      readings_late: c.readings_late,
      readings_conflicting: c.readings_conflicting,
      vectors_sent: c.vectors_sent,
      vectors_dropped: c.vectors_dropped,
      vectors_filled: c.vectors_filled,
      vectors_dead: c.vectors_dead,
      vectors_suppressed: c.vectors_suppressed,
      sensor_posts_ok: c.sensor_posts_ok,
      sensor_posts_failed: c.sensor_posts_failed,
      catchup_rows: c.catchup_rows,
      open_groups: s.openGroups(p.id),
      outbox_pending: s.outboxPending(p.id),
      breaker: backend ? breakerState(backend.breaker) : 'closed',
      route_fault: routeFaultView(backend?.route?.fault),
      sensor_posts_queued: s.postsQueued(p.id),
      min_fields: p.minFields,
      last_prediction: c.last_prediction,
      health: s.health(p.id),
    };
  }
  const writers = s.writers();
  return {
    state: lc.state,
    uptime_s: Math.round((Date.now() - s.startedAt) / 1000),
    connected_since: lc.connectedSince ?? null,
    reconnects: lc.reconnects,
    intentos_conexion: lc.intentosConexion,
    reconexiones_consecutivas: lc.reconexionesConsecutivas,
    last_heartbeat_at: lc.lastHeartbeatAt ?? null,
    last_heartbeat_ms: lc.lastHeartbeatMs ?? null,
    replica: s.replicaId,
    owned_pumps: s.owned(),
    sensor_posts_queued: s.postsQueued(),
    overloaded: s.overloaded(),
    db_queries: s.dbQueries(),
    checkpoint_saves: s.checkpointSaves(),
    source: s.source,
    replication: s.replication(),
    writers_retrying: writersRetrying(s),
    // Work under way that is not a queue of posts or an open group: for a caller (a test, an operator)
    // that must know the engine has settled everything it was given.
    work: {
      catch_up_running: s.catchingUp(),
      rows_being_read: s.rowsBeingRead(),
      readers_held: s.readersHeld(),
      // Records waiting for their batch write (the outbox, its delivery records, the post ledger, …).
      records_queued: writers.reduce((n, w) => n + w.pending, 0),
    },
    pumps,
    logbooks: Object.fromEntries(
      s.logbooks.map((l) => {
        const c = s.telemetry.logbook(l.id);
        const backend = s.backend(l.id);
        return [
          l.id,
          {
            name: l.name,
            owned: s.owns(l.id),
            streams: l.streams.map((x) => ({ tabla: x.tabla, table: x.table, pump: x.pump })),
            queued: s.logbookQueued(l.id),
            received: c.received,
            duplicate: c.duplicate,
            invalid: c.invalid,
            sent: c.sent,
            failed: c.failed,
            retried: c.retried,
            breaker: backend ? breakerState(backend.breaker) : 'closed',
            route_fault: routeFaultView(backend?.route?.fault),
            last_classification: c.last_classification,
          },
        ];
      }),
    ),
  };
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

/** Everything the status page draws, for one moment. */
export function pageModel(s: EngineSnapshot) {
  const now = Date.now();
  const status = statusModel(s);
  const pumps = Object.entries(status.pumps).map(([id, summary]) => {
    const stats = s.telemetry.pump(id);
    return {
      id,
      summary,
      channels: [...stats.channels.values()].map((c) => {
        const { lastClass, anomalies } = s.telemetry.classification(c);
        return {
          channel: c.channel,
          field: c.field,
          description: c.description,
          unit: c.unit,
          readings: c.readings,
          last_seen_ms_ago: c.lastSeenAt === null ? null : now - c.lastSeenAt,
          rate_per_min: c.rate.perMinute(now),
          last_value: c.lastValue,
          last_class: lastClass,
          anomalies,
          in_vector: c.inVector,
          shared_with: c.sharedWith,
        };
      }),
      // The completeness grid's columns (a group's `present` follows them), and the latest drops.
      fields: stats.vector_fields,
      dropped: stats.recent_dropped.slice(-10),
      groups: s.groupsView(id, 20),
      predictions: stats.predictions.slice(-300),
    };
  });
  return {
    now,
    state: status.state,
    uptime_s: status.uptime_s,
    reconnects: status.reconnects,
    last_heartbeat_at: status.last_heartbeat_at,
    pumps,
    logbooks: Object.entries(status.logbooks).map(([id, l]) => ({
      id,
      ...l,
      recent: [...s.telemetry.logbook(id).recent].reverse(),
    })),
    errors: s.telemetry.recentErrors(20),
  };
}
