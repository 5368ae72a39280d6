/**
 * The burst: `--burst-rows` readings (70,000 full) inserted as fast as the inserting connections go, with
 * per-sensor posts on and off, into an engine warmed up as in the throughput phases (at most as many
 * readings as the burst). It reports the readings per second over the burst (first insert to last
 * delivery), the lag from the last commit to the last vector and to the last per-sensor post, the engine's
 * CPU per reading, and what PostgreSQL's sessions waited on meanwhile.
 */
import { type Env, withPhase } from '../harness.js';
import { round } from '../stats.js';
import { sampleWaits, type WaitProfile, type WaitSampler } from '../waits.js';
import { type Throughput, throughput } from './engine.js';

export interface BurstResult extends Throughput {
  /** The last commit → the last vector's arrival, and → the last per-sensor post's (posts on). */
  lastVectorLagMs: number;
  lastPostLagMs: number;
  /** The last commit → the last delivery of either kind: the "last delivery after the last commit". */
  lastDeliveryLagMs: number;
  waits: WaitProfile | undefined;
}

export function phaseBurst(env: Env, sensorPosts: boolean): Promise<BurstResult> {
  const label = sensorPosts ? 'burst-posts-on' : 'burst-posts-off';
  const spec = { label, engine: { env: { SENSOR_POSTS: String(sensorPosts) } } };
  return withPhase(env, spec, async (ctx) => {
    let sampler: WaitSampler | undefined;
    let waits: WaitProfile | undefined;
    const { result, lastCommit } = await throughput(
      ctx,
      sensorPosts,
      // The quick bench stays short: no longer a warm-up than the burst itself.
      { rows: env.opts.burstRows, warmupRows: Math.min(env.opts.warmupRows, env.opts.burstRows) },
      {
        before: async () => {
          const s = await sampleWaits(ctx.db.config);
          sampler = s;
          ctx.defer(() => s.stop());
        },
        after: async () => {
          waits = await sampler?.stop();
        },
      },
    );
    const lag = (at: number) => (result.complete && at > 0 ? round(at - lastCommit, 0) : Number.NaN);
    return {
      ...result,
      lastVectorLagMs: lag(env.bench.lastUnifiedAt),
      lastPostLagMs: sensorPosts ? lag(env.bench.lastSensorAt) : Number.NaN,
      lastDeliveryLagMs: lag(Math.max(env.bench.lastUnifiedAt, sensorPosts ? env.bench.lastSensorAt : 0)),
      waits,
    };
  });
}
