/** Catch-up: rows inserted while no engine runs, then the engine starts and works through them. */
import type { EngineCost } from '../cost.js';
import type { CpuShare } from '../cpu.js';
import {
  arrivals,
  type Database,
  type Env,
  fullGroups,
  rssStats,
  timeoutFor,
  withPhase,
} from '../harness.js';
import { Inserter } from '../inserter.js';
import { now, round } from '../stats.js';
import { memoryVariant } from './memory.js';

export interface CatchUpResult {
  timestamps: number;
  gaps: boolean;
  rows: number;
  vectors: number;
  startMs: number;
  vectorsMs: number;
  postsMs: number;
  complete: boolean;
  deliveredVectors: number;
  deliveredPosts: number;
  rowsPerS: number;
  rowsPerSWithPosts: number;
  duplicates: number;
  peakRssMb: number;
  cpu: CpuShare;
  /** Engine CPU, heap allocated and event-loop utilisation over the measurement, per reading. */
  engineCost: EngineCost | undefined;
}

export function phaseCatchUp(env: Env): Promise<CatchUpResult> {
  // The outage: rows land in the tables while no engine runs (only the amount matters, not the pace).
  // --catchup-gaps: the memory run's mix (25% of the groups incomplete) instead of full vectors only.
  const gaps = env.opts.catchUpGaps;
  const tick = (j: number) => Math.floor(j / env.pumps.length);
  const groups = fullGroups(env, env.opts.catchUpTimestamps).map((g, j) =>
    gaps ? { ...g, fields: memoryVariant(g.pump, tick(j)).fields } : g,
  );
  const vectors = gaps
    ? groups.filter((g, j) => memoryVariant(g.pump, tick(j)).kind !== 'below').length
    : groups.length;
  let rows = 0;
  const prepare = async (db: Database) => {
    const ins = await Inserter.connect(db.config, env.opts.inserters);
    try {
      rows = (await ins.burst(groups)).rows;
    } finally {
      await ins.close();
    }
  };
  const spec = { label: 'catchup', prepare, engine: { env: {}, start: false } };
  return withPhase(env, spec, async (ctx) => {
    const meter = await ctx.meter();
    const t0 = now();
    const startMs = await ctx.startEngine();
    const c = await arrivals(env, vectors, 0, timeoutFor(rows, 500));
    // With --engine-env SENSOR_POSTS=false no per-sensor post comes: the vectors are the whole job.
    const posts = !/^(0|false|no|off)$/i.test(env.opts.engineEnv.SENSOR_POSTS ?? 'true');
    const p = posts ? await arrivals(env, 0, rows, timeoutFor(rows, 500)) : c;
    const { cpu, cost } = await meter.stop(rows);
    const vectorsMs = c ? c.at - t0 : Number.NaN;
    const postsMs = p ? p.at - t0 : Number.NaN;
    return {
      timestamps: env.opts.catchUpTimestamps,
      gaps,
      rows,
      vectors,
      startMs: round(startMs, 0),
      vectorsMs: round(vectorsMs, 0),
      postsMs: round(postsMs, 0),
      complete: c !== undefined && p !== undefined,
      deliveredVectors: env.bench.unified.size,
      deliveredPosts: env.bench.sensorKeys.size,
      rowsPerS: round((rows / vectorsMs) * 1000, 0),
      rowsPerSWithPosts: round((rows / Math.max(vectorsMs, postsMs)) * 1000, 0),
      duplicates: env.bench.duplicates,
      peakRssMb: rssStats(ctx.engine.samples).peakMb,
      cpu,
      engineCost: cost,
    };
  });
}
