import type { CircuitBreakerPolicy } from 'cockatiel';
import type pg from 'pg';
import { breakerState, type RouteGuard } from '../delivery/policy.js';
import { engineTableStats } from '../store/retention.js';
import { notificationQueueUsage } from '../store/sessions.js';
import type { WriterHealth } from '../util/batch.js';
import type { PumpLane } from './pump-lane.js';
import type { Telemetry } from './telemetry.js';

/** What the gauges read when Prometheus scrapes: the units' own state, and a few database figures. */
export interface GaugeSources {
  pool: pg.Pool;
  lanes: Map<string, PumpLane>;
  outboxDepth: () => Iterable<[string, number]>;
  backends: Map<string, { breaker: CircuitBreakerPolicy; route?: RouteGuard }>;
  postsQueued: () => number;
  listening: () => boolean;
  catchUpRunning: () => boolean;
  writers?: () => WriterHealth[];
}

type Set = (labels: object, v: number) => void;

/** A database figure: no value while the database is away. */
const fromDb = (read: (set: Set) => Promise<void>) => async (set: Set) => {
  try {
    await read(set);
  } catch {
    // The next scrape tries again.
  }
};

/** Registers the engine's gauges, read at scrape time. */
export function registerGauges(t: Telemetry, g: GaugeSources): void {
  t.gauge('open_groups', 'Open (incomplete) groups', ['pump'], (set) => {
    for (const [pump, lane] of g.lanes) set({ pump }, lane.openGroups);
  });
  t.gauge('outbox_depth', 'Vectors waiting in the outbox', ['pump'], (set) => {
    for (const [pump, n] of g.outboxDepth()) set({ pump }, n);
  });
  t.gauge('sensor_posts_queued', 'Per-sensor posts queued or in flight', [], (set) =>
    set({}, g.postsQueued()),
  );
  t.gauge('listening', '1 while every channel is LISTENed', [], (set) => set({}, g.listening() ? 1 : 0));
  t.gauge(
    'breaker_open',
    '1 while the backend circuit of a pump (or a logbook, by its id) is open or half-open',
    ['pump'],
    (set) => {
      for (const [pump, b] of g.backends) set({ pump }, breakerState(b.breaker) === 'closed' ? 0 : 1);
    },
  );
  t.gauge(
    'backend_route_refused',
    '1 while the backend of a pump (or a logbook, by its id) refuses its route (a redirect, 401 or 403): its deliveries hold; `status` says which',
    ['pump', 'status'],
    (set) => {
      for (const [pump, b] of g.backends) {
        const fault = b.route?.fault;
        if (fault) set({ pump, status: String(fault.status) }, 1);
      }
    },
  );
  t.gauge('catchup_running', '1 while catch-up reads missed rows from the tables', [], (set) =>
    set({}, g.catchUpRunning() ? 1 : 0),
  );
  t.gauge(
    'writer_retrying',
    '1 while a batch writer retries a failed write as a whole (the database away, a server fault)',
    ['writer'],
    (set) => {
      for (const w of g.writers?.() ?? []) set({ writer: w.name }, w.retryingSince === undefined ? 0 : 1);
    },
  );
  t.gauge(
    'writer_refused_items',
    'Items a batch writer set aside since start: the database refused them on their own (a data error)',
    ['writer'],
    (set) => {
      for (const w of g.writers?.() ?? []) set({ writer: w.name }, w.refused);
    },
  );
  // One query feeds both table gauges of a scrape: the second reads what the first fetched.
  let stats: ReturnType<typeof engineTableStats> | undefined;
  const tableStats = () => {
    stats ??= engineTableStats(g.pool).finally(() => setTimeout(() => (stats = undefined), 1_000).unref());
    return stats;
  };
  const tableGauges = [
    ['engine_table_rows', "Rows in the engine schema's tables (PostgreSQL's live-row estimate)", 'rows'],
    ['engine_table_bytes', "On-disk size of the engine schema's tables, indexes included", 'bytes'],
  ] as const;
  for (const [name, help, figure] of tableGauges) {
    t.gauge(
      name,
      help,
      ['table'],
      fromDb(async (set) => {
        for (const x of await tableStats()) set({ table: x.table }, x[figure]);
      }),
    );
  }
  t.gauge(
    'notification_queue_usage',
    'pg_notification_queue_usage() of the server',
    [],
    fromDb(async (set) => set({}, await notificationQueueUsage(g.pool))),
  );
}
