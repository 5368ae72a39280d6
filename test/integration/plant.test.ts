import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { PumpConfig } from '../../src/config/env.js';
import { quoteIdent } from '../../src/store/db.js';
import { API_KEY, type Harness, harness } from '../helpers/engine.js';
import { waitFor } from '../helpers/wait.js';

/**
 * The contract for the plant as wired in March 2026 (PUMPS_PROFILE=plant-2026-03): shared tables fan out
 * to both pumps, vectors hold only the vector fields, posted-only sensors are posted and never grouped,
 * and two channels for one field follow the first-reading-wins rule.
 */
let h: Harness;
let tables: string[];

beforeAll(async () => {
  h = await harness('plant', { PUMPS_PROFILE: 'plant-2026-03', PUMPS: 'A,B' });
  tables = [...new Set([...h.pumps.A.sensors, ...h.pumps.B.sensors].map((s) => s.table))];
  await h.startMonitor();
});

afterAll(async () => {
  await h?.close();
});

const SHARED = ['voltaje_barra', 'temperatura_agua_alim_b', 'presion_agua_b'];
const rowValue = (table: string) => 100 + tables.indexOf(table);

/** One row in each of `only` (default: every table of both pumps, each once), in one transaction. */
async function insertRows(tiempo: string, only = tables, value = rowValue): Promise<Map<string, number>> {
  const client = await h.admin.connect();
  const ids = new Map<string, number>();
  try {
    await client.query('BEGIN');
    for (const t of only) {
      const { rows } = await client.query<{ id: number }>(
        `INSERT INTO ${quoteIdent(t)} (tiempo_sensor, valor_sensor) VALUES ($1, $2) RETURNING id`,
        [tiempo, value(t)],
      );
      ids.set(t, rows[0]?.id as number);
    }
    await client.query('COMMIT');
  } finally {
    client.release();
  }
  return ids;
}

function pumpsStatus() {
  return h.monitor.status().pumps as Record<string, Record<string, number>>;
}

const posts = () => h.backend.requests.filter((r) => r.path.includes('/prediccion') && r.status === 200);

function expectPosted(pump: PumpConfig, prefix: string, ids: Map<string, number>, value = rowValue) {
  for (const s of pump.sensors) {
    const id = ids.get(s.table) as number;
    const shared =
      h.pumps.A.sensors.some((x) => x.table === s.table) &&
      h.pumps.B.sensors.some((x) => x.table === s.table);
    const key = shared ? `rd-${pump.id}-${s.table}-${id}` : `rd-${s.table}-${id}`;
    const found = posts().filter((p) => p.idempotencyKey === key);
    expect(found, `${pump.id} ${s.table}`).toHaveLength(1);
    expect(found[0]?.path).toBe(prefix + s.endpoint);
    expect(found[0]?.body).toEqual({ id_sensor: id, valor: value(s.table) });
    expect(found[0]?.apiKey).toBe(API_KEY);
  }
}

