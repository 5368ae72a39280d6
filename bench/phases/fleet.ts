/**
 * The fleet: synthetic pumps of 20 sensors each (the project's generator, `src/tools/generate-pumps.ts`),
 * every pump one timestamp a second, spread evenly over the second, per-sensor posts on. It times every
 * vector and every per-sensor post from its timestamp's commit to its first arrival at the bench server.
 * Full mode then steps the pump count up (or, when the run failed, down), one engine per step on the
 * same database, and reports the largest count whose p99 lag stays under 1 s (docs/performance.md).
 */
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import pg from 'pg';
import { loadConfig, type PumpConfig } from '../../src/config/env.js';
import { clientConfig, withClient } from '../../src/store/db.js';
import { ENGINE_SCHEMA, migrate } from '../../src/store/schema.js';
import { generatePumps, writePumpDefinitions } from '../../src/tools/generate-pumps.js';
import type { EngineCost } from '../cost.js';
import { type CpuShare, processCpuMs } from '../cpu.js';
import type { RssSample } from '../engine-runner.js';
import {
  type Database,
  type EngineRun,
  type Env,
  engineProbe,
  freshDatabase,
  log,
  type PhaseContext,
  waitQuiet,
  withPhase,
} from '../harness.js';
import { tiempoOf } from '../inserter.js';
import { megabytes, now, quantile, round, waitUntil } from '../stats.js';
import { summarizeStatus } from './memory.js';

const SENSORS = 20;
/** The pass mark of a run: p99 of the commit-to-arrival lag of its vectors and of its posts. */
export const FLEET_P99_TARGET_MS = 1_000;
/** Pumps per migrate call: one transaction each (all of 200 pumps' 4,000 tables in one runs out of locks). */
const MIGRATE_CHUNK = 25;
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

