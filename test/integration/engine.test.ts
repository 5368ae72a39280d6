import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ENGINE_SCHEMA } from '../../src/store/schema.js';
import { API_KEY, type Harness, harness, insertTimestamp } from '../helpers/engine.js';
import { pause, waitFor } from '../helpers/wait.js';

let h: Harness;

beforeAll(async () => {
  h = await harness('engine');
  await h.startMonitor();
});

afterAll(async () => {
  await h?.close();
});

/** Idempotency keys seen, mapped back to their timestamps. */
const sent = new Map<string, string>();

async function keyOf(pump: string, tiempo: string): Promise<string> {
  const { rows } = await h.admin.query<{ k: string }>(
    `SELECT idempotency_key AS k FROM ${ENGINE_SCHEMA}.outbox WHERE pump = $1 AND tiempo_sensor = $2`,
    [pump, tiempo],
  );
  const k = rows[0]?.k as string;
  sent.set(k, tiempo);
  return k;
}

async function unifiedFor(pump: string, tiempo: string) {
  const k = await keyOf(pump, tiempo);
  return h.backend.requests.filter((r) => r.idempotencyKey === k && r.status === 200);
}

describe('contract: rows in, exact requests out', () => {
  it('sends pump A and pump B full vectors and every reading, with the exact paths, bodies and header', async () => {
    const idsA = await insertTimestamp(h.admin, h.pumps.A, '2025-01-01T10:00:00');
    const idsB = await insertTimestamp(h.admin, h.pumps.B, '2025-01-01T10:00:00');
    await waitFor(
      'both vectors and 35 per-sensor posts',
      () =>
        h.backend.ok('/predecir-bomba').length === 1 &&
        h.backend.ok('/predecir-bomba-b').length === 1 &&
        h.backend.requests.filter((r) => r.path.includes('/prediccion') && r.status === 200).length === 35,
    );
    const a = h.backend.ok('/predecir-bomba')[0];
    const b = h.backend.ok('/predecir-bomba-b')[0];
    expect(a?.path).toBe('/sensores/predecir-bomba');
    expect(b?.path).toBe('/sensores_b/predecir-bomba-b');
    expect(a?.body).toEqual(Object.fromEntries(h.pumps.A.sensors.map((s, i) => [s.field, 100 + i])));
    expect(b?.body).toEqual(Object.fromEntries(h.pumps.B.sensors.map((s, i) => [s.field, 100 + i])));
    for (const r of h.backend.requests) expect(r.apiKey).toBe(API_KEY);
    expect(a?.idempotencyKey).toBe(await keyOf('A', '2025-01-01T10:00:00'));

    const posts = h.backend.requests.filter((r) => r.path.includes('/prediccion'));
    for (const [pump, ids, prefix] of [
      [h.pumps.A, idsA, '/sensores'],
      [h.pumps.B, idsB, '/sensores_b'],
    ] as const) {
      pump.sensors.forEach((s, i) => {
        const post = posts.find((p) => p.path === prefix + s.endpoint && p.body.id_sensor === ids[i]);
        expect(post?.body, `${pump.id} ${s.field}`).toEqual({ id_sensor: ids[i], valor: 100 + i });
      });
    }
    // The backend saw the requests; the engine counts them once it has read the answers.
    const counted = () => h.monitor.status().pumps as Record<string, Record<string, unknown>>;
    await waitFor(
      'the engine to count its deliveries',
      () =>
        counted().A?.sensor_posts_ok === 20 &&
        counted().B?.sensor_posts_ok === 15 &&
        counted().A?.vectors_sent === 1 &&
        counted().B?.vectors_sent === 1,
    );
    const status = counted();
    expect(status.A).toMatchObject({ connected: true, channels: 20, vectors_sent: 1, sensor_posts_ok: 20 });
    expect(status.B).toMatchObject({ connected: true, channels: 15, vectors_sent: 1, sensor_posts_ok: 15 });
    expect(status.A?.last_prediction).toMatchObject({
      tiempo_sensor: '2025-01-01T10:00:00',
      prediccion: 12.5,
    });
  });
});

