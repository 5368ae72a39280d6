/** Engine throughput: N rows inserted as fast as the connections go, with and without per-sensor posts. */
import type { EngineCost } from '../cost.js';
import type { CpuShare } from '../cpu.js';
import { arrivals, type Env, engineProbe, fullGroups, rssStats, timeoutFor, withPhase } from '../harness.js';
import type { Inserter } from '../inserter.js';
import { now, round } from '../stats.js';

export interface EngineResult {
  sensorPosts: boolean;
  rows: number;
  vectors: number;
  sensorPostsExpected: number;
  complete: boolean;
  deliveredVectors: number;
  deliveredPosts: number;
  duplicates: number;
  insertMs: number;
  insertRowsPerS: number;
  elapsedMs: number;
  readingsPerS: number;
  peakRssMb: number;
  /** Queries the engine sent through its pool during the phase (its own count; the LISTEN session aside). */
  engineQueries: number;
  engineQueriesPerVector: number;
  cpu: CpuShare;
  /** Engine CPU, heap allocated and event-loop utilisation over the measurement, per reading. */
  engineCost: EngineCost | undefined;
  status: Record<string, unknown> | undefined;
}

/**
 * Sends warm-up readings through the engine and waits for them, so the measurement sees the engine as it
 * runs for days, its code compiled by the JIT, rather than its first seconds.
 */
export async function warmUp(
  env: Env,
  ins: Inserter,
  sensorPosts: boolean,
  rows = env.opts.warmupRows,
): Promise<void> {
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

export function phaseEngine(env: Env, sensorPosts: boolean): Promise<EngineResult> {
  const label = sensorPosts ? 'posts-on' : 'posts-off';
  const spec = { label, engine: { env: { SENSOR_POSTS: String(sensorPosts) } } };
  return withPhase(env, spec, async (ctx) => {
    const timestamps = Math.ceil(env.opts.rows / env.sensorsPerTick);
    const groups = fullGroups(env, timestamps);
    const vectors = groups.length;
    const rowsExpected = timestamps * env.sensorsPerTick;
    const postsExpected = sensorPosts ? rowsExpected : 0;
    const ins = await ctx.inserter(env.opts.inserters);
    await warmUp(env, ins, sensorPosts);
    const queries0 = Number((await engineProbe(ctx.engine))?.status.db_queries ?? Number.NaN);
    const meter = await ctx.meter();
    const { rows, firstAt } = await ins.burst(groups);
    const insertEnd = now();
    const c = await arrivals(env, vectors, postsExpected, timeoutFor(rowsExpected, sensorPosts ? 200 : 500));
    const { cpu, cost } = await meter.stop(rows);
    const probe1 = await engineProbe(ctx.engine);
    const engineQueries = Number(probe1?.status.db_queries ?? Number.NaN) - queries0;
    await ins.close();
    const last = c ?? env.bench.completion(vectors, postsExpected);
    const elapsed = last.at - firstAt;
    return {
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
      engineQueries,
      engineQueriesPerVector: round(engineQueries / vectors, 2),
      cpu,
      engineCost: cost,
      status: probe1?.status,
    };
  });
}
