import { createServer, request as httpRequest, type IncomingHttpHeaders } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Writable } from 'node:stream';
import type { FastifyInstance, LightMyRequestResponse } from 'fastify';
import pg from 'pg';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Config, type DatabaseConfig, loadConfig } from '../../src/config/env.js';
import { loadPumpDefinitions, type PumpDefinition } from '../../src/config/pumps.js';
import { Monitor } from '../../src/engine/monitor.js';
import { clientConfig, createPool, quoteIdent } from '../../src/store/db.js';
import { migrate } from '../../src/store/schema.js';
import { buildReferenceBackend, IdempotencyCache } from '../../src/tools/backend/server.js';
import { nominalFor } from '../../src/tools/nominal.js';
import { createTestDatabase } from '../helpers/db.js';

const API_KEY = 'test-key-0123456789';
const pumps = loadPumpDefinitions();
const pumpA = pumpById('A');
const pumpB = pumpById('B');

function pumpById(id: string): PumpDefinition {
  const pump = pumps.find((p) => p.id === id);
  if (!pump) throw new Error(`pump ${id} definition not found`);
  return pump;
}

function sensorOf(pump: PumpDefinition, field: string) {
  const sensor = pump.sensors.find((s) => s.field === field);
  if (!sensor) throw new Error(`pump ${pump.id} has no field ${field}`);
  return sensor;
}

/** A vector with every field of the pump at its nominal mean, plus `drift` nominal standard deviations. */
function nominalVector(pump: PumpDefinition, drift: Record<string, number> = {}): Record<string, number> {
  return Object.fromEntries(
    pump.sensors.map(({ field }) => {
      const n = nominalFor(field);
      return [field, n.mean + (drift[field] ?? 0) * n.std];
    }),
  );
}

let database: Awaited<ReturnType<typeof createTestDatabase>> | undefined;
let pool: pg.Pool;
let app: FastifyInstance;

beforeAll(async () => {
  database = await createTestDatabase('reference_backend');
  pool = createPool(database.config, 'reference-backend-test');
  const client = await pool.connect();
  try {
    await migrate(client, pumps);
  } finally {
    client.release();
  }
  app = await buildReferenceBackend({ pool, pumps, apiKey: API_KEY, logger: false });
  await app.ready();
});

afterAll(async () => {
  await app?.close();
  await pool?.end();
  await database?.drop();
});

function post(url: string, payload: unknown, headers: Record<string, string> = {}) {
  return app.inject({
    method: 'POST',
    url,
    headers: { 'content-type': 'application/json', 'x-api-key': API_KEY, ...headers },
    payload: typeof payload === 'string' ? payload : JSON.stringify(payload),
  });
}

async function insertReading(
  table: string,
  value: number,
  extra: { clasificacion?: number } = {},
): Promise<number> {
  const { rows } = await pool.query<{ id: number }>(
    `INSERT INTO ${quoteIdent(table)} (tiempo_sensor, valor_sensor, clasificacion) VALUES ($1, $2, $3) RETURNING id`,
    [new Date().toISOString(), value, extra.clasificacion ?? null],
  );
  const id = rows[0]?.id;
  if (id === undefined) throw new Error('insert returned no id');
  return id;
}

async function readRow(table: string, id: number) {
  const { rows } = await pool.query<{ clasificacion: number | null; contador_anomalias: number | null }>(
    `SELECT clasificacion, contador_anomalias FROM ${quoteIdent(table)} WHERE id = $1`,
    [id],
  );
  return rows[0];
}

function detailText(response: LightMyRequestResponse): string {
  return JSON.stringify(response.json().detail);
}