describe('thresholds', () => {
  const all = () => h.pumps.A.sensors.map((s) => s.field);

  it.each([19, 17, 15])('pump A with %i of 20 fields sends one vector with every field filled', async (n) => {
    const tiempo = `2025-01-02T00:00:${n}`;
    await insertTimestamp(h.admin, h.pumps.A, tiempo, { fields: all().slice(0, n) });
    await waitFor('the filled vector', async () => (await unifiedFor('A', tiempo)).length === 1);
    const [req] = await unifiedFor('A', tiempo);
    expect(Object.keys(req?.body ?? {}).sort()).toEqual(all().sort());
    const { rows } = await h.admin.query(
      `SELECT array_length(filled, 1) AS n FROM ${ENGINE_SCHEMA}.outbox WHERE pump = 'A' AND tiempo_sensor = $1`,
      [tiempo],
    );
    expect(rows[0]?.n).toBe(20 - n);
  });

  it('pump A with 14 fields and pump B with 14 send nothing; the groups are dropped and recorded', async () => {
    const before = h.monitor.status().pumps as Record<string, { vectors_dropped: number }>;
    const dropsA = before.A?.vectors_dropped ?? 0;
    const dropsB = before.B?.vectors_dropped ?? 0;
    await insertTimestamp(h.admin, h.pumps.A, '2025-01-03T00:00:14', { fields: all().slice(0, 14) });
    await insertTimestamp(h.admin, h.pumps.B, '2025-01-03T00:00:14', {
      fields: h.pumps.B.sensors.slice(0, 14).map((s) => s.field),
    });
    await waitFor('both groups dropped', async () => {
      const { rows } = await h.admin.query(
        `SELECT pump, missing FROM ${ENGINE_SCHEMA}.outbox WHERE tiempo_sensor = '2025-01-03T00:00:14' AND status = 'dropped'`,
      );
      return rows.length === 2;
    });
    const after = h.monitor.status().pumps as Record<string, { vectors_dropped: number }>;
    expect(after.A?.vectors_dropped).toBe(dropsA + 1);
    expect(after.B?.vectors_dropped).toBe(dropsB + 1);
    expect(await unifiedFor('A', '2025-01-03T00:00:14')).toEqual([]);
    expect(await unifiedFor('B', '2025-01-03T00:00:14')).toEqual([]);
  });
});

describe('duplicates and loops', () => {
  it('a row notified twice (a plant trigger besides ours) is posted once and its vector sent once', async () => {
    // The plant's payload differs in key order, so PostgreSQL does not fold the two notifications into one.
    const table = h.pumps.B.sensors[0]?.table as string;
    const channel = h.pumps.B.sensors[0]?.channel as string;
    await h.admin.query(`CREATE OR REPLACE FUNCTION plant_notify() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN PERFORM pg_notify(TG_ARGV[0], json_build_object('tiempo_sensor', NEW.tiempo_sensor,
        'valor', NEW.valor_sensor, 'id_sensor', NEW.id)::text); RETURN NEW; END $$`);
    await h.admin.query(
      `CREATE TRIGGER plant_trigger AFTER INSERT ON "${table}" FOR EACH ROW EXECUTE FUNCTION plant_notify('${channel}')`,
    );
    try {
      const tiempo = '2025-01-04T00:00:00';
      const ids = await insertTimestamp(h.admin, h.pumps.B, tiempo);
      await waitFor('the vector', async () => (await unifiedFor('B', tiempo)).length === 1);
      await pause(500);
      const posts = h.backend.requests.filter(
        (r) => r.path === `/sensores_b${h.pumps.B.sensors[0]?.endpoint}` && r.body.id_sensor === ids[0],
      );
      expect(posts).toHaveLength(1);
      expect(await unifiedFor('B', tiempo)).toHaveLength(1);
      expect(
        (h.monitor.status().pumps as Record<string, { readings_duplicate: number }>).B?.readings_duplicate,
      ).toBeGreaterThan(0);
    } finally {
      await h.admin.query(`DROP TRIGGER plant_trigger ON "${table}"`);
    }
  });

  it('the backend write-back of clasificacion does not notify (no loop)', async () => {
    const tiempo = '2025-01-05T00:00:00';
    const ids = await insertTimestamp(h.admin, h.pumps.B, tiempo);
    await waitFor('the vector', async () => (await unifiedFor('B', tiempo)).length === 1);
    await pause(300);
    const before = h.backend.requests.length;
    const received = (h.monitor.status().pumps as Record<string, { readings_received: number }>).B
      ?.readings_received;
    for (const [i, s] of h.pumps.B.sensors.entries()) {
      await h.admin.query(
        `UPDATE "${s.table}" SET clasificacion = -1, contador_anomalias = 3 WHERE id = $1`,
        [ids[i]],
      );
    }
    await pause(800);
    expect(h.backend.requests.length).toBe(before);
    expect(
      (h.monitor.status().pumps as Record<string, { readings_received: number }>).B?.readings_received,
    ).toBe(received);
  });
});