describe('plant-2026-03: shared tables, vector fields, posted-only sensors', () => {
  it("sends A's 19-field and B's 15-field vectors and posts every reading to each pump's endpoint once", async () => {
    const tiempo = '2026-03-01T08:00:00';
    const ids = await insertRows(tiempo);
    await waitFor(
      'both vectors and 50 per-sensor posts',
      () =>
        h.backend.answered('/sensores/predecir-bomba').length === 1 &&
        h.backend.answered('/sensores_b/predecir-bomba-b').length === 1 &&
        posts().length === 50,
    );
    const a = h.backend.answered('/sensores/predecir-bomba')[0];
    const b = h.backend.answered('/sensores_b/predecir-bomba-b')[0];
    expect(a?.path).toBe('/sensores/predecir-bomba');
    expect(b?.path).toBe('/sensores_b/predecir-bomba-b');
    expect(a?.apiKey).toBe(API_KEY);
    expect(a?.idempotencyKey).toMatch(/^vec-A-/);
    expect(b?.idempotencyKey).toMatch(/^vec-B-/);
    const bodyOf = (p: PumpConfig) =>
      Object.fromEntries(
        p.vectorFields.map((f) => {
          // The first sensor (in the definition) naming the field: its table's row arrived first.
          const s = p.sensors.find((x) => x.field === f && x.inVector);
          return [f, rowValue(s?.table as string)];
        }),
      );
    expect(Object.keys(a?.body ?? {})).toHaveLength(19);
    expect(Object.keys(b?.body ?? {})).toHaveLength(15);
    expect(a?.body).toEqual(bodyOf(h.pumps.A));
    expect(b?.body).toEqual(bodyOf(h.pumps.B));
    // Shared rows are in both vectors, under each pump's field name.
    expect(a?.body.voltaje_barra).toBe(rowValue('voltaje_barra'));
    expect(b?.body.voltaje_barra).toBe(rowValue('voltaje_barra'));
    expect(a?.body.presion_agua_mp).toBe(rowValue('presion_agua_b'));
    expect(b?.body.presion_agua_ap).toBe(rowValue('presion_agua_b'));
    // Posted-only sensors never enter a vector.
    expect(a?.body).not.toHaveProperty('vibracion_x_interno');
    expect(a?.body).not.toHaveProperty('temp_agua_alim_domo_mp');
    expect(b?.body).not.toHaveProperty('mw_brutos_generacion_gas');
    expectPosted(h.pumps.A, '/sensores', ids);
    expectPosted(h.pumps.B, '/sensores_b', ids);
    for (const t of SHARED) {
      expect(posts().filter((p) => p.idempotencyKey?.endsWith(`-${t}-${ids.get(t)}`))).toHaveLength(2);
    }
    await waitFor(
      'the engine to count its deliveries',
      () =>
        pumpsStatus().A?.sensor_posts_ok === 25 &&
        pumpsStatus().B?.sensor_posts_ok === 25 &&
        pumpsStatus().A?.vectors_sent === 1 &&
        pumpsStatus().B?.vectors_sent === 1,
    );
    expect(pumpsStatus().A).toMatchObject({
      vectors_sent: 1,
      readings_received: 25,
      readings_conflicting: 0,
    });
    // temperatura_agua_alim_ap_b came after temperatura_agua_alim_b for the same field: counted, not used.
    expect(pumpsStatus().B).toMatchObject({
      vectors_sent: 1,
      readings_received: 25,
      readings_conflicting: 1,
    });
    const metrics = await h.monitor.units.telemetry.registry.metrics();
    expect(metrics).toMatch(/pump_monitor_readings_conflicting_total\{pump="B"\} 1/);
  });

  it('two channels for one field: the first reading of a timestamp wins, the second is counted and posted', async () => {
    const tiempo = '2026-03-01T08:01:00';
    const before = pumpsStatus().B?.readings_conflicting as number;
    const sentBefore = h.backend.answered('/sensores_b/predecir-bomba-b').length;
    // The second channel's table first, in a transaction of its own; then all the rest.
    const first = await insertRows(tiempo, ['temperatura_agua_alim_ap_b'], () => 7.5);
    const rest = await insertRows(
      tiempo,
      tables.filter((t) => t !== 'temperatura_agua_alim_ap_b'),
    );
    await waitFor(
      'B sends the vector',
      () => h.backend.answered('/sensores_b/predecir-bomba-b').length === sentBefore + 1,
    );
    const b = h.backend.answered('/sensores_b/predecir-bomba-b')[sentBefore];
    expect(b?.body.temperatura_agua_alim_ap).toBe(7.5);
    expect(Object.keys(b?.body ?? {})).toHaveLength(15);
    await waitFor('the conflict counted', () => pumpsStatus().B?.readings_conflicting === before + 1);
    const ids = new Map([...first, ...rest]);
    await waitFor('every post of the timestamp', () =>
      posts().some(
        (p) => p.idempotencyKey === `rd-B-temperatura_agua_alim_b-${ids.get('temperatura_agua_alim_b')}`,
      ),
    );
    const value = (t: string) => (t === 'temperatura_agua_alim_ap_b' ? 7.5 : rowValue(t));
    await waitFor('50 more posts', () => posts().length === 100);
    expectPosted(h.pumps.B, '/sensores_b', ids, value);
    expectPosted(h.pumps.A, '/sensores', ids, value);
  });
});

describe('plant-2026-03 with a process per pump', () => {
  it("keys a shared table's posts with the pump in each pump's own process, so the two never share a key", async () => {
    /** One row in each shared table, posted by a process that serves `pump` alone: the keys it used. */
    const keysOf = async (pump: 'A' | 'B') => {
      const own = await harness(`plant_${pump.toLowerCase()}_only`, {
        PUMPS_PROFILE: 'plant-2026-03',
        PUMPS: pump,
      });
      try {
        await own.startMonitor();
        const keys = new Map<string, { id: number; keys: (string | undefined)[] }>();
        for (const table of SHARED) {
          const { rows } = await own.admin.query<{ id: number }>(
            `INSERT INTO ${quoteIdent(table)} (tiempo_sensor, valor_sensor) VALUES ('2026-03-02T08:00:00', 7) RETURNING id`,
          );
          keys.set(table, { id: rows[0]?.id as number, keys: [] });
        }
        const sensor = (table: string) => own.pumps[pump].sensors.find((s) => s.table === table);
        const postsOf = (table: string) =>
          own.backend.requests.filter(
            (r) =>
              r.path.endsWith(sensor(table)?.endpoint ?? '?') && r.body.id_sensor === keys.get(table)?.id,
          );
        await waitFor(`${pump}'s posts of the shared tables`, () =>
          SHARED.every((t) => postsOf(t).some((r) => r.status === 200)),
        );
        for (const t of SHARED)
          (keys.get(t) as { keys: (string | undefined)[] }).keys = postsOf(t).map((r) => r.idempotencyKey);
        return keys;
      } finally {
        await own.close();
      }
    };
    const a = await keysOf('A');
    const b = await keysOf('B');
    for (const table of SHARED) {
      expect(a.get(table)?.keys, table).toEqual([`rd-A-${table}-${a.get(table)?.id}`]);
      expect(b.get(table)?.keys, table).toEqual([`rd-B-${table}-${b.get(table)?.id}`]);
    }
  });
});
