/**
 * The fleet: synthetic pumps of 20 sensors each (the project's generator, `src/tools/generate-pumps.ts`),
 * every pump one timestamp a second, spread evenly over the second, per-sensor posts on. It times every
 * vector and every per-sensor post from its timestamp's commit to its first arrival at the bench server.
 * Full mode then steps the pump count up (or, when the run failed, down), one engine per step on the
 * same database, and reports the largest count whose p99 lag stays under 1 s (docs/performance.md).
 *
 * Set-up is in ./fleet-setup.ts, the run (inserts on schedule, arrivals, drain) in ./fleet-run.ts, what
 * PostgreSQL did in ./fleet-postgres.ts, the summing-up and verdict in ./fleet-collect.ts, and the
 * report's types in ./fleet-model.ts.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { loadConfig } from '../../src/config/env.js';
import { clientConfig } from '../../src/store/db.js';
import { generatePumps, writePumpDefinitions } from '../../src/tools/generate-pumps.js';
import {
  type Env,
  engineProbe,
  freshDatabase,
  log,
  type PhaseContext,
  waitQuiet,
  withPhase,
} from '../harness.js';
import { now, round, waitUntil } from '../stats.js';
import { sampleWaits } from '../waits.js';
import { collect, notStarted } from './fleet-collect.js';
import { type FleetResult, type FleetRun, fleetLadder, fleetLadderDown, SENSORS } from './fleet-model.js';
import { backendCpu, bySession, pgCounters, pgWork } from './fleet-postgres.js';
import { Arrivals, drain, insertOnSchedule, statusOf } from './fleet-run.js';
import {
  catchUpRunning,
  connectionsFor,
  createTables,
  type RunPlan,
  resetEngineState,
} from './fleet-setup.js';

export {
  FLEET_P99_TARGET_MS,
  type FleetResult,
  type FleetRun,
  type FleetVerdict,
  fleetLadder,
  fleetLadderDown,
  type Spread,
} from './fleet-model.js';

/** Inserts on schedule, times every arrival, and sums the run up. */
async function measure(
  ctx: PhaseContext,
  plan: RunPlan,
  engineStartMs: number,
  engineCatchUpMs: number,
): Promise<FleetRun> {
  const { env } = ctx;
  const n = plan.pumps.length;
  env.baseMs += 86_400_000;
  const base = env.baseMs;
  const arrivals = new Arrivals(n, plan.warmupSeconds + plan.seconds);
  env.bench.observer = arrivals.observer(plan.pumps, plan.firstTick);
  const connections = connectionsFor(n);
  const ins = await ctx.inserter(connections, n);
  const statusTimeline: Record<string, unknown>[] = [];
  const admin = new pg.Client(clientConfig(ctx.db.config, 'bench-admin'));
  admin.on('error', () => {});
  ctx.defer(() => admin.end().catch(() => {}));
  await admin.connect();
  const sessions0 = await backendCpu(admin);
  const counters0 = await pgCounters(admin);
  const waits = await sampleWaits(ctx.db.config);
  ctx.defer(() => waits.stop());
  const meter = await ctx.meter();
  const schedule = await insertOnSchedule(ctx, plan, arrivals, ins, connections, base, statusTimeline);
  const drained = await drain(arrivals);
  const probe = await engineProbe(ctx.engine);
  if (probe) statusTimeline.push(statusOf((now() - schedule.t0) / 1000, probe.status));
  const { cpu, cost } = await meter.stop(schedule.rows);
  const waited = await waits.stop();
  const postgresBySession = bySession(sessions0, await backendCpu(admin), cpu.postgresCores, cpu.wallMs);
  const postgresWork = pgWork(counters0, await pgCounters(admin), cpu.wallMs);
  await ins.close();
  env.bench.observer = undefined;
  return collect({
    plan,
    engineStartMs,
    engineCatchUpMs,
    connections,
    arrivals,
    schedule,
    drained,
    cpu,
    cost,
    postgresBySession,
    postgresWork,
    waits: waited,
    duplicates: env.bench.duplicates,
    samples: ctx.engine.samples,
    statusTimeline,
    engineGone: engineGone(ctx.engine.engine),
  });
}

/** How the engine ended, if it did during the run: its exit code or signal, its last error, its stderr's tail. */
function engineGone(engine: {
  exit?: { code: number | null; signal: NodeJS.Signals | null };
  lastError?: string;
  stderr: string;
}): string | undefined {
  if (!engine.exit) return undefined;
  const how = engine.exit.signal ? `killed by ${engine.exit.signal}` : `exited with code ${engine.exit.code}`;
  const said = engine.lastError ?? engine.stderr.trim().split('\n').slice(-3).join(' | ');
  return `${how}${said ? `: ${said.slice(0, 400)}` : ''}`;
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