describe('reference backend: health and key check', () => {
  it('answers GET /health', async () => {
    const response = await app.inject({ method: 'GET', url: '/health' });
    expect(response.statusCode).toBe(200);
    expect(response.json()).toEqual({ status: 'ok' });
  });

  it('answers 401 on a wrong or missing X-API-Key, before looking at the body', async () => {
    const wrong = await post('/sensores/predecir-bomba', nominalVector(pumpA), { 'x-api-key': 'wrong' });
    expect(wrong.statusCode).toBe(401);
    expect(wrong.json()).toHaveProperty('detail');
    expect(wrong.body).not.toContain(API_KEY);

    const missing = await app.inject({
      method: 'POST',
      url: '/sensores_b/prediccion_corriente',
      headers: { 'content-type': 'application/json' },
      payload: 'not json',
    });
    expect(missing.statusCode).toBe(401);
  });
});

describe('reference backend: logs', () => {
  it('never writes the API key to its log', async () => {
    let log = '';
    const sink = new Writable({
      write(chunk, _encoding, done) {
        log += String(chunk);
        done();
      },
    });
    const logged = await buildReferenceBackend({
      pool,
      pumps,
      apiKey: API_KEY,
      logger: pino({ level: 'trace' }, sink),
    });
    try {
      const id = await insertReading(sensorOf(pumpA, 'voltaje_barra').table, 6600);
      for (const key of [API_KEY, `${API_KEY}-wrong`]) {
        await logged.inject({
          method: 'POST',
          url: '/sensores/prediccion_voltaje-barra',
          headers: { 'x-api-key': key },
          payload: { id_sensor: id, valor: 6600 },
        });
      }
    } finally {
      await logged.close();
    }
    expect(log).toContain('incoming request');
    expect(log).not.toContain(API_KEY);
  });
});

describe('reference backend: unified prediction', () => {
  it('answers 200 with a probability in [0, 100] for both pumps', async () => {
    for (const [pump, path] of [
      [pumpA, '/sensores/predecir-bomba'],
      [pumpB, '/sensores_b/predecir-bomba-b'],
    ] as const) {
      const response = await post(path, nominalVector(pump));
      expect(response.statusCode, path).toBe(200);
      const body = response.json();
      expect(body.status).toBe('success');
      expect(body.prediccion).toBeGreaterThanOrEqual(0);
      expect(body.prediccion).toBeLessThan(5);
    }
  });

  it('answers a high probability for drifted bearing temperature and vibration', async () => {
    const drifted = nominalVector(pumpA, { temp_bomba: 6, temp_empuje: 5, vibracion_axial: 7 });
    const response = await post('/sensores/predecir-bomba', drifted);
    expect(response.statusCode).toBe(200);
    expect(response.json().prediccion).toBeGreaterThan(50);
    expect(response.json().prediccion).toBeLessThanOrEqual(100);
  });

  it('answers 422 naming the fields that are missing, null or not numbers', async () => {
    const vector: Record<string, unknown> = nominalVector(pumpA);
    delete vector.temp_bomba;
    vector.vibracion_axial = null;
    vector.corriente_motor = 'alta';
    const response = await post('/sensores/predecir-bomba', vector);
    expect(response.statusCode).toBe(422);
    const detail = detailText(response);
    for (const field of ['temp_bomba', 'vibracion_axial', 'corriente_motor']) expect(detail).toContain(field);
    expect(detail).not.toContain('temp_motor');
  });

  it('fills a missing optional field from its default', async () => {
    const vector: Record<string, unknown> = nominalVector(pumpA);
    delete vector.salida_bomba;
    const response = await post('/sensores/predecir-bomba', vector);
    expect(response.statusCode).toBe(200);
    expect(response.json().prediccion).toBeLessThan(5);
  });

  it('answers 422, never 500, for a body that is not a JSON object', async () => {
    for (const payload of ['{"broken": ', '[1, 2, 3]', 'null', '42']) {
      const response = await post('/sensores_b/predecir-bomba-b', payload);
      expect(response.statusCode, payload).toBe(422);
      expect(response.json()).toHaveProperty('detail');
    }
  });
});

