/** The delivery side's limit: a load generator in its own process against the bench server. */
import type { CpuShare } from '../cpu.js';
import { type Env, timeoutFor, withPhase } from '../harness.js';
import type { HttpLoadMessage } from '../http-load.js';
import { round } from '../stats.js';

export interface HttpResult {
  requests: number;
  connections: number;
  errors: number;
  ms: number;
  requestsPerS: number;
  cpu: CpuShare;
}

export function phaseHttp(env: Env): Promise<HttpResult> {
  return withPhase(env, { label: 'http', database: false }, async (ctx) => {
    const paths = env.pumps.flatMap((p) => p.sensors.map((s) => `${p.pathPrefix}${s.endpoint}`));
    const child = ctx.spawn<HttpLoadMessage, never>('http-load.js', {
      BENCH_ORIGIN: env.bench.url,
      BENCH_PATHS: paths.join(','),
      BENCH_CONNECTIONS: String(env.opts.httpConnections),
      BENCH_REQUESTS: String(env.opts.httpRequests),
      BENCH_WARMUP: String(Math.min(5_000, Math.ceil(env.opts.httpRequests / 10))),
    });
    const meter = await ctx.meter(child.proc.pid);
    const d = await child.next('done', timeoutFor(env.opts.httpRequests, 1_000));
    // Warm-up included; the load generator's CPU is helperCores.
    const { cpu } = await meter.stop();
    return {
      requests: d.requests,
      connections: d.connections,
      errors: d.errors,
      ms: round(d.ms, 0),
      requestsPerS: round(d.rps, 0),
      cpu,
    };
  });
}
