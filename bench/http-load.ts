/**
 * The physical limit of the delivery side: how many requests per second the benchmark server answers
 * over keep-alive connections. Runs in its own process (like the engine) with an undici Pool, keeping
 * one request in flight per connection, for a bounded number of requests.
 *
 * Environment: BENCH_ORIGIN, BENCH_PATHS (comma-separated), BENCH_CONNECTIONS, BENCH_REQUESTS, BENCH_WARMUP.
 * Child → parent: {type:'done', requests, errors, ms, rps} | {type:'error', message}
 */
import { Pool } from 'undici';
import { now } from './stats.js';

export type HttpLoadMessage =
  | { type: 'done'; requests: number; errors: number; ms: number; rps: number; connections: number }
  | { type: 'error'; message: string };

function send(m: HttpLoadMessage): void {
  if (process.connected) process.send?.(m);
}

async function main(): Promise<void> {
  const origin = process.env.BENCH_ORIGIN ?? '';
  const paths = (process.env.BENCH_PATHS ?? '/').split(',');
  const connections = Number(process.env.BENCH_CONNECTIONS ?? 32);
  const requests = Number(process.env.BENCH_REQUESTS ?? 50_000);
  const warmup = Number(process.env.BENCH_WARMUP ?? 2_000);
  const pool = new Pool(origin, { connections, pipelining: 1, keepAliveTimeout: 60_000 });
  let errors = 0;
  let serial = 0;
  const one = async () => {
    serial += 1;
    const id = serial;
    const path = paths[id % paths.length] as string;
    try {
      const res = await pool.request({
        method: 'POST',
        path,
        headers: {
          'content-type': 'application/json',
          'x-api-key': 'bench',
          'idempotency-key': `load-${id}`,
        },
        body: JSON.stringify({ id_sensor: id, valor: 100 + (id % 97) / 100 }),
      });
      await res.body.text();
      if (res.statusCode !== 200) errors += 1;
    } catch {
      errors += 1;
    }
  };
  const run = async (n: number) => {
    let issued = 0;
    const worker = async () => {
      for (let guard = 0; guard < n && issued < n; guard++) {
        issued += 1;
        await one();
      }
    };
    await Promise.all(Array.from({ length: connections }, worker));
  };
  await run(warmup);
  errors = 0;
  const t0 = now();
  await run(requests);
  const ms = now() - t0;
  await pool.close();
  send({ type: 'done', requests, errors, ms, rps: (requests / ms) * 1000, connections });
  setTimeout(() => process.exit(0), 20);
}

setTimeout(() => process.exit(3), 10 * 60_000).unref();
main().catch((err: Error) => {
  send({ type: 'error', message: err.message });
  setTimeout(() => process.exit(1), 50);
});