describe('reference backend: per-sensor classification', () => {
  const path = '/sensores/prediccion_corriente';
  const table = sensorOf(pumpA, 'corriente_motor').table;

  it('answers 400 without an integer id_sensor, 422 without a numeric valor, 404 for an unknown row', async () => {
    expect((await post(path, { valor: 245 })).statusCode).toBe(400);
    expect((await post(path, { id_sensor: 'uno', valor: 245 })).statusCode).toBe(400);
    expect((await post(path, { id_sensor: 1.5, valor: 245 })).statusCode).toBe(400);
    expect((await post(path, '{"id_sensor": ')).statusCode).toBe(400);
    expect((await post(path, [1, 2])).statusCode).toBe(400);
    expect((await post(path, { id_sensor: 1, valor: null })).statusCode).toBe(422);
    expect((await post(path, { id_sensor: 1 })).statusCode).toBe(422);
    expect((await post(path, { id_sensor: 1, valor: 'x' })).statusCode).toBe(422);
    expect((await post(path, { id_sensor: 999_999, valor: 245 })).statusCode).toBe(404);
    expect((await post(path, { id_sensor: 2 ** 40, valor: 245 })).statusCode).toBe(404);
  });

  it('classifies a normal reading and writes it back into the row', async () => {
    const id = await insertReading(table, 246);
    const response = await post(path, { id_sensor: id, valor: 246 });
    expect(response.statusCode).toBe(200);
    expect(response.json()).toEqual({
      id_registro: id,
      valor: 246,
      prediccion: 1,
      descripcion: 'Normal',
      contador_anomalias: 0,
    });
    expect(await readRow(table, id)).toEqual({ clasificacion: 1, contador_anomalias: 0 });
  });

  it('counts anomalies per sensor, starting from the rows already classified -1', async () => {
    const sensor = sensorOf(pumpB, 'temperatura_estator');
    const url = `/sensores_b${sensor.endpoint}`;
    const outlier = nominalFor('temperatura_estator').mean + 30 * nominalFor('temperatura_estator').std;
    await insertReading(sensor.table, outlier, { clasificacion: -1 });
    const first = await insertReading(sensor.table, outlier);
    const second = await insertReading(sensor.table, outlier);

    const a = await post(url, { id_sensor: first, valor: outlier });
    expect(a.statusCode).toBe(200);
    expect(a.json()).toMatchObject({ id_registro: first, prediccion: -1, contador_anomalias: 2 });
    expect(a.json().descripcion).toMatch(/^Anomalía: valor .+ fuera de rango \(media .+, desv\. .+\)$/);
    const b = await post(url, { id_sensor: second, valor: outlier });
    expect(b.json()).toMatchObject({ prediccion: -1, contador_anomalias: 3 });

    expect(await readRow(sensor.table, first)).toEqual({ clasificacion: -1, contador_anomalias: 2 });
    expect(await readRow(sensor.table, second)).toEqual({ clasificacion: -1, contador_anomalias: 3 });

    // A retry for a row already counted does not count it twice.
    const retry = await post(url, { id_sensor: second, valor: outlier });
    expect(retry.json()).toMatchObject({ prediccion: -1, contador_anomalias: 3 });
  });

  it('replays the first answer for a repeated Idempotency-Key without writing again', async () => {
    const sensor = sensorOf(pumpA, 'temp_motor');
    const url = `/sensores${sensor.endpoint}`;
    const id = await insertReading(sensor.table, 61);
    const headers = { 'idempotency-key': `reading-${id}` };
    const first = await post(url, { id_sensor: id, valor: 61 }, headers);
    expect(first.statusCode).toBe(200);
    await pool.query(`UPDATE ${quoteIdent(sensor.table)} SET clasificacion = NULL WHERE id = $1`, [id]);

    const again = await post(url, { id_sensor: id, valor: 61 }, headers);
    expect(again.statusCode).toBe(200);
    expect(again.json()).toEqual(first.json());
    expect(again.headers['idempotent-replayed']).toBe('true');
    expect((await readRow(sensor.table, id))?.clasificacion).toBeNull();
  });

  it('does not fire a NOTIFY when it writes the classification back', async () => {
    const sensor = sensorOf(pumpA, 'temp_bomba');
    const url = `/sensores${sensor.endpoint}`;
    if (!database) throw new Error('no test database');
    const listener = new pg.Client(clientConfig(database.config, 'reference-backend-listener'));
    await listener.connect();
    const received: pg.Notification[] = [];
    listener.on('notification', (n) => received.push(n));
    try {
      await listener.query(`LISTEN ${quoteIdent(sensor.channel)}`);
      const id = await insertReading(sensor.table, 58);
      await waitFor(() => received.length > 0, 5_000);
      received.length = 0;

      const response = await post(url, { id_sensor: id, valor: 58 });
      expect(response.statusCode).toBe(200);
      expect((await readRow(sensor.table, id))?.clasificacion).toBe(1);

      // A new reading committed after the write-back: notifications arrive in commit order, so had the
      // write-back notified, that notification would come first. The only one is the new reading's.
      const next = await insertReading(sensor.table, 58.5);
      await waitFor(() => received.length > 0, 5_000);
      expect(received).toHaveLength(1);
      expect(received[0]?.channel).toBe(sensor.channel);
      expect(JSON.parse(received[0]?.payload ?? '{}')).toMatchObject({ id_sensor: next, valor: 58.5 });
    } finally {
      await listener.end();
    }
  });
});

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

