import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { distinctSensorTables, loadDefinitions, profileDir } from '../../src/config/pumps.js';
import { clientConfig, createPool, quoteIdent } from '../../src/store/db.js';
import { migrate, NOTIFY_PAYLOAD_LIMIT, TRIGGER_NAME } from '../../src/store/schema.js';
import { createTestDatabase, type TestDatabase } from '../helpers/db.js';
import { pause, waitFor } from '../helpers/wait.js';

/** migrate for the plant-2026-03 profile against the real (embedded) PostgreSQL. */

const plant = loadDefinitions(profileDir('plant-2026-03'));
const sensorTables = distinctSensorTables(plant.pumps);
const streams = plant.logbooks.flatMap((l) => l.streams);

let db: TestDatabase;
let pool: pg.Pool;
let listener: pg.Client;
const received: pg.Notification[] = [];

beforeAll(async () => {
  db = await createTestDatabase('plant_migrate');
  pool = createPool(db.config, 'plant-migrate-test', 4);
  const client = await pool.connect();
  try {
    await migrate(client, plant);
    // Twice: tables are kept and triggers replaced, never doubled.
    const again = await migrate(client, plant);
    expect(again).toEqual({ tables: 42, sensorTables: 40, logbookTables: 2 });
  } finally {
    client.release();
  }
  listener = new pg.Client(clientConfig(db.config, 'plant-migrate-listener'));
  await listener.connect();
  listener.on('notification', (n) => received.push(n));
  for (const channel of [...streams.map((s) => s.channel), 'canal_presion_agua_b']) {
    await listener.query(`LISTEN ${quoteIdent(channel)}`);
  }
});

afterAll(async () => {
  await listener?.end();
  await pool?.end();
  await db?.drop();
});

/** Waits for the next notification on `channel` and takes it off the list. */
async function next(channel: string): Promise<pg.Notification> {
  await waitFor(`a notification on ${channel}`, () => received.some((n) => n.channel === channel), 10_000);
  const i = received.findIndex((n) => n.channel === channel);
  return received.splice(i, 1)[0] as pg.Notification;
}

async function insertEntry(table: string, bitacora: string): Promise<number> {
  const { rows } = await pool.query<{ id: number }>(
    `INSERT INTO ${quoteIdent(table)} (tiempo_ejecucion, bitacora, bomba_activa, "Fecha", "Hora")
     VALUES (now(), $1, 'A', current_date, '08:15') RETURNING id`,
    [bitacora],
  );
  return rows[0]?.id as number;
}

