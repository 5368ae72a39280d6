/** Engine throughput: N rows inserted as fast as the connections go, with and without per-sensor posts. */
import type { EngineCost } from '../cost.js';
import type { CpuShare } from '../cpu.js';
import {
  arrivals,
  type Env,
  engineProbe,
  fullGroups,
  type PhaseContext,
  rssStats,
  timeoutFor,
  withPhase,
} from '../harness.js';
import type { Inserter } from '../inserter.js';
import { now, round } from '../stats.js';

/** What the engine and burst phases share: readings inserted as fast as the connections go, and their delivery. */
export interface Throughput {
  sensorPosts: boolean;
  rows: number;
  vectors: number;
  sensorPostsExpected: number;
  complete: boolean;
  deliveredVectors: number;
  deliveredPosts: number;
  duplicates: number;
  /** First insert → last commit, and the inserts' own rate. */
  insertMs: number;
  insertRowsPerS: number;
  /** First insert → the last delivery (vector or post), and readings per second over it. */
  elapsedMs: number;
  readingsPerS: number;
  peakRssMb: number;
  cpu: CpuShare;
  /** Engine CPU, heap allocated and event-loop utilisation over the measurement, per reading. */
  engineCost: EngineCost | undefined;
}

export interface EngineResult extends Throughput {
  /** Queries the engine sent through its pool during the phase (its own count; the LISTEN session aside). */
  engineQueries: number;
  engineQueriesPerVector: number;
  status: Record<string, unknown> | undefined;
}

/**
 * Sends warm-up readings through the engine and waits for them, so the measurement sees the engine as it
 * runs for days, its code compiled by the JIT, rather than its first seconds.
 */
async function warmUp(env: Env, ins: Inserter, sensorPosts: boolean, rows: number): Promise<void> {
  const timestamps = Math.ceil(rows / env.sensorsPerTick);
  if (timestamps === 0) return;
  const groups = fullGroups(env, timestamps);
  const posts = sensorPosts ? timestamps * env.sensorsPerTick : 0;
  await ins.burst(groups);
  if (!(await arrivals(env, groups.length, posts, timeoutFor(posts || groups.length, 200)))) {
    throw new Error('the warm-up readings did not all arrive');
  }
  env.bench.reset();
}

/**
 * Warms the phase's engine up with `warmupRows` readings, then inserts `rows` readings (whole timestamps of
 * both pumps) as fast as the inserting connections go and waits for every vector (and post) to arrive.
 * `around` runs just before the measurement window opens and just after it closes (outside it).
 */
export async function throughput(
  ctx: PhaseContext,
  sensorPosts: boolean,
  size: { rows: number; warmupRows: number },
  around: { before?: () => Promise<void>; after?: () => Promise<void> } = {},
): Promise<{ result: Throughput; lastCommit: number }> {
  const { env } = ctx;
  const timestamps = Math.ceil(size.rows / env.sensorsPerTick);
  const groups = fullGroups(env, timestamps);
  const vectors = groups.length;
  const rowsExpected = timestamps * env.sensorsPerTick;
  const postsExpected = sensorPosts ? rowsExpected : 0;
  const ins = await ctx.inserter(env.opts.inserters);
  await warmUp(env, ins, sensorPosts, size.warmupRows);
  await around.before?.();
  const meter = await ctx.meter();
  let lastCommit = 0;
  const { rows, firstAt } = await ins.burst(groups, (c) => {
    lastCommit = Math.max(lastCommit, c.at);
  });
  const insertEnd = now();
  const c = await arrivals(env, vectors, postsExpected, timeoutFor(rowsExpected, sensorPosts ? 200 : 500));
  const { cpu, cost } = await meter.stop(rows);
  await around.after?.();
  await ins.close();
  const last = c ?? env.bench.completion(vectors, postsExpected);
  const elapsed = last.at - firstAt;
  return {
    lastCommit,
    result: {
      sensorPosts,
      rows,
      vectors,
      sensorPostsExpected: postsExpected,
      complete: c !== undefined,
      deliveredVectors: env.bench.unified.size,
      deliveredPosts: env.bench.sensorKeys.size,
      duplicates: env.bench.duplicates,
      insertMs: round(insertEnd - firstAt, 0),
      insertRowsPerS: round((rows / (insertEnd - firstAt)) * 1000, 0),
      elapsedMs: round(elapsed, 0),
      readingsPerS: c ? round((rows / elapsed) * 1000, 0) : Number.NaN,
      peakRssMb: rssStats(ctx.engine.samples).peakMb,
      cpu,
      engineCost: cost,
    },
  };
}

export function phaseEngine(env: Env, sensorPosts: boolean): Promise<EngineResult> {
  const label = sensorPosts ? 'posts-on' : 'posts-off';
  const spec = { label, engine: { env: { SENSOR_POSTS: String(sensorPosts) } } };
  return withPhase(env, spec, async (ctx) => {
    let queries0 = Number.NaN;
    let probe1: Awaited<ReturnType<typeof engineProbe>>;
    const { result } = await throughput(
      ctx,
      sensorPosts,
      { rows: env.opts.rows, warmupRows: env.opts.warmupRows },
      {
        before: async () => {
          queries0 = Number((await engineProbe(ctx.engine))?.status.db_queries ?? Number.NaN);
        },
        after: async () => {
          probe1 = await engineProbe(ctx.engine);
        },
      },
    );
    const engineQueries = Number(probe1?.status.db_queries ?? Number.NaN) - queries0;
    return {
      ...result,
      engineQueries,
      engineQueriesPerVector: round(engineQueries / result.vectors, 2),
      status: probe1?.status,
    };
  });
}
