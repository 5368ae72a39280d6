/**
 * The cost of one per-sensor POST in the engine's delivery stack, without PostgreSQL: CPU time per request
 * of this process for the same requests sent (a) through SensorPoster as the engine does, (b) through
 * BackendClient.post alone (no retry or breaker policy), also with 4 and 16 requests pipelined on a connection
 * (BACKEND_PIPELINING), and (c) with a bare undici Pool. The server runs in
 * a child process, so its CPU is not counted here.
 *
 *   npx tsx bench/micro-delivery.ts [requests]
 */
import { fork } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';
import type { PumpConfig } from '../src/config/env.js';
import { loadConfig } from '../src/config/env.js';
import { BackendClient, createAgent } from '../src/delivery/backend-client.js';
import { createBreaker } from '../src/delivery/policy.js';
import { READING_POSTS } from '../src/delivery/post-pipeline.js';
import { RowPoster } from '../src/delivery/row-poster.js';
import type { Reading } from '../src/model/reading.js';
import { round } from './stats.js';

const CONCURRENCY = 16;

function serve(): void {
  const server = createServer({ keepAlive: true, keepAliveTimeout: 60_000 }, (req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = JSON.parse(Buffer.concat(chunks).toString('utf8') || '{}') as Record<string, unknown>;
      const out = JSON.stringify({
        id_registro: body.id_sensor,
        valor: body.valor,
        prediccion: 1,
        descripcion: 'Normal',
        contador_anomalias: 0,
      });
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(out) });
      res.end(out);
    });
  });
  server.listen(0, '127.0.0.1', () => process.send?.((server.address() as AddressInfo).port));
  process.on('disconnect', () => process.exit(0));
}

interface Result {
  variant: string;
  requests: number;
  ms: number;
  perSecond: number;
  /** The whole process: every thread. */
  cpuUsPerRequest: number;
  /** The main thread alone (the engine's event loop, where a worker takes the posts off). */
  mainUsPerRequest: number;
}

/**
 * The main thread's CPU time so far, in µs, from /proc (Linux): utime + stime of the thread whose id is the
 * pid, in clock ticks of 10 ms.
 */
