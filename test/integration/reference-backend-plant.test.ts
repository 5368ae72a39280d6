import type { FastifyInstance } from 'fastify';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadDefinitions, type PumpDefinition, profileDir } from '../../src/config/pumps.js';
import { clientConfig, createPool, quoteIdent } from '../../src/store/db.js';
import { migrate } from '../../src/store/schema.js';
import { buildReferenceBackend } from '../../src/tools/backend/server.js';
import { nominalOf } from '../../src/tools/nominal.js';
import { createTestDatabase, type TestDatabase } from '../helpers/db.js';
import { pause, waitFor } from '../helpers/wait.js';

/** The reference backend serving the plant-2026-03 profile, over real HTTP on loopback. */

const API_KEY = 'plant-key-5b2e41';
const plant = loadDefinitions(profileDir('plant-2026-03'));
const pumpA = plant.pumps.find((p) => p.id === 'A') as PumpDefinition;
const pumpB = plant.pumps.find((p) => p.id === 'B') as PumpDefinition;

let db: TestDatabase;
let pool: pg.Pool;
let app: FastifyInstance;
let origin: string;

beforeAll(async () => {
  db = await createTestDatabase('reference_backend_plant');
  pool = createPool(db.config, 'reference-backend-plant-test', 6);
  const client = await pool.connect();
  try {
    await migrate(client, plant);
  } finally {
    client.release();
  }
  app = await buildReferenceBackend({
    pool,
    pumps: plant.pumps,
    logbooks: plant.logbooks,
    apiKey: API_KEY,
    logger: false,
  });
  origin = await app.listen({ port: 0, host: '127.0.0.1' });
});

afterAll(async () => {
  await app?.close();
  await pool?.end();
  await db?.drop();
});

