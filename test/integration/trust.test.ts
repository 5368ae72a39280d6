import { Writable } from 'node:stream';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { PumpConfig } from '../../src/config/env.js';
import { runDiagnostics } from '../../src/operate/diagnose/index.js';
import { quoteIdent } from '../../src/store/db.js';
import { ENGINE_SCHEMA } from '../../src/store/schema.js';
import { type Harness, harness, insertTimestamp, onReplication } from '../helpers/engine.js';
import { expectExactlyOnce } from '../helpers/ledger.js';
import { waitFor } from '../helpers/wait.js';

/**
 * A notification is a claim, the row is the truth (issue 19). Every test here plays a hostile or broken
 * plant: a NOTIFY that anyone may send, naming a row that does not exist yet, an old row, or a row with
 * other values, and an installation whose checkpoint an earlier version let such an id carry past its
 * table. Each checks what is posted against the rows, across restarts.
 */

const FORGED_BIG = 1_000_000_000;

async function notify(h: Harness, channel: string, payload: unknown): Promise<void> {
  await h.admin.query('SELECT pg_notify($1, $2)', [channel, JSON.stringify(payload)]);
}

async function deadLetters(h: Harness, reason: string): Promise<{ channel: string; payload: string }[]> {
  const { rows } = await h.admin.query<{ channel: string; payload: string }>(
    `SELECT channel, payload FROM ${ENGINE_SCHEMA}.dead_letters WHERE reason LIKE $1 ORDER BY id`,
    [`${reason}%`],
  );
  return rows;
}

async function checkpoint(h: Harness, pump: string, table: string): Promise<number> {
  const { rows } = await h.admin.query<{ last_id: string }>(
    `SELECT last_id FROM ${ENGINE_SCHEMA}.checkpoints WHERE table_name = $1 AND pump = $2`,
    [table, pump],
  );
  return Number(rows[0]?.last_id);
}

async function lastId(h: Harness, table: string): Promise<number> {
  const { rows } = await h.admin.query<{ m: string | null }>(`SELECT max(id) AS m FROM ${quoteIdent(table)}`);
  return Number(rows[0]?.m ?? 0);
}

/** A row inserted with the plant's triggers off: it exists, and no notification names it. */
async function silentRow(h: Harness, table: string, tiempo: string, valor: number): Promise<number> {
  const c = await h.admin.connect();
  try {
    await c.query('BEGIN');
    await c.query('SET LOCAL session_replication_role = replica');
    const { rows } = await c.query<{ id: number }>(
      `INSERT INTO ${quoteIdent(table)} (tiempo_sensor, valor_sensor) VALUES ($1, $2) RETURNING id`,
      [tiempo, valor],
    );
    await c.query('COMMIT');
    return rows[0]?.id as number;
  } finally {
    c.release();
  }
}

const postsOf = (h: Harness, key: string) => h.backend.requests.filter((r) => r.idempotencyKey === key);