function mainThreadUs(): number {
  try {
    const stat = readFileSync(`/proc/self/task/${process.pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return ((Number(f[11]) + Number(f[12])) * 1e6) / 100;
  } catch {
    return Number.NaN;
  }
}

async function measure(variant: string, n: number, run: () => Promise<void>): Promise<Result> {
  const c0 = process.cpuUsage();
  const m0 = mainThreadUs();
  const t0 = performance.now();
  await run();
  const ms = performance.now() - t0;
  const c = process.cpuUsage(c0);
  const main = mainThreadUs() - m0;
  return {
    variant,
    requests: n,
    ms: round(ms, 0),
    perSecond: round((n / ms) * 1000, 0),
    cpuUsPerRequest: round((c.user + c.system) / n, 1),
    mainUsPerRequest: round(main / n, 1),
  };
}

/** The engine's poster for one pump, with its production settings but CONCURRENCY posts in flight. */
function posterOf(
  pump: string,
  client: BackendClient,
  breaker: ReturnType<typeof createBreaker>,
  onDone: (r: Reading) => void,
): RowPoster<Reading> {
  return new RowPoster<Reading>({
    clients: new Map([[pump, { client, breaker }]]),
    shape: READING_POSTS,
    concurrency: CONCURRENCY,
    maxAttempts: 8,
    retryBaseMs: 200,
    retryMaxMs: 30_000,
    onDone,
  });
}

/** Runs `n` calls of `one` with `CONCURRENCY` in flight. */
async function pool(n: number, one: (i: number) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async () => {
    for (let guard = 0; guard < n && next < n; guard++) {
      const i = next;
      next += 1;
      await one(i);
    }
  };
  await Promise.all(Array.from({ length: CONCURRENCY }, worker));
}

async function main(): Promise<void> {
  const n = Number(process.argv[2] ?? 30_000);
  const child = fork(fileURLToPath(import.meta.url), ['--serve'], {
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  const port = await new Promise<number>((resolve) => child.once('message', (m) => resolve(Number(m))));
  const origin = `http://127.0.0.1:${port}`;
  const pump = loadConfig({ BASE_URL: origin, BASE_URL_B: origin }).pumps[0] as PumpConfig;
  const sensor = pump.sensors[0] as PumpConfig['sensors'][number];
  const agent = createAgent();
  const client = new BackendClient({ baseUrl: pump.baseUrl, apiKey: 'k', timeoutMs: 10_000, agent });
  const breaker = createBreaker({ threshold: 5, halfOpenAfterMs: 1_000, maxHalfOpenAfterMs: 30_000 });
  const reading = (i: number): Reading => ({
    pump: pump.id,
    sensor,
    id: i,
    valor: 100 + (i % 97) / 100,
    tiempo: `t${i}`,
    receivedAt: 0,
    origin: 'notify',
  });
  const results: Result[] = [];
  for (let round = 0; round < 2; round++) {
    results.push(
      await measure('SensorPoster (engine path)', n, async () => {
        let done = 0;
        let finish: () => void = () => {};
        const all = new Promise<void>((resolve) => {
          finish = resolve;
        });
        const poster = posterOf(pump.id, client, breaker, () => {
          done += 1;
          if (done === n) finish();
        });
        for (let i = 0; i < n; i++) poster.enqueue(reading(i));
        await all;
      }),
    );
    results.push(await measure('SensorPoster in a worker', n, () => viaWorker(n, origin)));
    results.push(
      await measure('BackendClient.post only', n, () =>
        pool(n, async (i) => {
          await client.post(sensor.endpoint, `{"id_sensor":${i},"valor":1}`, `k${i}`);
        }),
      ),
    );
    // The same with BACKEND_PIPELINING: up to that many requests on a connection before their answers.
    for (const pipelining of [4, 16]) {
      const piped = createAgent(32, pipelining);
      const pc = new BackendClient({ baseUrl: pump.baseUrl, apiKey: 'k', timeoutMs: 10_000, agent: piped });
      results.push(
        await measure(`BackendClient.post, pipelining ${pipelining}`, n, () =>
          pool(n, async (i) => {
            await pc.post(sensor.endpoint, `{"id_sensor":${i},"valor":1}`, `k${i}`);
          }),
        ),
      );
      await piped.close();
    }
    const { Pool } = await import('undici');
    const raw = new Pool(origin, { connections: CONCURRENCY });
    results.push(
      await measure('bare undici Pool', n, () =>
        pool(n, async (i) => {
          const res = await raw.request({
            method: 'POST',
            path: `${pump.pathPrefix}${sensor.endpoint}`,
            headers: { 'content-type': 'application/json', 'x-api-key': 'k', 'idempotency-key': `k${i}` },
            body: JSON.stringify({ id_sensor: i, valor: 1 }),
          });
          await res.body.text();
        }),
      ),
    );
    await raw.close();
  }
  await agent.close();
  child.disconnect();
  for (const r of results) {
    process.stdout.write(
      `${r.variant.padEnd(36)} ${String(r.perSecond).padStart(7)} req/s  ${String(r.cpuUsPerRequest).padStart(6)} CPU-us/request  ${String(r.mainUsPerRequest).padStart(6)} main-thread-us/request\n`,
    );
  }
}

/** Readings handed to the worker per message, and results sent back per message at most. */
const HANDOFF = 64;

/**
 * The worker of the "SensorPoster in a worker" variant: the same SensorPoster and client as the engine path,
 * fed with (id, valor) pairs in batches; it answers with the ids posted, gathered over one event-loop turn.
 */
function posterWorker(origin: string): void {
  const port = parentPort as NonNullable<typeof parentPort>;
  const pump = loadConfig({ BASE_URL: origin, BASE_URL_B: origin }).pumps[0] as PumpConfig;
  const sensor = pump.sensors[0] as PumpConfig['sensors'][number];
  const client = new BackendClient({
    baseUrl: pump.baseUrl,
    apiKey: 'k',
    timeoutMs: 10_000,
    agent: createAgent(),
  });
  const breaker = createBreaker({ threshold: 5, halfOpenAfterMs: 1_000, maxHalfOpenAfterMs: 30_000 });
  let out: number[] = [];
  const flush = () => {
    port.postMessage(Float64Array.from(out));
    out = [];
  };
  const poster = posterOf(pump.id, client, breaker, (r) => {
    if (out.length === 0) setImmediate(flush);
    out.push(r.id);
  });
  port.on('message', (batch: Float64Array) => {
    for (let i = 0; i < batch.length; i += 2) {
      poster.enqueue({
        pump: pump.id,
        sensor,
        id: batch[i] as number,
        valor: batch[i + 1] as number,
        tiempo: '',
        receivedAt: 0,
        origin: 'notify',
      });
    }
  });
}

/** `n` posts through a SensorPoster on a worker thread, handed over HANDOFF at a time, one batch per turn. */
async function viaWorker(n: number, origin: string): Promise<void> {
  // This file runs under tsx (TypeScript): the worker registers tsx's loader, then loads it.
  const boot = `import('tsx/esm/api').then((t) => { t.register(); return import(${JSON.stringify(import.meta.url)}); })`;
  const worker = new Worker(boot, { eval: true, workerData: { role: 'poster', origin } });
  await new Promise((resolve) => worker.once('online', resolve));
  let done = 0;
  const finished = new Promise<void>((resolve) =>
    worker.on('message', (ids: Float64Array) => {
      done += ids.length;
      if (done >= n) resolve();
    }),
  );
  for (let i = 0; i < n; i += HANDOFF) {
    const batch = new Float64Array(Math.min(HANDOFF, n - i) * 2);
    for (let j = 0; j < batch.length / 2; j++) {
      batch[2 * j] = i + j;
      batch[2 * j + 1] = 100 + ((i + j) % 97) / 100;
    }
    worker.postMessage(batch);
    await new Promise((resolve) => setImmediate(resolve));
  }
  await finished;
  await worker.terminate();
}

if (!isMainThread && (workerData as { role?: string } | undefined)?.role === 'poster') {
  posterWorker((workerData as { origin: string }).origin);
} else if (process.argv.includes('--serve')) serve();
else
  main().catch((err: Error) => {
    process.stderr.write(`${err.stack ?? err.message}\n`);
    process.exit(1);
  });