async function waitFor(condition: () => boolean, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`condition not met within ${timeoutMs} ms`);
    await sleep(20);
  }
}

describe('IdempotencyCache', () => {
  const ok = { status: 200, body: { ok: true } };

  it('runs concurrent requests with one key once', async () => {
    const cache = new IdempotencyCache(10);
    let runs = 0;
    const compute = async () => {
      runs += 1;
      await sleep(20);
      return ok;
    };
    const [a, b] = await Promise.all([cache.run('k', compute), cache.run('k', compute)]);
    expect(runs).toBe(1);
    expect([a.replayed, b.replayed].sort()).toEqual([false, true]);
    expect(b.answer).toEqual(a.answer);
  });

  it('does not remember failures, and forgets the least recently used key beyond its capacity', async () => {
    const cache = new IdempotencyCache(2);
    await cache.run('failed', async () => ({ status: 503, body: {} }));
    expect((await cache.run('failed', async () => ok)).replayed).toBe(false);
    await cache.run('b', async () => ok);
    await cache.run('failed', async () => ok);
    await cache.run('c', async () => ok);
    expect(cache.size).toBe(2);
    expect((await cache.run('b', async () => ok)).replayed).toBe(false);
    expect((await cache.run('c', async () => ok)).replayed).toBe(true);
  });
});

interface Relayed {
  path: string;
  key: string | undefined;
  status: number;
  replayed: boolean;
  body: string;
  /** Whether the answer was passed on to the engine (the first one of each key is not). */
  passedOn: boolean;
}

/**
 * A relay between the engine and the reference backend that loses the first answer to each request: it
 * forwards the request, reads the backend's answer, then drops the connection. The engine sees no answer
 * and sends the request again, under the same Idempotency-Key.
 */