/** `key` null sends no X-API-Key at all. */
async function post(path: string, body: unknown, key: string | null = API_KEY) {
  const headers: Record<string, string> = { 'content-type': 'application/json' };
  if (key !== null) headers['x-api-key'] = key;
  const response = await fetch(`${origin}${path}`, {
    method: 'POST',
    headers,
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
  const text = await response.text();
  return { status: response.status, body: text === '' ? undefined : JSON.parse(text) };
}

async function insertEntry(table: string, bitacora: string, id?: number): Promise<number> {
  const { rows } = await pool.query<{ id: number }>(
    id === undefined
      ? `INSERT INTO ${quoteIdent(table)} (bitacora) VALUES ($1) RETURNING id`
      : `INSERT INTO ${quoteIdent(table)} (id, bitacora) VALUES ($2, $1) RETURNING id`,
    id === undefined ? [bitacora] : [bitacora, id],
  );
  return rows[0]?.id as number;
}

async function entry(table: string, id: number) {
  const { rows } = await pool.query<{ clasificacion: string | null; alerta_aviso: string | null }>(
    `SELECT clasificacion, alerta_aviso FROM ${quoteIdent(table)} WHERE id = $1`,
    [id],
  );
  return rows[0];
}

async function insertReading(table: string, value: number, id?: number): Promise<number> {
  const { rows } = await pool.query<{ id: number }>(
    id === undefined
      ? `INSERT INTO ${quoteIdent(table)} (tiempo_sensor, valor_sensor) VALUES ('2026-03-02T10:00:00', $1) RETURNING id`
      : `INSERT INTO ${quoteIdent(table)} (id, tiempo_sensor, valor_sensor) VALUES ($2, '2026-03-02T10:00:00', $1) RETURNING id`,
    id === undefined ? [value] : [value, id],
  );
  return rows[0]?.id as number;
}

async function classification(table: string, id: number): Promise<number | null | undefined> {
  const { rows } = await pool.query<{ clasificacion: number | null }>(
    `SELECT clasificacion FROM ${quoteIdent(table)} WHERE id = $1`,
    [id],
  );
  return rows[0]?.clasificacion;
}

const CLASSIFY = '/gm-bitacoras/clasificar';

describe('reference backend: logbook classification', () => {
  it('classifies a vibration note as a pump failure with an alert, and writes both back', async () => {
    const text =
      'Bomba A: vibración axial elevada en descanso de empuje (2,9 mm/s) y ruido anormal en el rodamiento.';
    const id = await insertEntry('gm_bitacoras_a', text);
    const response = await post(CLASSIFY, { id, bitacora: text, tabla: 'a' });
    expect(response.status).toBe(200);
    expect(response.body).toMatchObject({
      id,
      clasificacion: 'Falla de bomba',
      procesado: true,
      metodo: 'palabras clave',
      palabras_clave: ['vibracion axial elevada', 'ruido anormal'],
    });
    expect(response.body.alerta_aviso).toMatch(/^Posible falla en la bomba A: vibracion axial elevada/);
    expect(response.body.alerta_aviso).toContain('no por un modelo de lenguaje');
    expect(await entry('gm_bitacoras_a', id)).toEqual({
      clasificacion: 'Falla de bomba',
      alerta_aviso: response.body.alerta_aviso,
    });
  });

  it('classifies a routine round without an alert, negated findings included', async () => {
    const text = 'Ronda de las 08:00: bomba B en servicio. Sin fugas ni ruidos anormales. Sin novedad.';
    const id = await insertEntry('gm_bitacoras_b', text);
    const response = await post(CLASSIFY, { id, bitacora: text, tabla: 'b' });
    expect(response.status).toBe(200);
    expect(response.body).toEqual({
      id,
      clasificacion: 'Rutina',
      alerta_aviso: null,
      procesado: true,
      metodo: 'palabras clave',
      palabras_clave: ['ronda', 'sin novedad'],
    });
    expect(await entry('gm_bitacoras_b', id)).toEqual({ clasificacion: 'Rutina', alerta_aviso: null });
  });

  it("writes into the table `tabla` names, never the other logbook's row with the same id", async () => {
    await insertEntry('gm_bitacoras_a', 'Limpieza del filtro de succión (OT 41000).', 9_001);
    await insertEntry('gm_bitacoras_b', 'Limpieza del filtro de succión (OT 41001).', 9_001);
    const response = await post(CLASSIFY, { id: 9_001, bitacora: 'Se cambia filtro de aceite.', tabla: 'b' });
    expect(response.status).toBe(200);
    expect(response.body.clasificacion).toBe('Mantenimiento');
    expect((await entry('gm_bitacoras_b', 9_001))?.clasificacion).toBe('Mantenimiento');
    expect((await entry('gm_bitacoras_a', 9_001))?.clasificacion).toBeNull();
  });

  it('answers 404 for a row that does not exist, 422 for a bad body, 401 for a wrong key', async () => {
    const missing = await post(CLASSIFY, { id: 424_242, bitacora: 'Ronda sin novedad.', tabla: 'a' });
    expect(missing.status).toBe(404);
    expect(missing.body.detail).toMatch(/^Bitacora no encontrada/);
    expect((await post(CLASSIFY, { id: 2 ** 40, bitacora: 'Ronda.', tabla: 'a' })).status).toBe(404);

    const bad: unknown[] = [
      { bitacora: 'Ronda.', tabla: 'a' },
      { id: '7', bitacora: 'Ronda.', tabla: 'a' },
      { id: 1.5, bitacora: 'Ronda.', tabla: 'a' },
      { id: 7, tabla: 'a' },
      { id: 7, bitacora: '  ', tabla: 'a' },
      { id: 7, bitacora: 42, tabla: 'a' },
      { id: 7, bitacora: 'Ronda.' },
      { id: 7, bitacora: 'Ronda.', tabla: 'c' },
      [1, 2],
      '{"id": ',
    ];
    for (const body of bad) {
      const response = await post(CLASSIFY, body);
      expect(response.status, JSON.stringify(body)).toBe(422);
      expect(response.body).toHaveProperty('detail');
    }

    const id = await insertEntry('gm_bitacoras_a', 'Ronda.');
    expect((await post(CLASSIFY, { id, bitacora: 'Ronda.', tabla: 'a' }, 'wrong')).status).toBe(401);
    expect((await post(CLASSIFY, { id, bitacora: 'Ronda.', tabla: 'a' }, null)).status).toBe(401);
    expect((await entry('gm_bitacoras_a', id))?.clasificacion).toBeNull();
  });

  it('does not make the logbook trigger notify with its write-back', async () => {
    const listener = new pg.Client(clientConfig(db.config, 'reference-backend-plant-listener'));
    await listener.connect();
    const received: pg.Notification[] = [];
    listener.on('notification', (n) => received.push(n));
    try {
      await listener.query('LISTEN canal_gm_bitacora_a');
      const id = await insertEntry('gm_bitacoras_a', 'Alarma de baja presión de succión BAA A.');
      await waitFor('the INSERT notification', () => received.length > 0, 10_000);
      received.length = 0;
      const response = await post(CLASSIFY, {
        id,
        bitacora: 'Alarma de baja presión de succión BAA A.',
        tabla: 'a',
      });
      expect(response.body.clasificacion).toBe('Alarma');
      await pause(300);
      expect(received).toEqual([]);
    } finally {
      await listener.end();
    }
  });
});

describe('reference backend: the profile per-sensor endpoints', () => {
  it("classifies a reading at every sensor's endpoint, both pumps, into its own table's row", async () => {
    for (const pump of [pumpA, pumpB]) {
      for (const [k, sensor] of pump.sensors.entries()) {
        // Distinct values: where two tables share an endpoint, the valor tells their rows apart.
        const value = nominalOf(sensor).mean + k * 0.01 * nominalOf(sensor).std;
        const id = await insertReading(sensor.table, value);
        const path = `${pump.pathPrefix}${sensor.endpoint}`;
        const response = await post(path, { id_sensor: id, valor: value });
        expect(response.status, path).toBe(200);
        expect(response.body, path).toMatchObject({ id_registro: id, valor: value, prediccion: 1 });
        expect(await classification(sensor.table, id), `${path} → ${sensor.table}`).toBe(1);
      }
    }
  });

  it('lets both pumps classify one row of a shared table through their own endpoints', async () => {
    const id = await insertReading('presion_agua_b', 128.4);
    // Pump A reads presion_agua_b as presion_agua_mp; scored against the table's nominal (128 barg).
    const a = await post('/sensores/prediccion_presion-agua-mp', { id_sensor: id, valor: 128.4 });
    expect(a.status).toBe(200);
    expect(a.body.prediccion).toBe(1);
    const b = await post('/sensores_b/prediccion_presion_agua', { id_sensor: id, valor: 128.4 });
    expect(b.status).toBe(200);
    expect(await classification('presion_agua_b', id)).toBe(1);
  });

  it('resolves an endpoint fed by two tables by the row holding the posted valor', async () => {
    const path = '/sensores_b/prediccion_temperatura_agua_alim';
    await insertReading('temperatura_agua_alim_b', 151.5, 7_001);
    await insertReading('temperatura_agua_alim_ap_b', 152.5, 7_001);
    const first = await post(path, { id_sensor: 7_001, valor: 152.5 });
    expect(first.status).toBe(200);
    expect(await classification('temperatura_agua_alim_ap_b', 7_001)).toBe(1);
    expect(await classification('temperatura_agua_alim_b', 7_001)).toBeNull();
    const second = await post(path, { id_sensor: 7_001, valor: 151.5 });
    expect(second.status).toBe(200);
    expect(await classification('temperatura_agua_alim_b', 7_001)).toBe(1);
    // The row exists in one of the tables only: that one.
    await insertReading('temperatura_agua_alim_b', 150.9, 7_002);
    expect((await post(path, { id_sensor: 7_002, valor: 150 })).status).toBe(200);
    expect(await classification('temperatura_agua_alim_b', 7_002)).toBe(1);
    expect((await post(path, { id_sensor: 7_003, valor: 150 })).status).toBe(404);
  });
});

describe('reference backend: the profile unified endpoints', () => {
  function nominalVector(pump: PumpDefinition): Record<string, number> {
    const vector: Record<string, number> = {};
    for (const s of pump.sensors) if (s.inVector && !(s.field in vector)) vector[s.field] = nominalOf(s).mean;
    return vector;
  }

  it("takes exactly the pump's vector fields: 19 for A, 15 for B", async () => {
    const a = nominalVector(pumpA);
    expect(Object.keys(a)).toHaveLength(19);
    const okA = await post('/sensores/predecir-bomba', a);
    expect(okA.status).toBe(200);
    expect(okA.body.prediccion).toBeLessThan(5);
    const okB = await post('/sensores_b/predecir-bomba-b', nominalVector(pumpB));
    expect(okB.status).toBe(200);
    expect(okB.body.prediccion).toBeLessThan(5);

    // A field outside the vector is neither required nor scored.
    const withExtra = await post('/sensores/predecir-bomba', { ...a, vibracion_x_interno: 1e6 });
    expect(withExtra.body.prediccion).toBeLessThan(5);
    const { presion_agua: _, ...without } = a;
    const missing = await post('/sensores/predecir-bomba', without);
    expect(missing.status).toBe(422);
    expect(JSON.stringify(missing.body.detail)).toContain('presion_agua');
  });
});
