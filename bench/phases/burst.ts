/**
 * The burst: `--burst-rows` readings (70,000 full) inserted as fast as the inserting connections go, with
 * per-sensor posts on and off, into an engine warmed up as in the throughput phases (at most as many
 * readings as the burst). It reports the
 * readings per second over the burst (first insert to last delivery), the lag from the last commit to the
 * last vector and to the last per-sensor post, the engine's CPU per reading, and what PostgreSQL's sessions
 * waited on meanwhile.
 */
import type { EngineCost } from '../cost.js';
import type { CpuShare } from '../cpu.js';
import { arrivals, type Env, fullGroups, rssStats, timeoutFor, withPhase } from '../harness.js';
import { now, round } from '../stats.js';
import { sampleWaits, type WaitProfile } from '../waits.js';
import { warmUp } from './engine.js';

export interface BurstResult {
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
  /** The last commit → the last vector's arrival, and → the last per-sensor post's (posts on). */
  lastVectorLagMs: number;
  lastPostLagMs: number;
  /** The last commit → the last delivery of either kind: the "last delivery after the last commit". */
  lastDeliveryLagMs: number;
  peakRssMb: number;
  cpu: CpuShare;
  engineCost: EngineCost | undefined;
  waits: WaitProfile;
}

export function phaseBurst(env: Env, sensorPosts: boolean): Promise<BurstResult> {
  const label = sensorPosts ? 'burst-posts-on' : 'burst-posts-off';
  const spec = { label, engine: { env: { SENSOR_POSTS: String(sensorPosts) } } };
  return withPhase(env, spec, async (ctx) => {
    const timestamps = Math.ceil(env.opts.burstRows / env.sensorsPerTick);
    const groups = fullGroups(env, timestamps);
    const vectors = groups.length;
    const rowsExpected = timestamps * env.sensorsPerTick;
    const postsExpected = sensorPosts ? rowsExpected : 0;
    const ins = await ctx.inserter(env.opts.inserters);
    // As the throughput phases, but no longer than the burst itself (the quick bench stays short).
    await warmUp(env, ins, sensorPosts, Math.min(env.opts.warmupRows, env.opts.burstRows));
    const waits = await sampleWaits(ctx.db.config);
    ctx.defer(() => waits.stop());
    const meter = await ctx.meter();
    let lastCommit = 0;
    const { rows, firstAt } = await ins.burst(groups, (c) => {
      lastCommit = Math.max(lastCommit, c.at);
    });
    const insertEnd = now();
    const c = await arrivals(env, vectors, postsExpected, timeoutFor(rowsExpected, sensorPosts ? 200 : 500));
    const { cpu, cost } = await meter.stop(rows);
    const waited = await waits.stop();
    await ins.close();
    const last = c ?? env.bench.completion(vectors, postsExpected);
    const lag = (at: number) => (c && at > 0 ? round(at - lastCommit, 0) : Number.NaN);
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
      elapsedMs: round(last.at - firstAt, 0),
      readingsPerS: c ? round((rows / (last.at - firstAt)) * 1000, 0) : Number.NaN,
      lastVectorLagMs: lag(env.bench.lastUnifiedAt),
      lastPostLagMs: sensorPosts ? lag(env.bench.lastSensorAt) : Number.NaN,
      lastDeliveryLagMs: lag(last.at),
      peakRssMb: rssStats(ctx.engine.samples).peakMb,
      cpu,
      engineCost: cost,
      waits: waited,
    };
  });
}
