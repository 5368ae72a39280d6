import type pg from 'pg';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { PumpConfig } from '../../src/config/env.js';
import { CheckpointKeeper } from '../../src/ledger/checkpoint-keeper.js';
import type { Ticket } from '../../src/model/reading.js';
import { catchUp } from '../../src/source/catch-up.js';
import { createPool, quoteIdent } from '../../src/store/db.js';
import { ensureEngineSchema, sensorTableDdl } from '../../src/store/schema.js';
import type { SensorRow } from '../../src/store/sensor-rows.js';
import { createTestDatabase, type TestDatabase } from '../helpers/db.js';

/**
 * The catch-up's bulk hand-over against a real table and a real ledger (CheckpointKeeper): rows are read in
 * batches of one statement a round and handed over a table's batch at a time. Whatever the rounds, a
 * reader's checkpoint never passes a row whose parts are not all settled, and a table hands over at most
 * one row per key text a round.
 */

let db: TestDatabase;
let pool: pg.Pool;
const TABLES = ['cu_rounds_a', 'cu_rounds_b', 'cu_rounds_c'];
const PUMP = 'P';

beforeAll(async () => {
  db = await createTestDatabase('catchup_rounds');
  pool = createPool(db.config, 'catch-up-rounds-test', 3);
  const client = await pool.connect();
  try {
    await ensureEngineSchema(client);
    for (const t of TABLES) await client.query(sensorTableDdl(t));
  } finally {
    client.release();
  }
});

afterAll(async () => {
  await pool?.end();
  await db?.drop();
});

/** `HH:MM` keys over three days: each comes back twice, so rows of one key text lie far apart by id. */
const KEYS = ['23:58', '23:59', '00:00', '00:01'];
const DAYS = 4;

/**
 * A ledger of these tables' readers, loaded (checkpoints at 0 for empty tables, every reader held until a
 * catch-up has read it), and the pump that reads them (catch-up needs only its id and its sensors' tables
 * and channels).
 */
async function readersOf(tables: string[]) {
  const readers = tables.map((table) => ({ pump: PUMP, table }));
  const keeper = new CheckpointKeeper({
    pool,
    logger: pino({ level: 'silent' }),
    everyMs: 3_600_000,
    ownedReaders: () => readers,
    horizon: async () => undefined,
  });
  await keeper.load(pool, readers);
  const pump = {
    id: PUMP,
    sensors: tables.map((table) => ({ table, channel: `canal_${table}` })),
  } as unknown as PumpConfig;
  return { keeper, pump };
}

/** The keeper's catch-up rounds, with `finished(table)` called right after each round's finish(). */
function rounds(keeper: CheckpointKeeper, finished: (table: string) => void) {
  return {
    beginCatchUp: (p: string, table: string) => {
      const round = keeper.beginCatchUp(p, table);
      return {
        from: round.from,
        finish: () => {
          round.finish();
          finished(table);
        },
      };
    },
  };
}