// Forged notifications: on the replication source no notification is read (docs/replication.md).
describe.skipIf(onReplication)('the row is the truth: forged notifications on the default wiring', () => {
  let h: Harness;
  let A: PumpConfig;
  let table: string;
  let channel: string;
  const warnings: Record<string, unknown>[] = [];
  const logger = () =>
    pino(
      { level: 'warn' },
      new Writable({
        write(chunk, _e, done) {
          for (const line of chunk.toString('utf8').split('\n')) if (line) warnings.push(JSON.parse(line));
          done();
        },
      }),
    );

  beforeAll(async () => {
    h = await harness('trust');
    A = h.pumps.A;
    table = A.sensors[0]?.table as string;
    channel = A.sensors[0]?.channel as string;
    await h.startMonitor({}, { logger: logger() });
  });

  afterAll(async () => {
    await h?.close();
  });

  it('never lets a forged id move a checkpoint, shadow the next row, or post an old row again; across restarts', async () => {
    await insertTimestamp(h.admin, A, '2026-03-01T08:00:00');
    expectExactlyOnce(await h.ledger().settle({ admin: h.admin, monitors: [h.monitor], timeoutMs: 30_000 }));
    const old = await lastId(h, table);
    const future = old + 1;

    // 1. An id far past the table; 2. the id the next real row will get, with another value;
    // 3. an old, delivered row, with another value.
    await notify(h, channel, { id_sensor: FORGED_BIG, valor: 26.0, tiempo_sensor: 'x' });
    await notify(h, channel, { id_sensor: future, valor: 999.5, tiempo_sensor: '2026-03-01T09:00:00' });
    await notify(h, channel, { id_sensor: old, valor: 12345, tiempo_sensor: '2026-03-01T08:00:00' });
    await waitFor('two no-such-row letters', async () => (await deadLetters(h, 'no_such_row')).length === 2);
    await waitFor('one mismatch letter', async () => (await deadLetters(h, 'payload_mismatch')).length === 1);
    await h.monitor.stop(5_000);

    // The checkpoint stayed within the rows read.
    expect(await checkpoint(h, 'A', table)).toBeLessThanOrEqual(old);
    // Nothing was posted with a forged value, and the old row was not posted again.
    const forged = h.backend.requests.filter((r) => r.body.valor === 999.5 || r.body.valor === 12345);
    expect(forged).toEqual([]);
    expect(postsOf(h, `rd-${table}-${old}`)).toHaveLength(1);

    // Rows written while the engine is stopped: the real row `future` among them.
    const ids = await insertTimestamp(h.admin, A, '2026-03-01T09:00:00', { value: () => 41.25 });
    expect(ids[0]).toBe(future);
    await h.startMonitor({}, { logger: logger() });
    const c = await h.ledger().settle({ admin: h.admin, monitors: [h.monitor], timeoutMs: 30_000 });
    expectExactlyOnce(c);
    const real = postsOf(h, `rd-${table}-${future}`);
    expect(real).toHaveLength(1);
    expect(real[0]?.body.valor).toBe(41.25);
    const vectors = h.backend
      .answered('/sensores/predecir-bomba')
      .filter((r) => r.body[A.sensors[0]?.field as string] === 41.25);
    expect(vectors).toHaveLength(1);
  });

  it('posts the row, not the payload, when a notification disagrees with the row it names', async () => {
    const id = await silentRow(h, table, '2026-03-01T10:00:00', 7.5);
    await notify(h, channel, { id_sensor: id, valor: 70.5, tiempo_sensor: '2026-03-01T10:00:00' });
    await waitFor('posted', () => postsOf(h, `rd-${table}-${id}`).length === 1);
    expect(postsOf(h, `rd-${table}-${id}`)[0]?.body).toMatchObject({ id_sensor: id, valor: 7.5 });
    await waitFor('the mismatch on record', async () =>
      (await deadLetters(h, 'payload_mismatch')).some((l) => JSON.parse(l.payload).valor === 70.5),
    );
  });

  it('brings back a checkpoint an earlier version left past its table, with one line, and reads what it skipped', async () => {
    await h.monitor.stop(5_000);
    const delivered = await lastId(h, table);
    // What the old engine left after a forged NOTIFY: the checkpoint far past the table's last row.
    await h.admin.query(
      `UPDATE ${ENGINE_SCHEMA}.checkpoints SET last_id = $3 WHERE table_name = $1 AND pump = $2`,
      [table, 'A', FORGED_BIG],
    );
    const ids = await insertTimestamp(h.admin, A, '2026-03-01T11:00:00', { value: () => 3.75 });
    // diagnose names it before the engine starts.
    const before = (await runDiagnostics(h.config)).find((c) => c.name === 'checkpoints');
    expect(before).toMatchObject({ ok: false });
    expect(before?.detail).toContain(`${table} (A) at ${FORGED_BIG}`);
    warnings.length = 0;
    await h.startMonitor({}, { logger: logger() });
    const repaired = warnings.filter((w) => String(w.msg).includes("past the table's last row"));
    expect(repaired).toHaveLength(1);
    expect(repaired[0]).toMatchObject({ pump: 'A', table, was: FORGED_BIG, now: delivered });
    expectExactlyOnce(await h.ledger().settle({ admin: h.admin, monitors: [h.monitor], timeoutMs: 30_000 }));
    expect(postsOf(h, `rd-${table}-${ids[0]}`)).toHaveLength(1);
    expect(await checkpoint(h, 'A', table)).toBeLessThanOrEqual(await lastId(h, table));
    const after = (await runDiagnostics(h.config)).find((c) => c.name === 'checkpoints');
    expect(after).toMatchObject({ ok: true });
  });

  it('holds the checkpoint for a garbled notification on a known channel, and catches up the row behind it', async () => {
    // A truncated payload names no id: the row behind it is read by a catch-up, never skipped.
    const id = await silentRow(h, table, '2026-03-01T12:00:00', 5.25);
    await h.admin.query('SELECT pg_notify($1, $2)', [channel, `{"id_sensor": ${id}, "valor": 5.2`]);
    await waitFor('posted by the catch-up', () => postsOf(h, `rd-${table}-${id}`).length === 1, 20_000);
    expect(postsOf(h, `rd-${table}-${id}`)[0]?.body).toMatchObject({ valor: 5.25 });
  });
});

