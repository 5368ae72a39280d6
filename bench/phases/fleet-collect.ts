/**
 * A fleet run summed up: the lags of its vectors and posts after the warm-up, how the inserts kept to their
 * schedule, and the verdict with its reason.
 */
import type { EngineCost } from '../cost.js';
import type { CpuShare } from '../cpu.js';
import type { RssSample } from '../engine-runner.js';
import { now, quantile, round } from '../stats.js';
import {
  FLEET_P99_TARGET_MS,
  type FleetRun,
  type FleetVerdict,
  rssOf,
  SENSORS,
  spread,
} from './fleet-model.js';
import type { Arrivals, Drained, Schedule } from './fleet-run.js';
import type { RunPlan } from './fleet-setup.js';

/** Everything a run measured, for collect(). */
export interface Measured {
  plan: RunPlan;
  engineStartMs: number;
  engineCatchUpMs: number;
  connections: number;
  arrivals: Arrivals;
  schedule: Schedule;
  drained: Drained;
  cpu: CpuShare;
  cost: EngineCost | undefined;
  postgresBySession: FleetRun['postgresBySession'];
  postgresWork: FleetRun['postgresWork'];
  waits: FleetRun['waits'];
  /** Requests the bench server answered 200 whose key it had already answered 200. */
  duplicates: number;
  /** The engine's memory samples over the run. */
  samples: RssSample[];
  statusTimeline: Record<string, unknown>[];
  /** How the engine ended during the run, if it did (a stalled run then says why). */
  engineGone?: string | undefined;
}

/** Lags over the timestamps after the warm-up, and per inserted second over all of them. */
function lagsOf(a: Arrivals, warmupSeconds: number, seconds: number): FleetRun['lag'] {
  const { n, total, ticks } = a;
  const from = warmupSeconds * n;
  const vectorLag: number[] = [];
  const timestampLag: number[] = [];
  const tsLagBySecond: number[][] = Array.from({ length: ticks }, () => []);
  for (let i = 0; i < total; i++) {
    const c = a.commitAt[i] as number;
    if (Number.isNaN(c)) continue;
    const v = a.vectorAt[i] as number;
    if (!Number.isNaN(v) && i >= from) vectorLag.push(v - c);
    if (!Number.isNaN(v) && a.postCount[i] === SENSORS) {
      const l = Math.max(v, a.postLastAt[i] as number) - c;
      if (i >= from) timestampLag.push(l);
      tsLagBySecond[Math.floor(i / n)]?.push(l);
    }
  }
  // Per inserted second, warm-up included: [second, p50, p99, max] of the timestamps' complete lag.
  const timeline = tsLagBySecond.map((xs, second) => {
    const x = spread(xs);
    return [second, x.p50Ms, x.p99Ms, x.maxMs];
  });
  const postLag: number[] = [];
  for (const [j, i] of a.postOf.entries()) {
    if (i < from) continue;
    const c = a.commitAt[i] as number;
    if (!Number.isNaN(c)) postLag.push((a.postAt[j] as number) - c);
  }
  const tenth = Math.max(1, Math.round(seconds / 10));
  const p50Of = (xs: number[][]) => round(quantile(xs.flat(), 0.5), 1);
  return {
    vector: spread(vectorLag),
    post: spread(postLag),
    timestamp: spread(timestampLag),
    firstTenthP50Ms: p50Of(tsLagBySecond.slice(warmupSeconds, warmupSeconds + tenth)),
    lastTenthP50Ms: p50Of(tsLagBySecond.slice(ticks - tenth)),
    timeline,
  };
}

/** How the inserts kept to their schedule. */
function inserterOf(a: Arrivals, s: Schedule): FleetRun['inserter'] {
  const startLate = spread(s.startLate.filter((x) => !Number.isNaN(x)));
  const late: number[] = [];
  for (let i = 0; i < a.total; i++) {
    const c = a.commitAt[i] as number;
    if (!Number.isNaN(c)) late.push(c - s.dueOf(i));
  }
  const commitLate = spread(late);
  return {
    keptUp: s.skipped === 0 && s.errors === 0 && commitLate.p99Ms < FLEET_P99_TARGET_MS,
    skipped: s.skipped,
    errors: s.errors,
    startLate,
    commitLate,
    achievedRowsPerS: round(s.rows / ((s.insertEnd - s.t0) / 1000), 0),
  };
}

/** What a run's report says of its plan, whether it ran or not. */
function planned(plan: RunPlan) {
  const n = plan.pumps.length;
  return {
    pumps: n,
    sensors: SENSORS,
    readingsPerS: n * SENSORS,
    warmupSeconds: plan.warmupSeconds,
    seconds: plan.seconds,
    tablesCreated: plan.tables.created,
    tablesMs: round(plan.tables.ms, 0),
  };
}

