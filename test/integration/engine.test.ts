import { Writable } from 'node:stream';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEAD_LETTER_PAYLOAD_CHARS } from '../../src/store/dead-letters.js';
import { ENGINE_SCHEMA } from '../../src/store/schema.js';
import { API_KEY, type Harness, harness, insertTimestamp, onReplication } from '../helpers/engine.js';
import { expectExactlyOnce } from '../helpers/ledger.js';
import { waitFor } from '../helpers/wait.js';

let h: Harness;
/** The engine's log lines (warn and above) while the first monitor runs. */
const logs: Record<string, unknown>[] = [];

beforeAll(async () => {
  // Pump B has a backend of its own: its readings and vectors must go through BASE_URL_B.
  h = await harness('engine', {}, { ownBackendB: true });
  const sink = new Writable({
    write(chunk, _encoding, done) {
      for (const line of chunk.toString('utf8').split('\n')) if (line) logs.push(JSON.parse(line));
      done();
    },
  });
  await h.startMonitor({}, { logger: pino({ level: 'warn' }, sink) });
});

afterAll(async () => {
  await h?.close();
});

type PumpStatus = Record<string, number>;
const status = (pump: 'A' | 'B') =>
  (h.monitor.status().pumps as Record<string, PumpStatus>)[pump] as PumpStatus;

/**
 * Every row written so far got exactly one per-sensor POST at its pump's own backend and path, every
 * timestamp at or above its pump's threshold exactly one unified POST, and nothing else was answered 200.
 * Counted once the engine is quiescent (nothing pending or queued, then quiet), so a late duplicate counts.
 */
async function deliveredExactlyOnce() {
  const c = await h.ledger().settle({ admin: h.admin, monitors: [h.monitor], timeoutMs: 30_000 });
  expectExactlyOnce(c);
  return c;
}

/** The outbox row of a pump's timestamp: its status and the key the engine sent it under. */
async function outboxRow(pump: string, tiempo: string) {
  const { rows } = await h.admin.query<{ k: string; status: string; missing: string[]; filled: string[] }>(
    `SELECT idempotency_key AS k, status, missing, filled FROM ${ENGINE_SCHEMA}.outbox WHERE pump = $1 AND tiempo_sensor = $2`,
    [pump, tiempo],
  );
  return rows;
}

/** Unified POSTs answered 200 at the pump's own backend, on its exact path, under its outbox key. */
async function unifiedFor(pump: 'A' | 'B', tiempo: string) {
  const [row] = await outboxRow(pump, tiempo);
  const backend = pump === 'A' ? h.backend : h.backendB;
  const path = pump === 'A' ? '/sensores/predecir-bomba' : '/sensores_b/predecir-bomba-b';
  return row ? backend.answered(path).filter((r) => r.idempotencyKey === row.k) : [];
}