describe('bad input', () => {
  const channel = 'canal_sensores_corriente_b';
  const bad = [
    'not json at all',
    '[1, 2, 3]',
    '"just a string"',
    '{"id_sensor": 900001, "valor": 1.5}',
    '{"id_sensor": 900002, "valor": "12.5", "tiempo_sensor": "2025-01-06T00:00:00"}',
    '{"id_sensor": 900003, "valor": null, "tiempo_sensor": "2025-01-06T00:00:00"}',
    '{"id_sensor": 900004, "valor": "NaN", "tiempo_sensor": "2025-01-06T00:00:00"}',
    '{"id_sensor": 900005, "valor": "Infinity", "tiempo_sensor": "2025-01-06T00:00:00"}',
    '{"id_sensor": "abc", "valor": 1, "tiempo_sensor": "2025-01-06T00:00:00"}',
    '{"id_sensor": 1.25, "valor": 1, "tiempo_sensor": "2025-01-06T00:00:00"}',
    `{"id_sensor": 900006, "valor": 1, "tiempo_sensor": "2025-01-06T00:00:00", "pad": "${'x'.repeat(7850)}"}`,
  ];

  it('counts, logs and dead-letters each one, forwards nothing, and keeps flowing', async () => {
    const invalidBefore =
      (h.monitor.status().pumps as Record<string, { readings_invalid: number }>).B?.readings_invalid ?? 0;
    const requestsBefore = h.backend.requests.length;
    for (const payload of bad) await h.admin.query('SELECT pg_notify($1, $2)', [channel, payload]);
    await waitFor(
      'all rejections counted',
      () =>
        (h.monitor.status().pumps as Record<string, { readings_invalid: number }>).B?.readings_invalid ===
        invalidBefore + bad.length,
    );
    await waitFor('all dead letters written', async () => {
      const { rows } = await h.admin.query(
        `SELECT count(*)::int AS n FROM ${ENGINE_SCHEMA}.dead_letters WHERE channel = $1`,
        [channel],
      );
      return rows[0]?.n === bad.length;
    });
    const { rows } = await h.admin.query<{ reason: string; payload: string }>(
      `SELECT reason, payload FROM ${ENGINE_SCHEMA}.dead_letters WHERE channel = $1 ORDER BY id`,
      [channel],
    );
    expect(rows.map((r) => r.reason.split(':')[0])).toEqual([
      'not_json',
      'not_object',
      'not_object',
      'bad_tiempo_sensor',
      'valor_not_number',
      'valor_null',
      'valor_not_finite',
      'valor_not_finite',
      'bad_id_sensor',
      'bad_id_sensor',
      'oversized',
    ]);
    expect(rows.every((r) => r.payload.length <= 1_100)).toBe(true);
    expect(h.backend.requests.length).toBe(requestsBefore);

    const tiempo = '2025-01-06T00:00:01';
    await insertTimestamp(h.admin, h.pumps.B, tiempo);
    await waitFor('the next good vector', async () => (await unifiedFor('B', tiempo)).length === 1);
  });

  it('dead-letters a real row whose valor is null and does not forward it', async () => {
    const tiempo = '2025-01-07T00:00:00';
    const nullField = h.pumps.B.sensors[3]?.field as string;
    await insertTimestamp(h.admin, h.pumps.B, tiempo, { value: (f) => (f === nullField ? null : 50) });
    await waitFor('a dead letter for the null reading', async () => {
      const { rows } = await h.admin.query(
        `SELECT count(*)::int AS n FROM ${ENGINE_SCHEMA}.dead_letters WHERE reason LIKE 'valor_null%' AND payload LIKE $1`,
        [`%${tiempo}%`],
      );
      return rows[0]?.n === 1;
    });
    await pause(2_000); // past expiry: B needs all 15, so the group is dropped
    expect(await unifiedFor('B', tiempo)).toEqual([]);
    expect(h.backend.requests.some((r) => r.body.valor === null)).toBe(false);
  });
});

describe('restart', () => {
  it('rows committed while no monitor runs are delivered when it comes back, once', async () => {
    await h.monitor.stop(2_000);
    const tiempo = '2025-01-08T00:00:00';
    const ids = await insertTimestamp(h.admin, h.pumps.A, tiempo);
    await h.startMonitor();
    await waitFor('the caught-up vector', async () => (await unifiedFor('A', tiempo)).length === 1);
    await waitFor('the caught-up per-sensor posts', () =>
      ids.every((id, i) =>
        h.backend.ok(h.pumps.A.sensors[i]?.endpoint as string).some((r) => r.body.id_sensor === id),
      ),
    );
    await pause(500);
    expect(await unifiedFor('A', tiempo)).toHaveLength(1);
    const earlier = await unifiedFor('A', '2025-01-01T10:00:00');
    expect(earlier).toHaveLength(1);
  });
});