/** Sums a run up into its report, verdict included. */
export function collect(m: Measured): FleetRun {
  const { plan, arrivals: a, schedule, drained, cpu: c, postgresBySession: ps } = m;
  const n = a.n;
  const lag = lagsOf(a, plan.warmupSeconds, plan.seconds);
  const { firstTenthP50Ms, lastTenthP50Ms } = lag;
  const inserter = inserterOf(a, schedule);
  const { commitLate } = inserter;
  let vectorsDelivered = 0;
  let vectorsExtra = 0;
  let postsDelivered = 0;
  let lastArrival = 0;
  for (let i = 0; i < a.total; i++) {
    const vc = a.vectorCount[i] as number;
    if (vc > 0) vectorsDelivered += 1;
    if (vc > 1) vectorsExtra += vc - 1;
    postsDelivered += a.postCount[i] as number;
    lastArrival = Math.max(lastArrival, (a.vectorAt[i] as number) || 0, (a.postLastAt[i] as number) || 0);
  }
  const committed = a.committed();
  const vectorsExpected = committed;
  const postsExpected = committed * SENSORS;
  const p99 = Math.max(lag.vector.p99Ms, lag.post.p99Ms);
  const coresText =
    `engine ${c.engineCores}, PostgreSQL ${c.postgresCores} (inserts ${ps.inserts}, engine's sessions ` +
    `${ps.engine}, its LISTEN ${ps.listen}, rest ${ps.rest}), bench ${c.benchCores}, other ${c.otherCores} cores`;
  let verdict: FleetVerdict;
  let reason: string;
  if (!inserter.keptUp) {
    verdict = 'inserter-behind';
    // The engine may have fallen behind as well (it shares PostgreSQL with the inserts): say so too.
    const backlog =
      lastTenthP50Ms >= FLEET_P99_TARGET_MS
        ? `; the engine fell behind too: lag p50 ${firstTenthP50Ms} ms in the window's first tenth, ${lastTenthP50Ms} ms in its last`
        : '';
    reason =
      `the inserts could not keep to ${n} timestamps a second (${n * SENSORS} rows/s): commits p99 ` +
      `${commitLate.p99Ms} ms behind schedule${inserter.skipped ? `, ${inserter.skipped} inserts skipped` : ''}` +
      `${inserter.errors ? `, ${inserter.errors} failed` : ''}; ${coresText}${backlog}`;
  } else if (vectorsDelivered < vectorsExpected || postsDelivered < postsExpected) {
    const stalled = now() - drained.lastChange > 15_000;
    verdict = stalled ? 'not-exactly-once' : 'engine-behind';
    reason =
      `${vectorsExpected - vectorsDelivered} vectors and ${postsExpected - postsDelivered} posts missing ` +
      (stalled
        ? 'after 15 s without a new arrival'
        : `after the ${round(drained.drainBound / 1000, 0)} s drain bound; ${coresText}`) +
      (m.engineGone ? `; the engine ${m.engineGone}` : '');
  } else if (m.duplicates > 0 || vectorsExtra > 0) {
    verdict = 'not-exactly-once';
    reason = `${m.duplicates} duplicate requests, ${vectorsExtra} extra vectors`;
  } else if (lastTenthP50Ms >= FLEET_P99_TARGET_MS) {
    verdict = 'engine-behind';
    reason = `a backlog: lag p50 ${firstTenthP50Ms} ms in the window's first tenth, ${lastTenthP50Ms} ms in its last; ${coresText}`;
  } else if (!(p99 < FLEET_P99_TARGET_MS)) {
    verdict = 'lag';
    reason = `p99 lag ${p99} ms (vectors ${lag.vector.p99Ms}, posts ${lag.post.p99Ms})`;
  } else {
    verdict = 'pass';
    reason = `p99 lag ${p99} ms (vectors ${lag.vector.p99Ms}, posts ${lag.post.p99Ms})`;
  }
  return {
    ...planned(plan),
    connections: m.connections,
    engineStartMs: round(m.engineStartMs, 0),
    engineCatchUpMs: round(m.engineCatchUpMs, 0),
    rows: schedule.rows,
    timestamps: a.total,
    inserter,
    vectorsExpected,
    vectorsDelivered,
    vectorsExtra,
    postsExpected,
    postsDelivered,
    duplicates: m.duplicates,
    stale: a.stale,
    lag,
    drainMs: round(lastArrival - a.lastCommit(), 0),
    verdict,
    reason,
    rss: rssOf(m.samples.filter((x) => x.at >= schedule.t0)),
    cpu: c,
    postgresBySession: ps,
    postgresWork: m.postgresWork,
    waits: m.waits,
    engineCost: m.cost,
    statusTimeline: m.statusTimeline,
  };
}

/** A run whose engine did not start: nothing was inserted. */
export function notStarted(plan: RunPlan, reason: string): FleetRun {
  const none = spread([]);
  return {
    ...planned(plan),
    connections: 0,
    engineStartMs: Number.NaN,
    engineCatchUpMs: Number.NaN,
    rows: 0,
    timestamps: 0,
    inserter: {
      keptUp: false,
      skipped: 0,
      errors: 0,
      startLate: none,
      commitLate: none,
      achievedRowsPerS: 0,
    },
    vectorsExpected: 0,
    vectorsDelivered: 0,
    vectorsExtra: 0,
    postsExpected: 0,
    postsDelivered: 0,
    duplicates: 0,
    stale: 0,
    lag: {
      vector: none,
      post: none,
      timestamp: none,
      firstTenthP50Ms: Number.NaN,
      lastTenthP50Ms: Number.NaN,
      timeline: [],
    },
    drainMs: Number.NaN,
    verdict: 'start-failed',
    reason,
    rss: {
      peakMb: Number.NaN,
      firstHalfPeakMb: Number.NaN,
      secondHalfPeakMb: Number.NaN,
      slopeMbPerMin: Number.NaN,
      flat: false,
      peakHeapMb: Number.NaN,
      heapSlopeMbPerMin: Number.NaN,
    },
    postgresBySession: { inserts: 0, engine: 0, listen: 0, rest: 0 },
    postgresWork: { walMbPerS: Number.NaN, checkpoints: Number.NaN, engineAutovacuums: Number.NaN },
    waits: undefined,
    cpu: {
      wallMs: 0,
      engineCores: 0,
      postgresCores: 0,
      benchCores: 0,
      helperCores: 0,
      otherCores: 0,
      machineBusyCores: 0,
      machineCores: 0,
    },
    engineCost: undefined,
    statusTimeline: [],
  };
}
