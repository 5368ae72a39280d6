/**
 * The fleet phase's model: what one run and the whole phase report, the spreads they are summed up in, the
 * step-up and step-down ladders, and the engine's memory over a run.
 */
import type { EngineCost } from '../cost.js';
import type { CpuShare } from '../cpu.js';
import type { RssSample } from '../engine-runner.js';
import { megabytes, quantile, round } from '../stats.js';
import type { WaitProfile } from '../waits.js';

export const SENSORS = 20;
/** The pass mark of a run: p99 of the commit-to-arrival lag of its vectors and of its posts. */
export const FLEET_P99_TARGET_MS = 1_000;
/**
 * The step-up's counts: each at most a third above the one before, so the largest passing count is
 * within a third of the real limit; the steps are finest where one replica is expected to stop.
 */
const LADDER = [100, 150, 200, 250, 300, 350, 400, 500, 600, 800, 1_000, 1_250, 1_500, 2_000, 2_500, 3_000];

export function fleetLadder(from: number, max: number): number[] {
  if (max <= from) return [];
  const steps = LADDER.filter((n) => n > from && n < max);
  return [...steps, max];
}

/** When the run itself fails: down to the largest count that passes, each step at most a half below. */
const LADDER_DOWN = [150, 100, 75, 50, 25];

export function fleetLadderDown(from: number): number[] {
  return LADDER_DOWN.filter((n) => n < from);
}

export interface Spread {
  samples: number;
  p50Ms: number;
  p90Ms: number;
  p99Ms: number;
  maxMs: number;
}

export function spread(xs: ArrayLike<number>): Spread {
  const v = Array.from(xs);
  return {
    samples: v.length,
    p50Ms: round(quantile(v, 0.5), 1),
    p90Ms: round(quantile(v, 0.9), 1),
    p99Ms: round(quantile(v, 0.99), 1),
    maxMs: round(
      v.reduce((a, b) => Math.max(a, b), Number.NEGATIVE_INFINITY),
      1,
    ),
  };
}

export type FleetVerdict =
  | 'pass'
  | 'lag'
  | 'engine-behind'
  | 'inserter-behind'
  | 'not-exactly-once'
  | 'start-failed';

export interface FleetRun {
  pumps: number;
  sensors: number;
  /** Readings the schedule inserts per second: pumps × sensors. */
  readingsPerS: number;
  warmupSeconds: number;
  seconds: number;
  /** Inserting connections; pump k always inserts on connection k mod n. */
  connections: number;
  /** Tables this run's prepare created (its new pumps'), and how long that took (outside every window). */
  tablesCreated: number;
  tablesMs: number;
  /** The engine's Monitor.start(): schema, every reader's checkpoint, leases, LISTEN on every channel. */
  engineStartMs: number;
  /**
   * Then its first catch-up, which reads every table once (nothing to catch up here); the inserts begin
   * after it, so that it falls in no window.
   */
  engineCatchUpMs: number;
  rows: number;
  timestamps: number;
  /** How the inserts kept to their schedule: lateness of each INSERT's start and of its commit. */
  inserter: {
    keptUp: boolean;
    /**
     * Inserts not made because, when they fell due, ten seconds' worth were still waiting on the
     * connections: the run keeps its length and skips what PostgreSQL cannot take.
     */
    skipped: number;
    errors: number;
    startLate: Spread;
    commitLate: Spread;
    achievedRowsPerS: number;
  };
  vectorsExpected: number;
  vectorsDelivered: number;
  /** Pump timestamps that got a second vector under another key (a group split in two). */
  vectorsExtra: number;
  postsExpected: number;
  postsDelivered: number;
  /** Requests answered 200 whose key had already been answered 200. */
  duplicates: number;
  /** First arrivals that belong to no timestamp of this run (left over from an earlier step). */
  stale: number;
  /** Commit → first arrival, over the timestamps after the warm-up. */
  lag: {
    vector: Spread;
    post: Spread;
    /** Commit → the last of the timestamp's vector and posts to arrive. */
    timestamp: Spread;
    /** p50 of `timestamp` over the first and the last tenth of the window: a growing backlog shows here. */
    firstTenthP50Ms: number;
    lastTenthP50Ms: number;
    /** Per inserted second (the warm-up's included): [second, p50, p99, max] of `timestamp`. */
    timeline: number[][];
  };
  /** The last commit → the last arrival. */
  drainMs: number;
  verdict: FleetVerdict;
  reason: string;
  rss: {
    peakMb: number;
    firstHalfPeakMb: number;
    secondHalfPeakMb: number;
    /** Least-squares slope of RSS over the window (none for a window under a minute). */
    slopeMbPerMin: number;
    flat: boolean;
    peakHeapMb: number;
    /** The same slope of the JS heap used (sampled without a collection first: noisy, garbage included). */
    heapSlopeMbPerMin: number;
  };
  cpu: CpuShare;
  /**
   * PostgreSQL's cores by session over the window, from its backends' /proc time, named by
   * pg_stat_activity's application_name: the inserts, the engine's pool and lease sessions, its LISTEN
   * session, and the rest (other sessions, background processes, backends that ended in the window).
   */
  postgresBySession: { inserts: number; engine: number; listen: number; rest: number };
  /**
   * What else PostgreSQL did over the window: WAL written, checkpoints it began (by time or because the
   * WAL reached max_wal_size), and autovacuum runs on the engine schema's tables.
   */
  postgresWork: { walMbPerS: number; checkpoints: number; engineAutovacuums: number };
  /**
   * What PostgreSQL's sessions waited on over the window (pg_stat_activity every 100 ms, by role): with
   * `cpu.postgresCores` against the machine's cores, it says whether PostgreSQL binds first, and on what
   * (docs/scaling.md). Undefined for a run that did not start.
   */
  waits: WaitProfile | undefined;
  /** Engine CPU, heap allocated and event-loop utilisation over the window (warm-up and drain included). */
  engineCost: EngineCost | undefined;
  /** The engine's status every 10 s (sums over the pumps). */
  statusTimeline: Record<string, unknown>[];
}