describe('catch-up rounds', () => {
  it('never lets a checkpoint pass an unsettled part, and hands one row per key text and table a round', async () => {
    // Loaded before the rows exist: the checkpoints start at 0, and every reader is held until caught up.
    const { keeper, pump } = await readersOf(TABLES);
    const ids = new Map<string, number[]>();
    for (const [k, t] of TABLES.entries()) {
      const tiempos: string[] = [];
      for (let d = 0; d < DAYS; d++) {
        // Table b misses a key a day, so a batch of it spans more time than the others' and holds a key twice.
        for (const [i, key] of KEYS.entries()) if (!(k === 1 && i === 2)) tiempos.push(key);
      }
      // Table a ends with a reading corrected twice: three rows of one key text, handed a round apart, so the
      // table is read to its end while rows of it still wait in its buffer.
      if (k === 0) tiempos.push('00:02', '00:02', '00:02');
      const { rows } = await pool.query<{ id: number }>(
        `INSERT INTO ${quoteIdent(t)} (tiempo_sensor, valor_sensor)
         SELECT x, 1 FROM unnest($1::text[]) WITH ORDINALITY AS u(x, n) ORDER BY n RETURNING id`,
        [tiempos],
      );
      ids.set(
        t,
        rows.map((r) => r.id),
      );
    }
    // The newest row of each table arrived by notification and is settled: the reader has seen past
    // every row the catch-up is about to read.
    const notified = new Map<string, number>();
    for (const t of TABLES) {
      const { rows } = await pool.query<{ id: number }>(
        `INSERT INTO ${quoteIdent(t)} (tiempo_sensor, valor_sensor) VALUES ('00:03', 1) RETURNING id`,
      );
      const id = rows[0]?.id as number;
      keeper.begin(PUMP, t, id, ['group'])?.settle('group');
      notified.set(t, id);
    }

    /** Rows whose every part is settled, by table. */
    const settled = new Map<string, Set<number>>(
      TABLES.map((t) => [t, new Set([notified.get(t) as number])]),
    );
    const handed = new Map<string, number[]>(TABLES.map((t) => [t, []]));
    const owing: { table: string; id: number; ticket: Ticket }[] = [];
    const violations: string[] = [];
    /** Every id at or below the reader's checkpoint must be settled. */
    const check = (table: string, when: string) => {
      for (const id of [...(ids.get(table) as number[]), notified.get(table) as number]) {
        if (keeper.settledThrough(PUMP, table, id) && !settled.get(table)?.has(id))
          violations.push(`${when}: the checkpoint of ${table} passed row ${id}, not settled`);
      }
    };
    const total = await catchUp({
      pool,
      pumps: [pump],
      ledger: rounds(keeper, (table) => check(table, 'when its round finished')),
      batch: 3,
      handle: (channel, rows: readonly SensorRow[], p) => {
        const table = channel.replace(/^canal_/, '');
        const keys = rows.map((r) => r.t);
        if (new Set(keys).size !== keys.length)
          violations.push(`${table} handed ${keys.join(',')} in one round: a key text twice`);
        for (const r of rows) {
          handed.get(table)?.push(r.id);
          const ticket = keeper.begin(p, table, r.id, ['group', 'post']);
          if (!ticket) continue; // the notified row, settled already
          ticket.settle('group');
          // Every fifth row's post is still out when the round goes on, but table a's: its checkpoint is held
          // by the catch-up's hold alone, which must not be lifted while a row read is not yet handed over.
          if (r.id % 5 === 0 && table !== TABLES[0]) owing.push({ table, id: r.id, ticket });
          else {
            ticket.settle('post');
            settled.get(table)?.add(r.id);
          }
        }
        check(table, 'after a batch');
      },
      capacity: async () => {},
      signal: new AbortController().signal,
    });

    expect(violations).toEqual([]);
    for (const t of TABLES) {
      // Every row once, in id order, the notified one included (the ledger knows it).
      expect(handed.get(t)).toEqual([...(ids.get(t) as number[]), notified.get(t)]);
      const owed = owing.filter((o) => o.table === t).map((o) => o.id);
      const first = owed.length > 0 ? Math.min(...owed) : (notified.get(t) as number) + 1;
      expect(keeper.settledThrough(PUMP, t, first - 1)).toBe(true);
      if (owed.length > 0) expect(keeper.settledThrough(PUMP, t, first)).toBe(false);
    }
    expect(total).toBe([...handed.values()].reduce((n, h) => n + h.length, 0));
    // The posts come back: every checkpoint reaches the newest row.
    for (const o of owing) {
      o.ticket.settle('post');
      settled.get(o.table)?.add(o.id);
    }
    for (const t of TABLES) expect(keeper.settledThrough(PUMP, t, notified.get(t) as number)).toBe(true);
  });

  it('hands a large round over in slices, with turns of the event loop between; a stop mid-round lifts no hold', async () => {
    const tables = ['cu_slices_a', 'cu_slices_b'];
    for (const t of tables) await pool.query(sensorTableDdl(t));
    const { keeper, pump } = await readersOf(tables);
    const ROWS = 700;
    const tiempos = Array.from({ length: ROWS }, (_, i) =>
      new Date(Date.UTC(2025, 5, 1) + i * 1_000).toISOString().slice(0, 19),
    );
    for (const t of tables) {
      await pool.query(
        `INSERT INTO ${quoteIdent(t)} (tiempo_sensor, valor_sensor)
         SELECT x, 1 FROM unnest($1::text[]) WITH ORDINALITY AS u(x, n) ORDER BY n`,
        [tiempos],
      );
      // The newest row came by notification and is settled: the reader has seen past the backlog.
      const { rows } = await pool.query<{ id: number }>(
        `INSERT INTO ${quoteIdent(t)} (tiempo_sensor, valor_sensor) VALUES ('2030-01-01T00:00:00', 1) RETURNING id`,
      );
      keeper.begin(PUMP, t, rows[0]?.id as number, ['group'])?.settle('group');
    }
    const run = async (stopAfter: number | undefined) => {
      const controller = new AbortController();
      let handed = 0;
      let largest = 0;
      let turnAt: number | undefined;
      const finished: string[] = [];
      const total = await catchUp({
        pool,
        pumps: [pump],
        ledger: rounds(keeper, (table) => finished.push(table)),
        batch: 600,
        handle: (channel, rows, p) => {
          const table = channel.replace(/^canal_/, '');
          // The event loop's next turn: it must come while the round's rows are still being handed over.
          if (handed === 0) setImmediate(() => (turnAt ??= handed));
          largest = Math.max(largest, rows.length);
          for (const r of rows) keeper.begin(p, table, r.id, ['group'])?.settle('group');
          handed += rows.length;
          if (stopAfter !== undefined && handed >= stopAfter) controller.abort();
        },
        capacity: async () => {},
        signal: controller.signal,
      });
      return { total, handed, largest, turnAt, finished };
    };

    // Stopped mid-round: the rows handed are begun, the rest are not, and no reader's hold is lifted.
    const stopped = await run(300);
    expect(stopped.handed).toBeLessThan(2 * 600);
    expect(stopped.finished).toEqual([]);
    for (const t of tables) expect(keeper.settledThrough(PUMP, t, 1)).toBe(false);

    // Run to the end: the first round (600 rows of each table) goes in slices with turns between them.
    const whole = await run(undefined);
    expect(whole.largest).toBeLessThanOrEqual(256);
    expect(whole.turnAt).toBeDefined();
    expect(whole.turnAt as number).toBeLessThan(2 * 600);
    expect(whole.finished.sort()).toEqual(tables);
    for (const t of tables) expect(keeper.settledThrough(PUMP, t, ROWS + 1)).toBe(true);
  });
});