describe('contract: rows in, exact requests out', () => {
  it('sends pump A and pump B full vectors and every reading, with the exact paths, bodies and header', async () => {
    const idsA = await insertTimestamp(h.admin, h.pumps.A, '2025-01-01T10:00:00');
    const idsB = await insertTimestamp(h.admin, h.pumps.B, '2025-01-01T10:00:00');
    const c = await deliveredExactlyOnce();
    expect({ readings: c.readings, vectors: c.vectors }).toEqual({ readings: 35, vectors: 2 });

    // Each backend saw its own pump only: A's paths at BASE_URL, B's at BASE_URL_B.
    expect(h.backend.requests.every((r) => r.path.startsWith('/sensores/'))).toBe(true);
    expect(h.backendB.requests.every((r) => r.path.startsWith('/sensores_b/'))).toBe(true);
    const [a] = h.backend.answered('/sensores/predecir-bomba');
    const [b] = h.backendB.answered('/sensores_b/predecir-bomba-b');
    expect(a?.body).toEqual(Object.fromEntries(h.pumps.A.sensors.map((s, i) => [s.field, 100 + i])));
    expect(b?.body).toEqual(Object.fromEntries(h.pumps.B.sensors.map((s, i) => [s.field, 100 + i])));
    for (const r of [...h.backend.requests, ...h.backendB.requests]) expect(r.apiKey).toBe(API_KEY);
    expect(a?.idempotencyKey).toBe((await outboxRow('A', '2025-01-01T10:00:00'))[0]?.k);

    for (const [pump, ids, prefix, backend] of [
      [h.pumps.A, idsA, '/sensores', h.backend],
      [h.pumps.B, idsB, '/sensores_b', h.backendB],
    ] as const) {
      pump.sensors.forEach((s, i) => {
        const posts = backend.answered(prefix + s.endpoint).filter((p) => p.body.id_sensor === ids[i]);
        expect(
          posts.map((p) => p.raw && JSON.parse(p.raw)),
          `${pump.id} ${s.field}`,
        ).toEqual([{ id_sensor: ids[i], valor: 100 + i }]);
        expect(posts[0]?.idempotencyKey, `${pump.id} ${s.field}`).toBeTruthy();
      });
    }
    // The backends saw the requests; the engine counts them once it has read the answers.
    await waitFor(
      'the engine to count its deliveries',
      () =>
        status('A').sensor_posts_ok === 20 &&
        status('B').sensor_posts_ok === 15 &&
        status('A').vectors_sent === 1 &&
        status('B').vectors_sent === 1,
    );
    expect(status('A')).toMatchObject({
      connected: true,
      channels: 20,
      vectors_sent: 1,
      sensor_posts_ok: 20,
    });
    expect(status('B')).toMatchObject({
      connected: true,
      channels: 15,
      vectors_sent: 1,
      sensor_posts_ok: 15,
    });
    expect(status('A').last_prediction).toMatchObject({
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
    await deliveredExactlyOnce();
    const [req, ...more] = await unifiedFor('A', tiempo);
    expect(more).toEqual([]);
    // Present fields carry this timestamp's rows (100 + i); the missing ones the last value of their
    // sensor, which is 100 + i as well (the earlier timestamps).
    expect(req?.body).toEqual(Object.fromEntries(all().map((f, i) => [f, 100 + i])));
    const [row] = await outboxRow('A', tiempo);
    expect(row?.filled.map((f) => f.split(':')[0]).sort()).toEqual(all().slice(n).sort());
  });

  it('pump A with 14 fields and pump B with 14 send nothing; the groups are dropped and recorded', async () => {
    const dropsA = status('A').vectors_dropped ?? 0;
    const dropsB = status('B').vectors_dropped ?? 0;
    const tiempo = '2025-01-03T00:00:14';
    await insertTimestamp(h.admin, h.pumps.A, tiempo, { fields: all().slice(0, 14) });
    await insertTimestamp(h.admin, h.pumps.B, tiempo, {
      fields: h.pumps.B.sensors.slice(0, 14).map((s) => s.field),
    });
    await waitFor('both groups dropped', async () => {
      const rows = [...(await outboxRow('A', tiempo)), ...(await outboxRow('B', tiempo))];
      return rows.length === 2 && rows.every((r) => r.status === 'dropped');
    });
    const [a] = await outboxRow('A', tiempo);
    const [b] = await outboxRow('B', tiempo);
    expect(a?.missing.sort()).toEqual(all().slice(14).sort());
    expect(b?.missing).toEqual([h.pumps.B.sensors[14]?.field]);
    expect(status('A').vectors_dropped).toBe(dropsA + 1);
    expect(status('B').vectors_dropped).toBe(dropsB + 1);
    // A vector for either would be unexpected to the ledger.
    await deliveredExactlyOnce();
    expect(await unifiedFor('A', tiempo)).toEqual([]);
    expect(await unifiedFor('B', tiempo)).toEqual([]);
  });
});

describe('duplicates and loops', () => {
  it.skipIf(onReplication)(
    'a row notified twice (a plant trigger besides ours) is posted once and its vector sent once',
    async () => {
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
        const duplicatesBefore = status('B').readings_duplicate ?? 0;
        const tiempo = '2025-01-04T00:00:00';
        const ids = await insertTimestamp(h.admin, h.pumps.B, tiempo);
        // The second notification of the one row has been seen, and set aside.
        await waitFor(
          'the second notification counted',
          () => status('B').readings_duplicate === duplicatesBefore + 1,
        );
        await deliveredExactlyOnce();
        const posts = h.backendB.answered(`/sensores_b${h.pumps.B.sensors[0]?.endpoint}`);
        expect(posts.filter((r) => r.body.id_sensor === ids[0])).toHaveLength(1);
        expect(await unifiedFor('B', tiempo)).toHaveLength(1);
        expect(status('B').readings_duplicate).toBe(duplicatesBefore + 1);
      } finally {
        await h.admin.query(`DROP TRIGGER plant_trigger ON "${table}"`);
      }
    },
  );

  it('the backend write-back of clasificacion does not notify (no loop)', async () => {
    const tiempo = '2025-01-05T00:00:00';
    const ids = await insertTimestamp(h.admin, h.pumps.B, tiempo);
    await deliveredExactlyOnce();
    const before = h.backendB.requests.length;
    const received = status('B').readings_received as number;
    for (const [i, s] of h.pumps.B.sensors.entries()) {
      await h.admin.query(
        `UPDATE "${s.table}" SET clasificacion = -1, contador_anomalias = 3 WHERE id = $1`,
        [ids[i]],
      );
    }
    // A marker row committed after the updates: notifications arrive in commit order, so once the engine
    // has the marker, any notification the updates fired would already have arrived.
    const marker = h.pumps.B.sensors[0];
    if (!marker) throw new Error('pump B has sensors');
    const { rows } = await h.admin.query<{ id: number }>(
      `INSERT INTO "${marker.table}" (tiempo_sensor, valor_sensor) VALUES ('2025-01-05T00:00:01', 7) RETURNING id`,
    );
    await waitFor('the marker received', () => (status('B').readings_received ?? 0) > received);
    expect(status('B').readings_received).toBe(received + 1);
    await deliveredExactlyOnce();
    // The only request since: the marker's own per-sensor POST.
    expect(h.backendB.requests.slice(before).map((r) => [r.path, r.body])).toEqual([
      [`/sensores_b${marker.endpoint}`, { id_sensor: rows[0]?.id, valor: 7 }],
    ]);
  });
});

describe('bad input', () => {
  const channel = 'canal_sensores_corriente_b';
  const oversized = `{"id_sensor": 900006, "valor": 1, "tiempo_sensor": "2025-01-06T00:00:00", "pad": "${'x'.repeat(7850)}"}`;
  const bad: [payload: string, reason: string][] = [
    ['not json at all', 'not_json'],
    ['[1, 2, 3]', 'not_object'],
    ['"just a string"', 'not_object'],
    // Ids no row of the table has: whatever values they carry, they name nothing (the row is the truth).
    ['{"id_sensor": 900001, "valor": 1.5}', 'no_such_row'],
    ['{"id_sensor": 900002, "valor": "12.5", "tiempo_sensor": "2025-01-06T00:00:00"}', 'no_such_row'],
    ['{"id_sensor": 900003, "valor": null, "tiempo_sensor": "2025-01-06T00:00:00"}', 'no_such_row'],
    ['{"id_sensor": 900004, "valor": "NaN", "tiempo_sensor": "2025-01-06T00:00:00"}', 'no_such_row'],
    ['{"id_sensor": 900005, "valor": 3, "tiempo_sensor": "2025-01-06T00:00:00"}', 'no_such_row'],
    ['{"id_sensor": "abc", "valor": 1, "tiempo_sensor": "2025-01-06T00:00:00"}', 'bad_id_sensor'],
    ['{"id_sensor": 1.25, "valor": 1, "tiempo_sensor": "2025-01-06T00:00:00"}', 'bad_id_sensor'],
    [oversized, 'oversized'],
  ];

  it.skipIf(onReplication)(
    'counts, logs and dead-letters each one, forwards nothing, and keeps flowing',
    async () => {
      const invalidBefore = status('B').readings_invalid ?? 0;
      const logged = logs.length;
      for (const [payload] of bad) await h.admin.query('SELECT pg_notify($1, $2)', [channel, payload]);
      await waitFor(
        'all rejections counted',
        () => status('B').readings_invalid === invalidBefore + bad.length,
      );
      await waitFor('all dead letters written', async () => {
        const { rows } = await h.admin.query(
          `SELECT count(*)::int AS n FROM ${ENGINE_SCHEMA}.dead_letters WHERE channel = $1`,
          [channel],
        );
        return rows[0]?.n === bad.length;
      });
      const { rows } = await h.admin.query<{ reason: string; payload: string; kind: string; pump: string }>(
        `SELECT kind, pump, reason, payload FROM ${ENGINE_SCHEMA}.dead_letters WHERE channel = $1 ORDER BY id`,
        [channel],
      );
      // The payload is kept whole up to 1000 characters; a longer one is cut to its first 1000, followed
      // by a note of its length. (Letters of ids come after their row was looked for: compared unordered.)
      expect(DEAD_LETTER_PAYLOAD_CHARS).toBe(1_000);
      const kept = (p: string) => (p.length <= 1_000 ? p : `${p.slice(0, 1_000)}…[${p.length} chars]`);
      const byPayload = (a: unknown[], b: unknown[]) => String(a[3]).localeCompare(String(b[3]));
      expect(rows.map((r) => [r.kind, r.pump, r.reason.split(':')[0], r.payload]).sort(byPayload)).toEqual(
        bad.map(([p, reason]) => ['notification', 'B', reason, kept(p)]).sort(byPayload),
      );
      // Each one is logged once, as a warning naming the channel and the reason.
      const warnings = logs.slice(logged).filter((l) => String(l.msg).startsWith('invalid notification'));
      expect(warnings.map((l) => [l.level, l.channel, l.reason].join(' ')).sort()).toEqual(
        bad.map(([, reason]) => [40, channel, reason].join(' ')).sort(),
      );
      for (const w of warnings) expect(String(w.msg)).toContain(`invalid notification on ${channel}:`);

      const tiempo = '2025-01-06T00:00:01';
      await insertTimestamp(h.admin, h.pumps.B, tiempo);
      // Nothing of the bad payloads was forwarded: the ledger would count it as unexpected.
      await deliveredExactlyOnce();
      expect(await unifiedFor('B', tiempo)).toHaveLength(1);
    },
  );

  it('dead-letters real rows whose valor is not finite or whose tiempo_sensor is empty, and forwards none', async () => {
    const sensor = h.pumps.B.sensors[5];
    const table = sensor?.table as string;
    const bad: [tiempo: string, valor: number | string, reason: string][] = [
      ['2025-01-06T05:00:00', 'NaN', 'valor_not_finite'],
      ['2025-01-06T05:00:01', 'Infinity', 'valor_not_finite'],
      ['', 4.5, 'bad_tiempo_sensor'],
    ];
    const ids: number[] = [];
    for (const [tiempo, valor] of bad) {
      const { rows } = await h.admin.query<{ id: number }>(
        `INSERT INTO ${table} (tiempo_sensor, valor_sensor) VALUES ($1, $2::float8) RETURNING id`,
        [tiempo, valor],
      );
      ids.push(rows[0]?.id as number);
    }
    await waitFor('a dead letter for each row', async () => {
      const { rows } = await h.admin.query(
        `SELECT 1 FROM ${ENGINE_SCHEMA}.dead_letters WHERE channel = $1 AND payload LIKE ANY($2)`,
        [sensor?.channel, ids.map((id) => `%"id_sensor":${id},%`)],
      );
      return rows.length === ids.length;
    });
    const { rows } = await h.admin.query<{ reason: string }>(
      `SELECT reason FROM ${ENGINE_SCHEMA}.dead_letters WHERE channel = $1 AND payload LIKE ANY($2) ORDER BY id`,
      [sensor?.channel, ids.map((id) => `%"id_sensor":${id},%`)],
    );
    expect(rows.map((r) => r.reason.split(':')[0]).sort()).toEqual(bad.map(([, , reason]) => reason).sort());
    await deliveredExactlyOnce();
    for (const id of ids) {
      const ofRow = (r: { path: string; body: Record<string, unknown> }) =>
        r.path.endsWith(sensor?.endpoint as string) && r.body.id_sensor === id;
      expect(h.backendB.requests.some(ofRow)).toBe(false);
    }
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
    // B needs all 15: at expiry its group is dropped, missing the null one.
    await waitFor('the group dropped', async () => (await outboxRow('B', tiempo))[0]?.status === 'dropped');
    expect((await outboxRow('B', tiempo))[0]?.missing).toEqual([nullField]);
    await deliveredExactlyOnce();
    expect(await unifiedFor('B', tiempo)).toEqual([]);
    expect([...h.backend.requests, ...h.backendB.requests].some((r) => r.body.valor === null)).toBe(false);
  });
});

describe('restart', () => {
  it('rows committed while no monitor runs are delivered when it comes back, once', async () => {
    await h.monitor.stop(2_000);
    const tiempo = '2025-01-08T00:00:00';
    const ids = await insertTimestamp(h.admin, h.pumps.A, tiempo);
    await h.startMonitor();
    // Every row so far, the caught-up ones included, once; nothing earlier sent again.
    await deliveredExactlyOnce();
    expect(await unifiedFor('A', tiempo)).toHaveLength(1);
    h.pumps.A.sensors.forEach((s, i) => {
      const posts = h.backend.answered(`/sensores${s.endpoint}`).filter((r) => r.body.id_sensor === ids[i]);
      expect(posts, s.table).toHaveLength(1);
    });
    expect(await unifiedFor('A', '2025-01-01T10:00:00')).toHaveLength(1);
  });
});
