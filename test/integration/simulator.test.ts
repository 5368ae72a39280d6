import type pg from 'pg';
import { afterEach, describe, expect, it, vi } from 'vitest';
import {
  distinctSensorTables,
  loadDefinitions,
  loadPumpDefinitions,
  type PumpDefinition,
  profileDir,
} from '../../src/config/pumps.js';
import { PumpHealth } from '../../src/health/pump-health.js';
import { createPool, quoteIdent } from '../../src/store/db.js';
import { migrate } from '../../src/store/schema.js';
import { failureProbability } from '../../src/tools/backend/scoring.js';
import {
  formatTiempo,
  type LogbookEntryInfo,
  runSimulator,
  silentSensorTable,
  type TickInfo,
} from '../../src/tools/simulator.js';
import { createTestDatabase } from '../helpers/db.js';

const allPumps = loadPumpDefinitions();
const pumpA = pumpById('A');
const pumpB = pumpById('B');
const START = new Date('2025-01-01T10:00:00.000Z');
const APP_NAME = 'simulator-test';

interface StoredRow {
  field: string;
  id: number;
  tiempo: string;
  xid: number;
  valor: number;
  /** The inserting transaction's start (the column's DEFAULT now()). */
  txStart: number;
}

const cleanups: Array<() => Promise<void>> = [];

afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

function pumpById(id: string, from: PumpDefinition[] = allPumps): PumpDefinition {
  const pump = from.find((p) => p.id === id);
  if (!pump) throw new Error(`pump ${id} is not defined`);
  return pump;
}

function tableOf(pump: PumpDefinition, field: string): string {
  const sensor = pump.sensors.find((s) => s.field === field);
  if (!sensor) throw new Error(`pump ${pump.id} has no field ${field}`);
  return sensor.table;
}

const plant = loadDefinitions(profileDir('plant-2026-03'));
const plantA = pumpById('A', plant.pumps);
const plantB = pumpById('B', plant.pumps);

/**
 * A fresh database with every sensor table and trigger of a wiring (by default both seed pumps; the
 * profile's logbook tables too when given the profile), and a pool on it.
 */
async function freshPool(wiring: Parameters<typeof migrate>[1] = allPumps): Promise<pg.Pool> {
  const db = await createTestDatabase('simulator');
  const pool = createPool(db.config, APP_NAME, 8);
  cleanups.push(async () => {
    await pool.end();
    await db.drop();
  });
  const client = await pool.connect();
  try {
    await migrate(client, wiring);
  } finally {
    client.release();
  }
  return pool;
}