function spread(xs: ArrayLike<number>): Spread {
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

function rssOf(samples: RssSample[]): FleetRun['rss'] {
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

/**
 * One inserting connection per 25 pumps (25 transactions a second each, one at a time), 2 to 16: enough
 * that a commit waiting on its WAL flush holds up few others.
 */
function connectionsFor(pumps: number): number {
  return Math.min(16, Math.max(2, Math.ceil(pumps / 25)));
}

type SessionRole = 'inserts' | 'engine' | 'listen';

/** Each of the database's backends (by pid): its role, from its application_name, and its CPU ms so far. */
async function backendCpu(
  admin: pg.Client,
): Promise<Map<number, { role: SessionRole | 'rest'; ms: number }>> {
  const { rows } = await admin.query<{ pid: number; a: string }>(
    'SELECT pid, application_name AS a FROM pg_stat_activity WHERE datname = current_database()',
  );
  const out = new Map<number, { role: SessionRole | 'rest'; ms: number }>();
  for (const r of rows) {
    const ms = processCpuMs(r.pid);
    if (ms === undefined) continue;
    const role =
      r.a === 'bench-inserter'
        ? 'inserts'
        : r.a.startsWith('pm-listen:')
          ? 'listen'
          : r.a === 'pump-monitor' || r.a.startsWith('pm-lease:')
            ? 'engine'
            : 'rest';
    out.set(r.pid, { role, ms });
  }
  return out;
}

interface PgCounters {
  walBytes: number;
  checkpoints: number;
  autovacuums: number;
}

/** PostgreSQL's running totals: WAL position, checkpoints begun, autovacuums of the engine's tables. */
async function pgCounters(admin: pg.Client): Promise<PgCounters | undefined> {
  try {
    const { rows } = await admin.query<{ wal: string; cp: string | null; av: string | null }>(
      `SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::text AS wal,
              (SELECT (num_timed + num_requested)::text FROM pg_stat_checkpointer) AS cp,
              (SELECT sum(autovacuum_count)::text FROM pg_stat_all_tables WHERE schemaname = $1) AS av`,
      [ENGINE_SCHEMA],
    );
    const r = rows[0];
    return r
      ? { walBytes: Number(r.wal), checkpoints: Number(r.cp), autovacuums: Number(r.av ?? 0) }
      : undefined;
  } catch {
    return undefined; // pg_stat_checkpointer is PostgreSQL 17's; older servers have no such view
  }
}

function pgWork(
  a: PgCounters | undefined,
  b: PgCounters | undefined,
  wallMs: number,
): FleetRun['postgresWork'] {
  if (!a || !b) return { walMbPerS: Number.NaN, checkpoints: Number.NaN, engineAutovacuums: Number.NaN };
  return {
    walMbPerS: round((b.walBytes - a.walBytes) / 1024 ** 2 / (Math.max(1, wallMs) / 1000), 2),
    checkpoints: b.checkpoints - a.checkpoints,
    engineAutovacuums: b.autovacuums - a.autovacuums,
  };
}

/** Cores by role between two backendCpu() readings (a backend that began in between counts from 0). */
function bySession(
  a: Map<number, { role: string; ms: number }>,
  b: Map<number, { role: string; ms: number }>,
  postgresCores: number,
  wallMs: number,
): FleetRun['postgresBySession'] {
  const sum: Record<string, number> = { inserts: 0, engine: 0, listen: 0 };
  for (const [pid, x] of b) {
    if (x.role in sum) sum[x.role] = (sum[x.role] as number) + x.ms - (a.get(pid)?.ms ?? 0);
  }
  const cores = (ms: number) => round(Math.max(0, ms) / Math.max(1, wallMs), 2);
  const inserts = cores(sum.inserts as number);
  const engine = cores(sum.engine as number);
  const listen = cores(sum.listen as number);
  return { inserts, engine, listen, rest: round(Math.max(0, postgresCores - inserts - engine - listen), 2) };
}

/** The engine's status summed over its pumps, with the breakers counted rather than listed. */
function statusOf(t: number, status: Record<string, unknown>): Record<string, unknown> {
  const { breakers, ...rest } = summarizeStatus(t, status);
  return { ...rest, breakers_not_closed: (breakers as string[]).filter((b) => b !== 'closed').length };
}

interface RunPlan {
  pumps: PumpConfig[];
  warmupSeconds: number;
  seconds: number;
  /** The value every reading of the run's first second carries; + 1 per second. */
  firstTick: number;
  tables: { created: number; ms: number };
}

/** Inserts on schedule, times every arrival, and sums the run up. */
async function measure(
  ctx: PhaseContext,
  plan: RunPlan,
  engineStartMs: number,
  engineCatchUpMs: number,
): Promise<FleetRun> {
  const { env } = ctx;
  const { pumps, warmupSeconds, firstTick } = plan;
  const n = pumps.length;
  const ticks = warmupSeconds + plan.seconds;
  const total = n * ticks;
  const stepMs = 1000 / n;
  env.baseMs += 86_400_000;
  const base = env.baseMs;
  const prefixes = new Map(pumps.map((p, k) => [p.pathPrefix, k]));
  const fields = (pumps[0] as PumpConfig).sensors.map((s) => s.field);
  // Per pump timestamp i = second * n + pump: its commit, its vector's first arrival, and its posts.
  const commitAt = new Float64Array(total).fill(Number.NaN);
  const vectorAt = new Float64Array(total).fill(Number.NaN);
  const vectorCount = new Uint16Array(total);
  const postCount = new Uint16Array(total);
  const postLastAt = new Float64Array(total).fill(Number.NaN);
  const postAt: number[] = [];
  const postOf: number[] = [];
  let stale = 0;
  // Every reading of second s carries the value firstTick + s; the path names the pump.
  env.bench.observer = (route, urlPath, body, at) => {
    const slash = urlPath.indexOf('/', 1);
    const k = prefixes.get(slash > 0 ? urlPath.slice(0, slash) : urlPath);
    const value =
      route === 'sensor' ? Number(body.valor) : Math.max(...fields.map((f) => Number(body[f] ?? Number.NaN)));
    const s = value - firstTick;
    if (k === undefined || !Number.isInteger(s) || s < 0 || s >= ticks) {
      stale += 1;
      return;
    }
    const i = s * n + k;
    if (route === 'unified') {
      vectorCount[i] = (vectorCount[i] as number) + 1;
      if (vectorCount[i] === 1) vectorAt[i] = at;
    } else {
      postCount[i] = (postCount[i] as number) + 1;
      if (!(at <= (postLastAt[i] as number))) postLastAt[i] = at;
      postAt.push(at);
      postOf.push(i);
    }
  };
  const connections = connectionsFor(n);
  const ins = await ctx.inserter(connections, n);
  const chains: Promise<unknown>[] = Array.from({ length: connections }, () => Promise.resolve());
  const startLate = new Float64Array(total).fill(Number.NaN);
  let rows = 0;
  let inFlight = 0;
  let errors = 0;
  let firstError: Error | undefined;
  const statusTimeline: Record<string, unknown>[] = [];
  const admin = new pg.Client(clientConfig(ctx.db.config, 'bench-admin'));
  admin.on('error', () => {});
  ctx.defer(() => admin.end().catch(() => {}));
  await admin.connect();
  const sessions0 = await backendCpu(admin);
  const counters0 = await pgCounters(admin);
  const meter = await ctx.meter();
  const t0 = now() + 50;
  const dueOf = (i: number) => t0 + Math.floor(i / n) * 1000 + (i % n) * stepMs;
  let next = 0;
  let nextStatus = t0 + 10_000;
  // With ten seconds' worth of inserts waiting on the connections the inserter has lost its schedule:
  // what falls due meanwhile is skipped, so that the queue and the run's length stay bounded. A stall of
  // a few seconds (a WAL flush under load) only shows in commitLate.
  const maxInFlight = Math.max(10 * n, 50);
  let skipped = 0;
  let skipping = false;
  const endBy = t0 + ticks * 1000 + 60_000;
  // Bounded by time; the count bound allows a wake-up that found nothing due yet for every insert twice.
  for (let guard = 0; next < total && guard < 3 * total + 10_000 && now() < endBy; guard++) {
    // Always yields to the event loop (commits and arrivals are timed there), and wakes at or past due.
    const wait = dueOf(next) - now();
    await delay(wait > 0 ? Math.ceil(wait) : 0);
    const t = now();
    if (inFlight >= maxInFlight) {
      if (!skipping) {
        log(
          `    ${inFlight} inserts wait on the connections at ${round((t - t0) / 1000, 0)} s: ` +
            'skipping what falls due until fewer wait',
        );
      }
      skipping = true;
      for (let burst = 0; next < total && dueOf(next) <= t && burst < n; burst++) {
        next += 1;
        skipped += 1;
      }
      continue;
    }
    skipping = false;
    for (let burst = 0; next < total && dueOf(next) <= t && burst < n; burst++) {
      const i = next;
      next += 1;
      const k = i % n;
      const s = Math.floor(i / n);
      startLate[i] = t - dueOf(i);
      inFlight += 1;
      // Pump k inserts on connection k mod connections (ins.insert picks the same); one statement at a time.
      const conn = k % connections;
      const done = (chains[conn] as Promise<unknown>).then(() =>
        ins.insert(k, {
          pump: pumps[k] as PumpConfig,
          tiempo: tiempoOf(base, s, 1000),
          valor: firstTick + s,
        }),
      );
      chains[conn] = done.catch(() => {});
      done
        .then(
          (c) => {
            commitAt[i] = c.at;
            rows += c.rows;
          },
          (err: Error) => {
            errors += 1;
            firstError ??= err;
          },
        )
        .finally(() => {
          inFlight -= 1;
        });
    }
    if (now() >= nextStatus) {
      nextStatus += 10_000;
      void engineProbe(ctx.engine).then((p) => {
        if (p) statusTimeline.push(statusOf((now() - t0) / 1000, p.status));
      });
    }
  }
  if (next < total) skipped += total - next;
  await waitUntil(() => (inFlight === 0 ? true : undefined), 60_000);
  const insertEnd = now();
  const lastCommit = commitAt.reduce((a, b) => (Number.isNaN(b) ? a : Math.max(a, b)), 0);
  if (firstError) log(`    ${errors} inserts failed; the first: ${firstError.message}`);
  // Drained: every vector and post of what was committed arrived; or nothing new for 15 s; or the bound.
  const committed = commitAt.reduce((a, b) => a + (Number.isNaN(b) ? 0 : 1), 0);
  const seen = () => {
    let v = 0;
    for (let i = 0; i < total; i++) if ((vectorCount[i] as number) > 0) v += 1;
    return { v, p: postAt.length };
  };
  let last = -1;
  let lastChange = now();
  const drainBound = Math.min(120_000, Math.max(20_000, ticks * 500));
  await waitUntil(
    () => {
      const x = seen();
      if (x.v >= committed && x.p >= committed * SENSORS) return true;
      if (x.v + x.p !== last) {
        last = x.v + x.p;
        lastChange = now();
      }
      return now() - lastChange > 15_000 ? false : undefined;
    },
    drainBound,
    100,
  );
  const probe = await engineProbe(ctx.engine);
  if (probe) statusTimeline.push(statusOf((now() - t0) / 1000, probe.status));
  const { cpu, cost } = await meter.stop(rows);
  const postgresBySession = bySession(sessions0, await backendCpu(admin), cpu.postgresCores, cpu.wallMs);
  const postgresWork = pgWork(counters0, await pgCounters(admin), cpu.wallMs);
  await ins.close();
  env.bench.observer = undefined;

  // Lags over the timestamps after the warm-up.
  const from = warmupSeconds * n;
  const vectorLag: number[] = [];
  const timestampLag: number[] = [];
  const tsLagBySecond: number[][] = Array.from({ length: ticks }, () => []);
  for (let i = 0; i < total; i++) {
    const c = commitAt[i] as number;
    if (Number.isNaN(c)) continue;
    const v = vectorAt[i] as number;
    if (!Number.isNaN(v) && i >= from) vectorLag.push(v - c);
    if (!Number.isNaN(v) && postCount[i] === SENSORS) {
      const l = Math.max(v, postLastAt[i] as number) - c;
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
  for (const [j, i] of postOf.entries()) {
    if (i < from) continue;
    const c = commitAt[i] as number;
    if (!Number.isNaN(c)) postLag.push((postAt[j] as number) - c);
  }
  const tenth = Math.max(1, Math.round(plan.seconds / 10));
  const p50Of = (seconds: number[][]) => round(quantile(seconds.flat(), 0.5), 1);
  const firstTenthP50Ms = p50Of(tsLagBySecond.slice(warmupSeconds, warmupSeconds + tenth));
  const lastTenthP50Ms = p50Of(tsLagBySecond.slice(ticks - tenth));
  let vectorsDelivered = 0;
  let vectorsExtra = 0;
  let postsDelivered = 0;
  let lastArrival = 0;
  for (let i = 0; i < total; i++) {
    const vc = vectorCount[i] as number;
    if (vc > 0) vectorsDelivered += 1;
    if (vc > 1) vectorsExtra += vc - 1;
    postsDelivered += postCount[i] as number;
    lastArrival = Math.max(lastArrival, (vectorAt[i] as number) || 0, (postLastAt[i] as number) || 0);
  }
  const lag = {
    vector: spread(vectorLag),
    post: spread(postLag),
    timestamp: spread(timestampLag),
    firstTenthP50Ms,
    lastTenthP50Ms,
    timeline,
  };
  const startLateS = spread(startLate.filter((x) => !Number.isNaN(x)));
  const commitLate: number[] = [];
  for (let i = 0; i < total; i++) {
    const c = commitAt[i] as number;
    if (!Number.isNaN(c)) commitLate.push(c - dueOf(i));
  }
  const commitLateS = spread(commitLate);
  const insertSeconds = (insertEnd - t0) / 1000;
  const inserter = {
    keptUp: skipped === 0 && errors === 0 && commitLateS.p99Ms < FLEET_P99_TARGET_MS,
    skipped,
    errors,
    startLate: startLateS,
    commitLate: commitLateS,
    achievedRowsPerS: round(rows / insertSeconds, 0),
  };
  const vectorsExpected = committed;
  const postsExpected = committed * SENSORS;
  const p99 = Math.max(lag.vector.p99Ms, lag.post.p99Ms);
  const c = cpu;
  const ps = postgresBySession;
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
      `${commitLateS.p99Ms} ms behind schedule${skipped ? `, ${skipped} inserts skipped` : ''}` +
      `${errors ? `, ${errors} failed` : ''}; ${coresText}${backlog}`;
  } else if (vectorsDelivered < vectorsExpected || postsDelivered < postsExpected) {
    const stalled = now() - lastChange > 15_000;
    verdict = stalled ? 'not-exactly-once' : 'engine-behind';
    reason =
      `${vectorsExpected - vectorsDelivered} vectors and ${postsExpected - postsDelivered} posts missing ` +
      (stalled
        ? 'after 15 s without a new arrival'
        : `after the ${round(drainBound / 1000, 0)} s drain bound; ${coresText}`);
  } else if (env.bench.duplicates > 0 || vectorsExtra > 0) {
    verdict = 'not-exactly-once';
    reason = `${env.bench.duplicates} duplicate requests, ${vectorsExtra} extra vectors`;
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
    pumps: n,
    sensors: SENSORS,
    readingsPerS: n * SENSORS,
    warmupSeconds,
    seconds: plan.seconds,
    connections,
    tablesCreated: plan.tables.created,
    tablesMs: round(plan.tables.ms, 0),
    engineStartMs: round(engineStartMs, 0),
    engineCatchUpMs: round(engineCatchUpMs, 0),
    rows,
    timestamps: total,
    inserter,
    vectorsExpected,
    vectorsDelivered,
    vectorsExtra,
    postsExpected,
    postsDelivered,
    duplicates: env.bench.duplicates,
    stale,
    lag,
    drainMs: round(lastArrival - lastCommit, 0),
    verdict,
    reason,
    rss: rssOf(ctx.engine.samples.filter((x) => x.at >= t0)),
    cpu,
    postgresBySession,
    postgresWork,
    engineCost: cost,
    statusTimeline,
  };
}

/** Whether the engine's catch-up is running (its `pump_monitor_catchup_running` gauge). */
async function catchUpRunning(run: EngineRun): Promise<boolean | undefined> {
  try {
    const reply = run.engine.next('catchup', 5_000);
    run.engine.send({ type: 'catchup' });
    return (await reply).running;
  } catch {
    return undefined;
  }
}

/** Creates the sensor tables and triggers of `pumps` with migrate, a few pumps per transaction. */
async function createTables(db: Database, pumps: PumpConfig[]): Promise<number> {
  let tables = 0;
  await withClient(db.config, 'bench-setup', async (c) => {
    for (let i = 0; i < pumps.length; i += MIGRATE_CHUNK)
      tables += (await migrate(c, pumps.slice(i, i + MIGRATE_CHUNK))).sensorTables;
    await c.query('CHECKPOINT');
  });
  return tables;
}

/**
 * Empties the engine schema's state, so that each run starts as a new replica on a new schema whatever the
 * run before left undelivered: no checkpoint (the engine starts each reader at its table's last row), no
 * outbox, post ledger, deferred post or dead letter. The checkpoints' reader numbers start again at 1.
 */
async function resetEngineState(db: Database): Promise<void> {
  await withClient(db.config, 'bench-setup', async (c) => {
    await c.query(
      `TRUNCATE ${ENGINE_SCHEMA}.checkpoints, ${ENGINE_SCHEMA}.outbox, ${ENGINE_SCHEMA}.sensor_posts,
                ${ENGINE_SCHEMA}.deferred_posts, ${ENGINE_SCHEMA}.dead_letters RESTART IDENTITY`,
    );
  });
}

/** A run whose engine did not start: nothing was inserted. */
function notStarted(plan: RunPlan, reason: string): FleetRun {
  const none = spread([]);
  const n = plan.pumps.length;
  return {
    pumps: n,
    sensors: SENSORS,
    readingsPerS: n * SENSORS,
    warmupSeconds: plan.warmupSeconds,
    seconds: plan.seconds,
    connections: 0,
    tablesCreated: plan.tables.created,
    tablesMs: round(plan.tables.ms, 0),
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

export async function phaseFleet(env: Env): Promise<FleetResult> {
  const { fleetPumps, fleetSeconds, fleetWarmupSeconds, fleetMax, fleetStepSeconds } = env.opts;
  const up = fleetLadder(fleetPumps, fleetMax);
  const down = fleetMax > fleetPumps ? fleetLadderDown(fleetPumps) : [];
  const largest = Math.max(fleetPumps, ...up);
  // One set of definitions for the largest count, so that a pump keeps its id and tables in every run.
  const definitions = generatePumps({ count: largest, sensors: SENSORS, baseUrlEnv: 'BASE_URL_SYNTHETIC' });
  const dir = await mkdtemp(path.join(os.tmpdir(), 'pump-monitor-fleet-'));
  const db = await freshDatabase(env, 'fleet');
  let withTables = 0;
  let firstTick = 1;
  let tablesTotal = 0;
  let tablesMsTotal = 0;
  const runOne = async (count: number, seconds: number, label: string): Promise<FleetRun> => {
    const pumpsDir = path.join(dir, `pumps-${count}`);
    writePumpDefinitions(pumpsDir, definitions.slice(0, count));
    const selection = {
      PUMPS_DIR: pumpsDir,
      PUMPS: definitions
        .slice(0, count)
        .map((p) => p.id)
        .join(','),
      BASE_URL_SYNTHETIC: env.bench.url,
      // The engine default, set so that --engine-env cannot turn off what the phase measures.
      SENSOR_POSTS: 'true',
    };
    const pumps = loadConfig(selection).pumps;
    env.bench.servePumps(pumps);
    const tables = { created: 0, ms: 0 };
    const prepare = async () => {
      // Only the tables no earlier run created; each run's are kept for the next.
      const t = now();
      tables.created = await createTables(db, pumps.slice(withTables));
      tables.ms = now() - t;
      withTables = Math.max(withTables, count);
      tablesTotal += tables.created;
      tablesMsTotal += tables.ms;
      log(`    ${count} pumps: ${tables.created} new tables in ${round(tables.ms / 1000, 1)} s`);
      await resetEngineState(db);
    };
    const plan: RunPlan = { pumps, warmupSeconds: fleetWarmupSeconds, seconds, firstTick, tables };
    firstTick += fleetWarmupSeconds + seconds;
    // Its checkpoints, leases and LISTENs grow with the tables: allow a second per 200 of them.
    const timeoutMs = 60_000 + count * SENSORS * 5;
    const spec = {
      label,
      database: db,
      prepare,
      engine: { env: selection, start: false, timeoutMs },
    };
    const r = await withPhase(env, spec, async (ctx) => {
      let startMs: number;
      try {
        startMs = await ctx.startEngine();
      } catch (err) {
        return notStarted(plan, `the engine did not start: ${(err as Error).message.split('\n')[0]}`);
      }
      const t = now();
      const caughtUp = await waitUntil(
        async () => ((await catchUpRunning(ctx.engine)) === false ? true : undefined),
        timeoutMs,
        50,
      );
      const catchUpMs = now() - t;
      if (!caughtUp) log(`    the engine's first catch-up did not end within ${timeoutMs} ms`);
      log(
        `    engine started in ${round(startMs / 1000, 1)} s, first catch-up ${round(catchUpMs / 1000, 1)} s; ` +
          `inserting for ${fleetWarmupSeconds} + ${seconds} s`,
      );
      return measure(ctx, plan, startMs, catchUpMs);
    });
    const lags =
      r.verdict === 'start-failed'
        ? ''
        : `; lag p50/p99/max vectors ${r.lag.vector.p50Ms}/${r.lag.vector.p99Ms}/${r.lag.vector.maxMs} ms, ` +
          `posts ${r.lag.post.p50Ms}/${r.lag.post.p99Ms}/${r.lag.post.maxMs} ms`;
    log(`    ${count} pumps: ${r.verdict} (${r.reason})${lags}`);
    return r;
  };
  try {
    const run = await runOne(fleetPumps, fleetSeconds, 'fleet');
    const passed = run.verdict === 'pass';
    const steps: FleetRun[] = [];
    let largestPassing = passed ? fleetPumps : undefined;
    let stoppedBy = 'no step-up (--fleet-max)';
    if (passed && up.length > 0) stoppedBy = `every count up to ${fleetMax} passed`;
    if (!passed && down.length > 0) stoppedBy = `every count down to ${down[down.length - 1]} failed`;
    // Up from a run that passed, until a count fails; down from one that failed, until a count passes.
    for (const count of passed ? up : down) {
      log(`\n  step: ${count} pumps`);
      if (env.opts.quietWaitSeconds > 0) await waitQuiet(env);
      const r = await runOne(count, fleetStepSeconds, `fleet-${count}`);
      steps.push(r);
      if (passed && r.verdict !== 'pass') {
        stoppedBy = `${count} pumps: ${r.verdict} (${r.reason})`;
        break;
      }
      if (r.verdict === 'pass') largestPassing = count;
      if (!passed && r.verdict === 'pass') {
        stoppedBy = `${count} pumps passed`;
        break;
      }
    }
    return {
      run,
      steps,
      ladder: passed ? up : down,
      largestPassing,
      stoppedBy,
      tablesTotal,
      tablesMsTotal: round(tablesMsTotal, 0),
    };
  } finally {
    await db.drop().catch(() => {});
    await rm(dir, { recursive: true, force: true }).catch(() => {});
  }
}
