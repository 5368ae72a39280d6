/**
 * The cost of one per-sensor POST in the engine's delivery stack, without PostgreSQL: CPU time per request
 * of this process for the same requests sent (a) through SensorPoster as the engine does, (b) through
 * BackendClient.post alone (no retry or breaker policy), and (c) with a bare undici Pool. The server runs in
 * a child process, so its CPU is not counted here.
 *
 *   npx tsx bench/micro-delivery.ts [requests]
 */
import { fork } from 'node:child_process';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';
import type { PumpConfig } from '../src/config/env.js';
import { loadConfig } from '../src/config/env.js';
import { BackendClient, createAgent } from '../src/delivery/backend-client.js';
import { createBreaker } from '../src/delivery/policy.js';
import { SensorPoster } from '../src/delivery/sensor-poster.js';
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
  cpuUsPerRequest: number;
}

async function measure(variant: string, n: number, run: () => Promise<void>): Promise<Result> {
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  await run();
  const ms = performance.now() - t0;
  const c = process.cpuUsage(c0);
  return {
    variant,
    requests: n,
    ms: round(ms, 0),
    perSecond: round((n / ms) * 1000, 0),
    cpuUsPerRequest: round((c.user + c.system) / n, 1),
  };
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
        const poster = new SensorPoster({
          clients: new Map([[pump.id, { client, breaker }]]),
          concurrency: CONCURRENCY,
          maxAttempts: 8,
          retryBaseMs: 200,
          retryMaxMs: 30_000,
          onDone: () => {
            done += 1;
            if (done === n) finish();
          },
        });
        for (let i = 0; i < n; i++) poster.enqueue(reading(i));
        await all;
      }),
    );
    results.push(
      await measure('BackendClient.post only', n, () =>
        pool(n, async (i) => {
          await client.post(sensor.endpoint, { id_sensor: i, valor: 1 }, { 'idempotency-key': `k${i}` });
        }),
      ),
    );
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
      `${r.variant.padEnd(28)} ${String(r.perSecond).padStart(7)} req/s  ${String(r.cpuUsPerRequest).padStart(6)} CPU-us/request\n`,
    );
  }
}

if (process.argv.includes('--serve')) serve();
else
  main().catch((err: Error) => {
    process.stderr.write(`${err.stack ?? err.message}\n`);
    process.exit(1);
  });