/** mulberry32: a small seeded generator, so a failing run can be replayed. */
function seeded(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

async function readRows(pool: pg.Pool, pump: PumpDefinition): Promise<StoredRow[]> {
  const out: StoredRow[] = [];
  for (const sensor of pump.sensors) {
    const { rows } = await pool.query<{
      id: number;
      tiempo_sensor: string;
      xid: string;
      valor_sensor: number;
      tiempo_ejecucion: Date;
    }>(
      `SELECT id, tiempo_sensor, xmin::text AS xid, valor_sensor, tiempo_ejecucion
         FROM ${quoteIdent(sensor.table)} ORDER BY id`,
    );
    for (const r of rows) {
      out.push({
        field: sensor.field,
        id: r.id,
        tiempo: r.tiempo_sensor,
        xid: Number(r.xid),
        valor: r.valor_sensor,
        txStart: r.tiempo_ejecucion.getTime(),
      });
    }
  }
  return out;
}

function byTiempo(rows: StoredRow[]): Map<string, StoredRow[]> {
  const groups = new Map<string, StoredRow[]>();
  for (const r of rows) {
    const group = groups.get(r.tiempo) ?? [];
    group.push(r);
    groups.set(r.tiempo, group);
  }
  return groups;
}

async function countTable(pool: pg.Pool, table: string): Promise<number> {
  const { rows } = await pool.query<{ n: number }>(`SELECT count(*)::int AS n FROM ${quoteIdent(table)}`);
  return rows[0]?.n ?? 0;
}

async function countRows(pool: pg.Pool, pumps: PumpDefinition[]): Promise<number> {
  let total = 0;
  for (const sensor of pumps.flatMap((p) => p.sensors)) total += await countTable(pool, sensor.table);
  return total;
}

function mean(values: number[]): number {
  return values.reduce((a, b) => a + b, 0) / values.length;
}

describe('formatTiempo', () => {
  it('keeps second resolution at one timestamp per second or slower, as the original data', () => {
    expect(formatTiempo(new Date('2025-01-01T10:00:00.000Z'), 1)).toBe('2025-01-01T10:00:00');
    expect(formatTiempo(new Date('2025-01-01T10:00:07.999Z'), 1)).toBe('2025-01-01T10:00:07');
    expect(formatTiempo(new Date('2025-01-01T10:00:00.500Z'), 0.5)).toBe('2025-01-01T10:00:00');
  });

  it('adds milliseconds above one timestamp per second, so keys stay unique', () => {
    expect(formatTiempo(new Date('2025-01-01T10:00:00.250Z'), 4)).toBe('2025-01-01T10:00:00.250');
    expect(formatTiempo(new Date('2025-01-01T10:00:00.000Z'), 20)).toBe('2025-01-01T10:00:00.000');
  });
});

describe('runSimulator options', () => {
  it('rejects a rate, probability or count out of range before touching the database', async () => {
    const pool = {} as pg.Pool;
    await expect(runSimulator({ pool, pumps: allPumps, rate: 0 })).rejects.toThrow(/rate/);
    await expect(runSimulator({ pool, pumps: allPumps, missingProbability: 1.5 })).rejects.toThrow(
      /missingProbability/,
    );
    await expect(runSimulator({ pool, pumps: allPumps, count: -1 })).rejects.toThrow(/count/);
  });
});

describe('runSimulator against PostgreSQL', { timeout: 30_000 }, () => {
  it('writes every sensor of every timestamp: 20 rows per A timestamp, 15 per B', async () => {
    const pool = await freshPool();
    const ticks: TickInfo[] = [];
    const began = performance.now();
    const result = await runSimulator({
      pool,
      pumps: allPumps,
      rate: 20,
      count: 10,
      startTime: START,
      onTick: (info) => ticks.push(info),
    });
    const elapsed = performance.now() - began;

    expect(result).toEqual({ timestamps: 20, rows: 350, missing: 0, late: 0, errors: 0, logbookEntries: 0 });
    // Paced by the wall clock: the tenth tick is due 450 ms after the first, even with a past start time.
    // A lower bound only: a loaded machine makes it later, never sooner (the bench measures speed).
    expect(elapsed).toBeGreaterThanOrEqual(440);
    for (const sensor of allPumps.flatMap((p) => p.sensors)) {
      expect(await countTable(pool, sensor.table), sensor.table).toBe(10);
    }
    expect(ticks.filter((t) => t.pump === 'A').map((t) => t.inserted)).toEqual(Array(10).fill(20));
    expect(ticks.filter((t) => t.pump === 'B').map((t) => t.inserted)).toEqual(Array(10).fill(15));
    expect(ticks[0]?.tiempo_sensor).toBe('2025-01-01T10:00:00.000');
    expect(ticks.at(-1)?.tiempo_sensor).toBe('2025-01-01T10:00:00.450');
  });

  it('writes each timestamp of a pump in one transaction, under one tiempo_sensor', async () => {
    const pool = await freshPool();
    await runSimulator({ pool, pumps: allPumps, rate: 20, count: 8, startTime: START });

    for (const pump of allPumps) {
      const groups = byTiempo(await readRows(pool, pump));
      expect(groups.size).toBe(8);
      const xids = new Set<number>();
      for (const [tiempo, rows] of groups) {
        expect(rows.map((r) => r.field).sort(), tiempo).toEqual(pump.sensors.map((s) => s.field).sort());
        const own = new Set(rows.map((r) => r.xid));
        expect(own.size, `${pump.id} ${tiempo}`).toBe(1);
        for (const xid of own) xids.add(xid);
      }
      expect(xids.size, `${pump.id}: one transaction per timestamp`).toBe(8);
    }
  });

  it('leaves readings out at random and reports exactly what it wrote', async () => {
    const pool = await freshPool();
    const ticks: TickInfo[] = [];
    const result = await runSimulator({
      pool,
      pumps: allPumps,
      rate: 20,
      count: 10,
      missingProbability: 0.3,
      random: seeded(42),
      startTime: START,
      onTick: (info) => ticks.push(info),
    });

    expect(result.missing).toBeGreaterThan(0);
    expect(result.rows + result.missing).toBe(350);
    expect(await countRows(pool, allPumps)).toBe(result.rows);
    for (const pump of allPumps) {
      const groups = byTiempo(await readRows(pool, pump));
      for (const tick of ticks.filter((t) => t.pump === pump.id)) {
        const present = (groups.get(tick.tiempo_sensor) ?? []).map((r) => r.field);
        const expected = pump.sensors.map((s) => s.field).filter((f) => !tick.missing.includes(f));
        expect(present.sort(), tick.tiempo_sensor).toEqual(expected.sort());
        expect(tick.inserted).toBe(present.length);
      }
    }

    const replay: TickInfo[] = [];
    await runSimulator({
      pool,
      pumps: allPumps,
      rate: 20,
      count: 10,
      missingProbability: 0.3,
      random: seeded(42),
      startTime: new Date(START.getTime() + 60_000),
      onTick: (info) => replay.push(info),
    });
    // Pumps write concurrently, so their callbacks interleave in any order; each pump's own order is fixed.
    for (const pump of allPumps) {
      const missingOf = (list: TickInfo[]) => list.filter((t) => t.pump === pump.id).map((t) => t.missing);
      expect(missingOf(replay), pump.id).toEqual(missingOf(ticks));
    }
  });

  it('writes late rows in a later transaction of their own, after their timestamp', async () => {
    const pool = await freshPool();
    const ticks: TickInfo[] = [];
    const result = await runSimulator({
      pool,
      pumps: allPumps,
      rate: 20,
      count: 40,
      lateProbability: 0.15,
      random: seeded(7),
      startTime: START,
      onTick: (info) => ticks.push(info),
    });

    expect(result.late).toBeGreaterThan(0);
    expect(result.errors).toBe(0);
    expect(result.rows).toBe(35 * 40);
    expect(await countRows(pool, allPumps)).toBe(35 * 40);

    let lateSeen = 0;
    let waitedMs = 0;
    for (const pump of allPumps) {
      const groups = byTiempo(await readRows(pool, pump));
      for (const tick of ticks.filter((t) => t.pump === pump.id)) {
        const rows = groups.get(tick.tiempo_sensor) ?? [];
        expect(rows).toHaveLength(pump.sensors.length);
        const first = Math.min(...rows.map((r) => r.xid));
        const main = rows.filter((r) => r.xid === first);
        const late = rows.filter((r) => r.xid !== first);
        expect(main.length, tick.tiempo_sensor).toBe(tick.inserted);
        // Each late row commits on its own, after its timestamp's others.
        expect(new Set(late.map((r) => r.xid)).size).toBe(late.length);
        for (const r of late) {
          const mainStart = main[0]?.txStart ?? 0;
          expect(r.txStart).toBeGreaterThanOrEqual(mainStart);
          expect(r.xid).toBeGreaterThan(main[0]?.xid ?? 0);
          waitedMs = Math.max(waitedMs, r.txStart - mainStart);
        }
        lateSeen += late.length;
      }
    }
    expect(lateSeen).toBe(result.late);
    // Rows still waiting when the run ends are flushed at once; the earlier ones waited their timers
    // (at least 0.5 s). No upper bound: how late a timer fires is the machine's, not the simulator's.
    expect(waitedMs).toBeGreaterThanOrEqual(450);
  });

  it('inserts consecutive timestamps in swapped order when asked', async () => {
    const pool = await freshPool();
    const result = await runSimulator({
      pool,
      pumps: [pumpB],
      rate: 20,
      count: 20,
      outOfOrderProbability: 0.3,
      random: seeded(3),
      startTime: START,
    });

    expect(result).toMatchObject({ timestamps: 20, rows: 15 * 20, errors: 0 });
    const rows = await readRows(pool, pumpB);
    const groups = byTiempo(rows);
    expect(groups.size).toBe(20);
    for (const [tiempo, group] of groups) expect(new Set(group.map((r) => r.xid)).size, tiempo).toBe(1);
    const inInsertOrder = rows.filter((r) => r.field === 'corriente_motor').map((r) => r.tiempo);
    expect(inInsertOrder).not.toEqual([...inInsertOrder].sort());
  });

  it("bearing-failure drives pump A's bearing temperature up while other fields stay nominal", async () => {
    const pool = await freshPool();
    await runSimulator({
      pool,
      pumps: [pumpA],
      rate: 50,
      count: 100,
      scenario: 'bearing-failure',
      driftSeconds: 2,
      random: seeded(11),
      startTime: START,
    });

    const rows = await readRows(pool, pumpA);
    const series = (field: string) => rows.filter((r) => r.field === field).map((r) => r.valor);
    const temp = series('temp_bomba');
    const current = series('corriente_motor');
    expect(temp).toHaveLength(100);
    expect(tableOf(pumpA, 'temp_bomba')).toBe('temperatura_descanso_interno_bomba_1a');
    // Nominal temp_bomba is 58 +- 1.2; the drift adds 8 std (9.6) by the end.
    expect(mean(temp.slice(-10)) - mean(temp.slice(0, 10))).toBeGreaterThan(6);
    expect(mean(series('temp_empuje').slice(-10))).toBeGreaterThan(63 + 5 * 1.3);
    // Nominal corriente_motor is 245 +- 6.
    expect(Math.abs(mean(current.slice(-10)) - mean(current.slice(0, 10)))).toBeLessThan(12);
  });

  it('keeps going when a write fails, and a failed timestamp leaves no partial rows', async () => {
    const pool = await freshPool();
    await pool.query(`DROP TABLE ${quoteIdent(tableOf(pumpB, 'voltaje_barra'))}`);
    const errors: Error[] = [];
    const result = await runSimulator({
      pool,
      pumps: allPumps,
      rate: 20,
      count: 10,
      startTime: START,
      onError: (err) => errors.push(err),
    });

    expect(result).toEqual({ timestamps: 10, rows: 200, missing: 0, late: 0, errors: 10, logbookEntries: 0 });
    expect(errors).toHaveLength(10);
    expect(errors[0]?.message).toMatch(/does not exist/);
    const survivingB = { ...pumpB, sensors: pumpB.sensors.filter((s) => s.field !== 'voltaje_barra') };
    expect(await countRows(pool, [survivingB])).toBe(0);
    expect(await countRows(pool, [pumpA])).toBe(200);
  });

  it('survives its connections being terminated mid-write and carries on at the next tick', async () => {
    const pool = await freshPool();
    // A slow trigger keeps each pump A write in flight for 100 ms, so the kills hit running statements.
    await pool.query(`
      CREATE FUNCTION slow_down() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN PERFORM pg_sleep(0.1); RETURN NEW; END $$;
      CREATE TRIGGER slow_down BEFORE INSERT ON ${quoteIdent(tableOf(pumpA, 'temp_bomba'))}
        FOR EACH ROW EXECUTE FUNCTION slow_down();`);
    const killer = await pool.connect();
    cleanups.push(async () => killer.release());
    const { rows: me } = await killer.query<{ pid: number }>('SELECT pg_backend_pid() AS pid');
    const errors: Error[] = [];
    const ticks: TickInfo[] = [];
    const run = runSimulator({
      pool,
      pumps: allPumps,
      rate: 20,
      count: 20,
      startTime: START,
      onTick: (info) => ticks.push(info),
      onError: (err) => errors.push(err),
    });
    for (const delay of [250, 400, 400]) {
      await new Promise((resolve) => setTimeout(resolve, delay));
      await killer.query(
        `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
          WHERE datname = current_database() AND application_name = $1 AND pid <> $2 AND state = 'active'`,
        [APP_NAME, me[0]?.pid],
      );
    }
    const result = await run;

    expect(result.errors).toBeGreaterThan(0);
    expect(result.errors).toBe(errors.length);
    // Every pump timestamp either committed or was reported; none was lost silently.
    expect(result.timestamps + result.errors).toBe(40);
    expect(result.rows).toBe(ticks.reduce((sum, t) => sum + t.inserted, 0));
    expect(await countRows(pool, allPumps)).toBe(result.rows);
    expect(ticks.filter((t) => t.pump === 'A').at(-1)?.tiempo_sensor).toBe('2025-01-01T10:00:00.950');
  });

  it("fires the tables' notifying triggers for every row", async () => {
    const pool = await freshPool();
    const listener = await pool.connect();
    cleanups.push(async () => listener.release());
    const payloads: Array<{ channel: string; tiempo_sensor: string }> = [];
    listener.on('notification', (msg) => {
      const body = JSON.parse(msg.payload ?? '{}') as { tiempo_sensor: string };
      payloads.push({ channel: msg.channel, tiempo_sensor: body.tiempo_sensor });
    });
    for (const sensor of allPumps.flatMap((p) => p.sensors)) {
      await listener.query(`LISTEN ${quoteIdent(sensor.channel)}`);
    }
    await runSimulator({ pool, pumps: allPumps, rate: 20, count: 3, startTime: START });
    await listener.query('SELECT 1');

    expect(payloads).toHaveLength(35 * 3);
    expect(new Set(payloads.map((p) => p.channel)).size).toBe(35);
    expect(new Set(payloads.map((p) => p.tiempo_sensor))).toEqual(
      new Set(['2025-01-01T10:00:00.000', '2025-01-01T10:00:00.050', '2025-01-01T10:00:00.100']),
    );
  });

  it('stops when the signal aborts, flushing late rows instead of waiting for them', async () => {
    const pool = await freshPool();
    await pool.query('SELECT 1'); // a connection made before the clock is frozen
    const controller = new AbortController();
    const ticks: TickInfo[] = [];
    // The simulator's timers do not run: its ticks are not paced (the first is due at once) and its late
    // rows' timers never fire. Late rows are then written only if the abort flushes them.
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    let result: Awaited<ReturnType<typeof runSimulator>>;
    try {
      result = await runSimulator({
        pool,
        pumps: allPumps,
        rate: 20,
        lateProbability: 0.5,
        random: seeded(9),
        signal: controller.signal,
        onTick: (info) => {
          ticks.push(info);
          if (ticks.length === allPumps.length) controller.abort();
        },
      });
    } finally {
      vi.useRealTimers();
    }
    // One tick per pump ran, and every row it held back as late was written at the abort.
    expect(result.timestamps).toBe(allPumps.length);
    const held = ticks.reduce((n, t) => n + pumpById(t.pump).sensors.length - t.inserted, 0);
    expect(held).toBeGreaterThan(0);
    expect(result.late).toBe(held);
    expect(result.rows).toBe(35);
    expect(await countRows(pool, allPumps)).toBe(35);
  });
});

describe('runSimulator with the plant-2026-03 profile', { timeout: 30_000 }, () => {
  const sharedTables = plantA.sensors
    .map((s) => s.table)
    .filter((t) => plantB.sensors.some((x) => x.table === t));

  it('writes a shared table once per timestamp, in the transaction of the first pump listing it', async () => {
    const pool = await freshPool(plant);
    const ticks: TickInfo[] = [];
    const result = await runSimulator({
      pool,
      pumps: plant.pumps,
      rate: 20,
      count: 10,
      startTime: START,
      onTick: (info) => ticks.push(info),
    });

    expect(sharedTables).toHaveLength(10);
    // 40 distinct tables: A writes its 25, B the 15 it does not share with A.
    expect(result).toEqual({ timestamps: 20, rows: 400, missing: 0, late: 0, errors: 0, logbookEntries: 0 });
    expect(ticks.filter((t) => t.pump === 'A').map((t) => t.inserted)).toEqual(Array(10).fill(25));
    expect(ticks.filter((t) => t.pump === 'B').map((t) => t.inserted)).toEqual(Array(10).fill(15));
    for (const { table } of distinctSensorTables(plant.pumps)) {
      expect(await countTable(pool, table), table).toBe(10);
    }
    // Pump A's rows of one timestamp, shared tables included, come from one transaction.
    const rowsA = byTiempo(await readRows(pool, plantA));
    for (const [tiempo, rows] of rowsA) {
      expect(rows, tiempo).toHaveLength(25);
      expect(new Set(rows.map((r) => r.xid)).size, tiempo).toBe(1);
    }
    // B's vector sees the same rows of the shared tables: 25 rows per timestamp, from two transactions.
    const rowsB = byTiempo(await readRows(pool, plantB));
    for (const [tiempo, rows] of rowsB) {
      expect(rows, tiempo).toHaveLength(25);
      expect(new Set(rows.map((r) => r.xid)).size, tiempo).toBe(2);
    }
  });

  it("draws a shared table's values around one nominal point that both pumps' fields agree with", async () => {
    const pool = await freshPool(plant);
    await runSimulator({
      pool,
      pumps: plant.pumps,
      rate: 50,
      count: 40,
      random: seeded(5),
      startTime: START,
    });
    const { rows } = await pool.query<{ m: number }>('SELECT avg(valor_sensor) AS m FROM presion_agua_b');
    // B's AP economiser pressure, which A reads as presion_agua_mp: 128 +- 2, not A's MP 31.
    expect(Math.abs(Number(rows[0]?.m) - 128)).toBeLessThan(2);
    // Both of B's tables for temperatura_agua_alim_ap get a row, so the engine sees two channels for one field.
    expect(await countTable(pool, 'temperatura_agua_alim_b')).toBe(40);
    expect(await countTable(pool, 'temperatura_agua_alim_ap_b')).toBe(40);
  });

  it('lets a pump simulated alone write every one of its tables', async () => {
    const pool = await freshPool(plant);
    const ticks: TickInfo[] = [];
    await runSimulator({
      pool,
      pumps: [plantB],
      rate: 20,
      count: 5,
      startTime: START,
      onTick: (t) => ticks.push(t),
    });
    expect(ticks.map((t) => t.inserted)).toEqual(Array(5).fill(25));
    expect(await countTable(pool, 'presion_agua_b')).toBe(5);
  });

  it('writes logbook entries on their own schedule, staggered per stream, in Spanish', async () => {
    const pool = await freshPool(plant);
    const entries: LogbookEntryInfo[] = [];
    const result = await runSimulator({
      pool,
      pumps: plant.pumps,
      logbooks: plant.logbooks,
      logbookEverySeconds: 0.5,
      rate: 20,
      count: 20,
      random: seeded(21),
      startTime: START,
      onLogbookEntry: (e) => entries.push(e),
    });

    // One simulated second: stream a at 0 and 0.5 s, stream b at 0.25 and 0.75 s.
    expect(result.logbookEntries).toBe(4);
    expect(result.errors).toBe(0);
    expect(entries.map((e) => e.tabla)).toEqual(['a', 'b', 'a', 'b']);
    const { rows } = await pool.query<{
      id: number;
      bitacora: string;
      bomba_activa: string;
      Fecha: Date;
      Hora: string;
      tiempo_ejecucion: Date;
      clasificacion: string | null;
    }>(
      `SELECT id, bitacora, bomba_activa, "Fecha", "Hora", tiempo_ejecucion, clasificacion
         FROM gm_bitacoras_b ORDER BY id`,
    );
    expect(rows).toHaveLength(2);
    expect(rows.map((r) => r.id)).toEqual(entries.filter((e) => e.tabla === 'b').map((e) => e.id));
    for (const r of rows) {
      expect(r.bomba_activa).toBe('B');
      expect(r.Hora).toBe('10:00');
      expect(r.bitacora.length).toBeGreaterThan(40);
      expect(r.bitacora).toMatch(/[áéíóúñ]|bomba|BAA/i);
      expect(r.clasificacion).toBeNull();
    }
    expect(rows.map((r) => r.bitacora)).toEqual(
      entries.filter((e) => e.tabla === 'b').map((e) => e.bitacora),
    );
  });

  it('rejects a logbook interval that is not positive', async () => {
    await expect(
      runSimulator({ pool: {} as pg.Pool, pumps: plant.pumps, logbookEverySeconds: 0 }),
    ).rejects.toThrow(/logbookEverySeconds/);
  });

  it("bearing-failure takes pump A's verdict through warning into alarm, as the reference backend scores it", async () => {
    const pool = await freshPool();
    await runSimulator({
      pool,
      pumps: [pumpA],
      rate: 50,
      count: 200,
      scenario: 'bearing-failure',
      driftSeconds: 3,
      random: seeded(23),
      startTime: START,
    });
    // Each timestamp's vector, in order, scored as the reference backend scores it.
    const byTiempo = new Map<string, Record<string, number>>();
    for (const r of await readRows(pool, pumpA)) {
      const v = byTiempo.get(r.tiempo) ?? {};
      v[r.field] = r.valor;
      byTiempo.set(r.tiempo, v);
    }
    const health = new PumpHealth(pumpA.health, 0);
    const states: string[] = [health.state];
    [...byTiempo.keys()].sort().forEach((tiempo, i) => {
      const t = health.answer(failureProbability(byTiempo.get(tiempo) ?? {}), (i + 1) * 1000);
      if (t) states.push(t.to);
    });
    expect(states).toEqual(['unknown', 'normal', 'warning', 'alarm']);
  });

  it('silent-sensor stops one table after silentAfterSeconds; on the March-2026 wiring a shared one', async () => {
    expect(silentSensorTable(allPumps)).toBe('temperatura_ambiental');
    expect(silentSensorTable(plant.pumps)).toBe('presion_agua_alimentacion_econ_ap');
    for (const [wiring, pumps] of [
      [allPumps, allPumps],
      [plant, plant.pumps],
    ] as const) {
      const pool = await freshPool(wiring);
      const silent = silentSensorTable(pumps);
      const result = await runSimulator({
        pool,
        pumps,
        rate: 10,
        count: 30,
        scenario: 'silent-sensor',
        silentAfterSeconds: 1,
        startTime: START,
      });
      expect(result.errors).toBe(0);
      const count = async (table: string) =>
        (await pool.query<{ n: number }>(`SELECT count(*)::int AS n FROM ${quoteIdent(table)}`)).rows[0]?.n;
      // Simulated seconds 0.0 .. 0.9 are written, then nothing; every other table has all 30.
      expect(await count(silent)).toBe(10);
      for (const other of distinctSensorTables(pumps)
        .filter((t) => t.table !== silent)
        .slice(0, 5)) {
        expect(await count(other.table)).toBe(30);
      }
    }
    await expect(
      runSimulator({ pool: {} as pg.Pool, pumps: allPumps, scenario: 'silent-sensor', silentTable: 'nope' }),
    ).rejects.toThrow(/silentTable/);
  });
});