describe('migrate with the plant-2026-03 profile', () => {
  it('creates the 40 sensor tables and 2 logbook tables, one trigger each, shared tables once', async () => {
    const { rows } = await pool.query<{ table: string; n: number; args: string }>(
      `SELECT c.relname AS table, count(*)::int AS n,
              string_agg(encode(t.tgargs, 'escape'), ',') AS args
         FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
        WHERE NOT t.tgisinternal AND t.tgname = $1
        GROUP BY c.relname`,
      [TRIGGER_NAME],
    );
    const byTable = new Map(rows.map((r) => [r.table, r]));
    expect(rows).toHaveLength(42);
    for (const { table, channel } of sensorTables) {
      expect(byTable.get(table)?.n, table).toBe(1);
      // tgargs holds each argument followed by a NUL byte.
      expect(byTable.get(table)?.args.replace(/\\000$/, ''), table).toBe(channel);
    }
    for (const s of streams) expect(byTable.get(s.table)?.n, s.table).toBe(1);
    const { rows: total } = await pool.query<{ n: number }>(
      'SELECT count(*)::int AS n FROM pg_trigger WHERE NOT tgisinternal',
    );
    expect(total[0]?.n).toBe(42);
  });

  it('gives the logbook tables the plant columns, quoted capitalised names included', async () => {
    const { rows } = await pool.query<{ column_name: string; data_type: string; column_default: string }>(
      `SELECT column_name, data_type, column_default FROM information_schema.columns
        WHERE table_name = 'gm_bitacoras_b' ORDER BY ordinal_position`,
    );
    expect(rows.map((r) => r.column_name)).toEqual([
      'id',
      'tiempo_ejecucion',
      'bitacora',
      'clasificacion',
      'alerta_aviso',
      'bomba_activa',
      'Fecha',
      'Hora',
      'Observaciones',
      'categoria',
      'prioridad',
      'procesado_llm',
      'fecha_procesado',
      'resumen_llm',
    ]);
    const fecha = rows.find((r) => r.column_name === 'Fecha');
    expect(fecha?.data_type).toBe('date');
    expect(rows.find((r) => r.column_name === 'prioridad')?.column_default).toContain("'MEDIA'");
  });

  it('notifies one row of a shared table once, on its one channel', async () => {
    received.length = 0;
    const { rows } = await pool.query<{ id: number }>(
      `INSERT INTO presion_agua_b (tiempo_sensor, valor_sensor) VALUES ('2026-03-02T10:00:00', 128.5) RETURNING id`,
    );
    const n = await next('canal_presion_agua_b');
    expect(JSON.parse(n.payload ?? '')).toEqual({
      id_sensor: rows[0]?.id,
      valor: 128.5,
      tiempo_sensor: '2026-03-02T10:00:00',
    });
    await pause(300);
    expect(received.filter((x) => x.channel === 'canal_presion_agua_b')).toEqual([]);
  });

  it('notifies {id, bitacora} on INSERT and when the entry is edited, never on the write-back', async () => {
    received.length = 0;
    const text = 'Ronda 08:00: bomba A en servicio, presión de succión normal, sin fugas.';
    const id = await insertEntry('gm_bitacoras_a', text);
    const inserted = await next('canal_gm_bitacora_a');
    expect(JSON.parse(inserted.payload ?? '')).toEqual({ id, bitacora: text });

    // The backend's write-back, then the same text written again: neither notifies.
    await pool.query(
      `UPDATE gm_bitacoras_a SET clasificacion = 'Rutina', alerta_aviso = NULL, procesado_llm = true
        WHERE id = $1`,
      [id],
    );
    await pool.query('UPDATE gm_bitacoras_a SET bitacora = bitacora WHERE id = $1', [id]);
    // An edit of the entry does notify; it commits after the updates above, so its notification comes
    // after any they would have sent.
    const edited = `${text} Corrección: sello con goteo leve.`;
    await pool.query('UPDATE gm_bitacoras_a SET bitacora = $2 WHERE id = $1', [id, edited]);
    const afterEdit = await next('canal_gm_bitacora_a');
    expect(JSON.parse(afterEdit.payload ?? '')).toEqual({ id, bitacora: edited });
    await pause(300);
    expect(received).toEqual([]);
  });

  it('sends the text while the payload fits, and only the id once it would reach 8000 bytes', async () => {
    received.length = 0;
    const fits = 'x'.repeat(7_900);
    const fitsId = await insertEntry('gm_bitacoras_b', fits);
    const whole = await next('canal_gm_bitacora_b');
    expect(JSON.parse(whole.payload ?? '')).toEqual({ id: fitsId, bitacora: fits });
    expect(Buffer.byteLength(whole.payload ?? '')).toBeLessThan(NOTIFY_PAYLOAD_LIMIT);

    // 4,000 characters but 8,000 bytes: the limit is in bytes.
    const long = 'ñ'.repeat(4_000);
    const longId = await insertEntry('gm_bitacoras_b', long);
    const idOnly = await next('canal_gm_bitacora_b');
    expect(JSON.parse(idOnly.payload ?? '')).toEqual({ id: longId });
    const { rows } = await pool.query<{ bitacora: string }>(
      'SELECT bitacora FROM gm_bitacoras_b WHERE id = $1',
      [longId],
    );
    expect(rows[0]?.bitacora).toBe(long);
  });
});
