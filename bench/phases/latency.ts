/** Commit-to-delivery latency at a steady 1,000 readings/s, split at the outbox row's created_at. */
import { withClient } from '../../src/store/db.js';
import { ENGINE_SCHEMA } from '../../src/store/schema.js';
import type { EngineCost } from '../cost.js';
import type { CpuShare } from '../cpu.js';
import { type Env, rssStats, withPhase } from '../harness.js';
import { tiempoOf } from '../inserter.js';
import { now, quantile, round, sleepUntil, waitUntil } from '../stats.js';

export interface LatencyResult {
  sensorPosts: boolean;
  rate: number;
  seconds: number;
  warmupSeconds: number;
  timestamps: number;
  samples: number;
  missing: number;
  behindMs: number;
  p50Ms: number;
  p90Ms: number;
  p99Ms: number;
  maxMs: number;
  minMs: number;
  /**
   * The same latency cut in two at the outbox row's created_at (the start of the engine's INSERT into the
   * outbox, PostgreSQL's clock, same machine): commit -> outbox INSERT, and outbox INSERT -> POST received.
   */
  segments: {
    toOutbox: { p50Ms: number; p99Ms: number; maxMs: number };
    outboxToPost: { p50Ms: number; p99Ms: number; maxMs: number };
  };
  peakRssMb: number;
  cpu: CpuShare;
  /** Engine CPU, heap allocated and event-loop utilisation over the measurement, per reading. */
  engineCost: EngineCost | undefined;
}

function spread(xs: number[]) {
  return {
    p50Ms: round(quantile(xs, 0.5), 2),
    p99Ms: round(quantile(xs, 0.99), 2),
    maxMs: round(xs.length ? Math.max(...xs) : Number.NaN, 2),
  };
}

export function phaseLatency(env: Env, sensorPosts: boolean): Promise<LatencyResult> {
  const label = sensorPosts ? 'latency-posts-on' : 'latency-posts-off';
  const spec = { label, engine: { env: { SENSOR_POSTS: String(sensorPosts) } } };
  return withPhase(env, spec, async (ctx) => {
    const { latencyRate, latencySeconds, latencyWarmupSeconds } = env.opts;
    // One tick = one timestamp of every pump (35 readings); 1,000 readings/s is one tick per 35 ms.
    const intervalMs = (1000 * env.sensorsPerTick) / latencyRate;
    const warmupTicks = Math.round((latencyWarmupSeconds * 1000) / intervalMs);
    const ticks = warmupTicks + Math.round((latencySeconds * 1000) / intervalMs);
    env.baseMs += 86_400_000;
    const commits = new Map<string, number>();
    const ins = await ctx.inserter(env.pumps.length);
    const meter = await ctx.meter();
    const start = now() + 20;
    let behind = 0;
    let rows = 0;
    for (let i = 0; i < ticks; i++) {
      const due = start + i * intervalMs;
      await sleepUntil(due);
      behind = Math.max(behind, now() - due);
      const tiempo = tiempoOf(env.baseMs, i, Math.round(intervalMs));
      const committed = await Promise.all(env.pumps.map((pump, k) => ins.insert(k, { pump, tiempo })));
      for (const c of committed) rows += c.rows;
      if (i < warmupTicks) continue;
      for (const c of committed) commits.set(`${c.pump}\n${c.tiempo}`, c.at);
    }
    const vectors = ticks * env.pumps.length;
    await waitUntil(() => (env.bench.completion(vectors, 0).done ? true : undefined), 30_000);
    // The cost covers the warm-up's readings too: the window opens before it.
    const { cpu, cost } = await meter.stop(rows);
    await ins.close();
    // A vector's key derives from its rows: the outbox tells which key each pump timestamp got.
    const outbox = await withClient(ctx.db.config, 'bench-setup', async (c) => {
      const { rows } = await c.query<{ k: string; t: string; ms: number }>(
        `SELECT idempotency_key AS k, pump || E'\\n' || tiempo_sensor AS t,
                extract(epoch FROM created_at)::float8 * 1000 AS ms FROM ${ENGINE_SCHEMA}.outbox`,
      );
      return new Map(rows.map((r) => [r.t, { key: r.k, ms: Number(r.ms) }]));
    });
    const latencies: number[] = [];
    const toOutbox: number[] = [];
    const outboxToPost: number[] = [];
    let missing = 0;
    for (const [t, at] of commits) {
      const row = outbox.get(t);
      const got = row === undefined ? undefined : env.bench.unified.get(row.key);
      if (row === undefined || got === undefined) {
        missing += 1;
        continue;
      }
      latencies.push(got - at);
      toOutbox.push(row.ms - at);
      outboxToPost.push(got - row.ms);
    }
    return {
      sensorPosts,
      rate: latencyRate,
      seconds: latencySeconds,
      warmupSeconds: latencyWarmupSeconds,
      timestamps: commits.size,
      samples: latencies.length,
      missing,
      behindMs: round(behind, 1),
      p50Ms: round(quantile(latencies, 0.5), 2),
      p90Ms: round(quantile(latencies, 0.9), 2),
      p99Ms: round(quantile(latencies, 0.99), 2),
      maxMs: round(latencies.length ? Math.max(...latencies) : Number.NaN, 2),
      minMs: round(latencies.length ? Math.min(...latencies) : Number.NaN, 2),
      segments: { toOutbox: spread(toOutbox), outboxToPost: spread(outboxToPost) },
      peakRssMb: rssStats(ctx.engine.samples).peakMb,
      cpu,
      engineCost: cost,
    };
  });
}