describe.skipIf(onReplication)(
  'the row is the truth: the logbook stream and shared tables of plant-2026-03',
  () => {
    let h: Harness;

    beforeAll(async () => {
      h = await harness('trustplant', { PUMPS_PROFILE: 'plant-2026-03' });
      await h.startMonitor();
      await waitFor('every pump and the logbook owned', () => {
        const s = h.monitor.status() as unknown as { logbooks: Record<string, { owned: boolean }> };
        return s.logbooks.bitacoras?.owned === true && h.monitor.units.snapshot.owned().length === 3;
      });
    });

    afterAll(async () => {
      await h?.close();
    });

    async function entry(table: string, text: string, silent = false): Promise<number> {
      const c = await h.admin.connect();
      try {
        await c.query('BEGIN');
        if (silent) await c.query('SET LOCAL session_replication_role = replica');
        const { rows } = await c.query<{ id: number }>(
          `INSERT INTO ${table} (bitacora, tiempo_ejecucion) VALUES ($1, now()) RETURNING id`,
          [text],
        );
        await c.query('COMMIT');
        return rows[0]?.id as number;
      } finally {
        c.release();
      }
    }

    it('sends a logbook row as it is stored, never a forged id or text; checkpoints stay within the table', async () => {
      await notify(h, 'canal_gm_bitacora_a', { id: FORGED_BIG, bitacora: 'falsa' });
      const quiet = await entry('gm_bitacoras_a', 'Texto real de la bitácora', true);
      await notify(h, 'canal_gm_bitacora_a', { id: quiet, bitacora: 'Texto falsificado' });
      await waitFor('posted', () => postsOf(h, `lb-gm_bitacoras_a-${quiet}`).length === 1);
      expect(postsOf(h, `lb-gm_bitacoras_a-${quiet}`)[0]?.body).toEqual({
        id: quiet,
        bitacora: 'Texto real de la bitácora',
        tabla: 'a',
      });
      await waitFor('both letters', async () => {
        const { rows } = await h.admin.query(
          `SELECT reason FROM ${ENGINE_SCHEMA}.dead_letters WHERE pump = 'bitacoras' AND kind = 'notification'`,
        );
        return rows.length === 2;
      });
      expect(
        h.backend.requests.filter((r) => r.body.bitacora === 'falsa' || r.body.id === FORGED_BIG),
      ).toEqual([]);
      // A row written next is not lost behind the forged id, even across a restart.
      await h.monitor.stop(5_000);
      expect(await checkpoint(h, 'bitacoras', 'gm_bitacoras_a')).toBeLessThanOrEqual(quiet);
      const next = await entry('gm_bitacoras_a', 'Escrita con el motor detenido');
      await h.startMonitor();
      await waitFor(
        'the next entry posted',
        () => postsOf(h, `lb-gm_bitacoras_a-${next}`).length === 1,
        20_000,
      );
    });

    it('keeps both readers of a shared table within its rows when a forged id comes on its channel', async () => {
      const shared = h.pumps.A.sensors.find((s) => h.pumps.B.sensors.some((b) => b.table === s.table));
      expect(shared).toBeDefined();
      const t = shared?.table as string;
      await notify(h, shared?.channel as string, { id_sensor: FORGED_BIG, valor: 1, tiempo_sensor: 'x' });
      await waitFor('the letter', async () => {
        const { rows } = await h.admin.query(
          `SELECT 1 FROM ${ENGINE_SCHEMA}.dead_letters WHERE channel = $1 AND reason LIKE 'no_such_row%'`,
          [shared?.channel],
        );
        return rows.length === 1;
      });
      const id = await silentRow(h, t, '2026-03-02T10:00:00', 2.5);
      await notify(h, shared?.channel as string, {
        id_sensor: id,
        valor: 2.5,
        tiempo_sensor: '2026-03-02T10:00:00',
      });
      await waitFor(
        'posted to both pumps',
        () => postsOf(h, `rd-A-${t}-${id}`).length === 1 && postsOf(h, `rd-B-${t}-${id}`).length === 1,
      );
      await h.monitor.stop(5_000);
      for (const pump of ['A', 'B'])
        expect(await checkpoint(h, pump, t)).toBeLessThanOrEqual(await lastId(h, t));
    });
  },
);