export interface FleetResult {
  run: FleetRun;
  /**
   * Full mode: up from a run that passed, stopping at the first count that fails; down from a run that
   * failed, stopping at the first count that passes. In order.
   */
  steps: FleetRun[];
  /** The counts that were to be tried, in order (up or down). */
  ladder: number[];
  /** The largest count that passed (the run's or a step's); undefined when none did. */
  largestPassing: number | undefined;
  /** What ended the step-up. */
  stoppedBy: string;
  tablesTotal: number;
  tablesMsTotal: number;
}

/** Least-squares slope per minute; none over less than a minute, where start-up growth is all it shows. */
function linearSlopePerMin(samples: RssSample[], pick: (s: RssSample) => number): number {
  const t0 = samples[0]?.at ?? 0;
  if (samples.length < 2 || (samples[samples.length - 1]?.at ?? t0) - t0 < 60_000) return Number.NaN;
  const xs = samples.map((s) => (s.at - t0) / 60_000);
  const ys = samples.map((s) => megabytes(pick(s)));
  const mx = xs.reduce((a, b) => a + b, 0) / xs.length;
  const my = ys.reduce((a, b) => a + b, 0) / ys.length;
  let num = 0;
  let den = 0;
  for (const [i, x] of xs.entries()) {
    num += (x - mx) * ((ys[i] as number) - my);
    den += (x - mx) ** 2;
  }
  return den > 0 ? round(num / den, 2) : Number.NaN;
}

export function rssOf(samples: RssSample[]): FleetRun['rss'] {
  const peak = (xs: RssSample[]) => (xs.length ? megabytes(Math.max(...xs.map((x) => x.rss))) : Number.NaN);
  const mid = samples.length ? ((samples[0]?.at ?? 0) + (samples[samples.length - 1]?.at ?? 0)) / 2 : 0;
  const first = peak(samples.filter((x) => x.at < mid));
  const second = peak(samples.filter((x) => x.at >= mid));
  return {
    peakMb: peak(samples),
    firstHalfPeakMb: first,
    secondHalfPeakMb: second,
    slopeMbPerMin: linearSlopePerMin(samples, (x) => x.rss),
    // As the memory phase: the second half never rose more than 10% (and 5 MB) above the first's peak.
    flat: second <= Math.max(first * 1.1, first + 5),
    peakHeapMb: samples.length ? megabytes(Math.max(...samples.map((x) => x.heapUsed))) : Number.NaN,
    heapSlopeMbPerMin: linearSlopePerMin(samples, (x) => x.heapUsed),
  };
}