async function lossyRelay(target: string) {
  const relayed: Relayed[] = [];
  const seen = new Set<string>();
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const headers: IncomingHttpHeaders = { ...req.headers, host: new URL(target).host };
      const up = httpRequest(`${target}${req.url}`, { method: req.method, headers }, (answer) => {
        const body: Buffer[] = [];
        answer.on('data', (c: Buffer) => body.push(c));
        answer.on('end', () => {
          const key = req.headers['idempotency-key'] as string | undefined;
          const id = `${req.url}\n${key}`;
          const passedOn = seen.has(id);
          seen.add(id);
          relayed.push({
            path: req.url ?? '',
            key,
            status: answer.statusCode ?? 0,
            replayed: answer.headers['idempotent-replayed'] === 'true',
            body: Buffer.concat(body).toString('utf8'),
            passedOn,
          });
          if (!passedOn) {
            req.socket.destroy();
            return;
          }
          res.writeHead(answer.statusCode ?? 502, answer.headers);
          res.end(Buffer.concat(body));
        });
      });
      up.on('error', () => res.destroy());
      up.end(Buffer.concat(chunks));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    url,
    relayed,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

describe('reference backend against the engine, over real HTTP', () => {
  it('honours Idempotency-Key: a request repeated after its answer was lost gets the first answer back, not a second computation', async () => {
    const db = await createTestDatabase('reference_engine');
    const dbPool = createPool(db.config, 'reference-engine-test');
    const closers: (() => Promise<unknown>)[] = [() => db.drop(), () => dbPool.end()];
    try {
      const client = await dbPool.connect();
      try {
        await migrate(client, pumps);
      } finally {
        client.release();
      }
      const backend = await buildReferenceBackend({ pool: dbPool, pumps, apiKey: API_KEY, logger: false });
      await backend.listen({ port: 0, host: '127.0.0.1' });
      closers.unshift(() => backend.close());
      const target = `http://127.0.0.1:${(backend.server.address() as AddressInfo).port}`;
      const relay = await lossyRelay(target);
      closers.unshift(relay.close);
      const config = loadConfig(
        {
          DATABASE_URL: db.url,
          BASE_URL: relay.url,
          BASE_URL_B: `${relay.url}/sensores_b`,
          API_KEY,
          SETTLE_MS: '300',
          RETRY_BASE_MS: '20',
          RETRY_MAX_MS: '200',
          // Every first attempt fails here; the circuit would only slow the test down.
          BREAKER_THRESHOLD: '1000',
          LOG_LEVEL: 'silent',
        },
        { requireDatabase: true, requireBackend: true },
      ) as Config & { database: DatabaseConfig };
      const monitor = new Monitor({ config, logger: pino({ level: 'silent' }) });
      await monitor.start();
      closers.unshift(() => monitor.stop(2_000));

      const tiempo = new Date().toISOString();
      const ids = new Map<string, number>();
      for (const pump of [pumpA, pumpB]) {
        const vector = nominalVector(pump);
        const inserts = pump.sensors.map(
          (s, i) => `w${i} AS (INSERT INTO ${quoteIdent(s.table)} (tiempo_sensor, valor_sensor)
                      VALUES ($1, ${Number(vector[s.field])}) RETURNING id, '${s.table}'::text AS t)`,
        );
        const { rows } = await dbPool.query<{ id: number; t: string }>(
          `WITH ${inserts.join(', ')} ${pump.sensors.map((_, i) => `SELECT id, t FROM w${i}`).join(' UNION ALL ')}`,
          [tiempo],
        );
        for (const r of rows) ids.set(r.t, r.id);
      }
      const counts = () => monitor.status().pumps as Record<string, Record<string, number>>;
      await waitFor(
        () =>
          counts().A?.vectors_sent === 1 &&
          counts().B?.vectors_sent === 1 &&
          counts().A?.sensor_posts_ok === 20 &&
          counts().B?.sensor_posts_ok === 15,
        30_000,
      );

      // 35 readings and 2 vectors, each sent twice under one key: computed once, replayed once.
      const byKey = new Map<string, Relayed[]>();
      for (const r of relay.relayed)
        byKey.set(`${r.path}\n${r.key}`, [...(byKey.get(`${r.path}\n${r.key}`) ?? []), r]);
      expect(byKey.size).toBe(37);
      for (const [key, answers] of byKey) {
        expect(key).not.toMatch(/\nundefined$/);
        expect(
          answers.map((a) => [a.status, a.replayed, a.passedOn]),
          key,
        ).toEqual([
          [200, false, false],
          [200, true, true],
        ]);
        expect(answers[1]?.body, key).toBe(answers[0]?.body);
      }
      // The backend classified each row and wrote the class back.
      for (const [table, id] of ids) {
        const { rows } = await dbPool.query(`SELECT clasificacion FROM ${quoteIdent(table)} WHERE id = $1`, [
          id,
        ]);
        expect(rows, table).toEqual([{ clasificacion: 1 }]);
      }
      expect(counts().A?.sensor_posts_failed).toBe(0);
      expect(counts().B?.sensor_posts_failed).toBe(0);
    } finally {
      for (const close of closers) await close().catch(() => {});
    }
  });
});
