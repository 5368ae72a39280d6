import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CheckpointKeeper } from '../../src/ledger/checkpoint-keeper.js';
import { quoteIdent } from '../../src/store/db.js';
import { ENGINE_SCHEMA } from '../../src/store/schema.js';
import { type Harness, harness } from '../helpers/engine.js';
import { type PrivateServer, startPrivateServer } from '../helpers/private-server.js';
import { waitFor } from '../helpers/wait.js';

/**
 * The timed checkpoint writes are capped, the readers taking turns, so that a replica with thousands of
 * readers does not ask for every table's bound four times a second; a flush still writes them all.
 */

let h: Harness;
// A server of this file's own: the test keeps a transaction with an id open, which on the shared server
// would hold every other file's checkpoints below it.
let server: PrivateServer | undefined;
beforeAll(async () => {
  server = await startPrivateServer();
  h = await harness('checkpoint_keeper', {}, { server: server.url });
});
afterAll(async () => {
  await h?.close();
  await server?.stop();
});

async function saved(tables: string[]): Promise<Map<string, number>> {
  const { rows } = await h.admin.query<{ table_name: string; last_id: string }>(
    `SELECT table_name, last_id FROM ${ENGINE_SCHEMA}.checkpoints WHERE pump = 'A' AND table_name = ANY($1)`,
    [tables],
  );
  return new Map(rows.map((r) => [r.table_name, Number(r.last_id)]));
}

/** One row in each table; settled in the keeper as the engine would. Returns each table's new id. */
async function oneRowEach(keeper: CheckpointKeeper, tables: string[]): Promise<Map<string, number>> {
  const ids = new Map<string, number>();
  for (const t of tables) {
    const { rows } = await h.admin.query<{ id: number }>(
      `INSERT INTO ${quoteIdent(t)} (tiempo_sensor, valor_sensor) VALUES (now()::text, 1) RETURNING id`,
    );
    const id = rows[0]?.id as number;
    const ticket = keeper.begin('A', t, id, ['group']);
    expect(ticket).toBeDefined();
    ticket?.settle('group');
    ids.set(t, id);
  }
  return ids;
}

describe('checkpoint keeper', () => {
  it('writes at most maxPerSave checkpoints per timed write, every reader in turn; flush writes all', async () => {
    // A transaction with an id stays open meanwhile: the turns must not depend on it.
    const other = await h.admin.connect();
    await other.query('BEGIN');
    await other.query('SELECT pg_current_xact_id()');
    const readers = h.pumps.A.sensors.map((s) => ({ pump: 'A', table: s.table }));
    const tables = readers.map((r) => r.table);
    const keeper = new CheckpointKeeper({
      pool: h.admin,
      logger: pino({ level: 'silent' }),
      // Long enough that the test reads the table between two timed writes.
      everyMs: 1_500,
      ownedReaders: () => readers,
      maxPerSave: 3,
      // No LISTEN session here, and this test is about the turns, not the late-commit bound: the next
      // transaction id as the horizon, so that the open transaction above holds nothing back.
      horizon: async () => {
        const { rows } = await h.admin.query<{ x: string }>(
          'SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint % 4294967296 AS x',
        );
        return Number(rows[0]?.x);
      },
    });
    await keeper.load(h.admin, readers);
    // As after a catch-up that read every table to its end.
    for (const r of readers) {
      keeper.beginCatchUp(r.pump, r.table).finish();
    }

    const ids = await oneRowEach(keeper, tables);
    const written = async () => {
      const now = await saved(tables);
      return tables.filter((t) => now.get(t) === ids.get(t));
    };
    expect(await written()).toEqual([]);
    keeper.start();
    // Each timed write moves the next three readers' checkpoints, and no more.
    const firstTurn = await waitFor('the first timed write', () => keeper.saves === 1, 10_000).then(written);
    expect(firstTurn).toEqual(tables.slice(0, 3));
    await waitFor('the second timed write', () => keeper.saves === 2, 10_000);
    expect(await written()).toEqual(tables.slice(0, 6));
    await keeper.stop();
    // stop() flushes: every moved checkpoint is written at once.
    expect(keeper.saves).toBe(3);
    expect(await written()).toEqual(tables);

    // A flush (a stop, a hand-over) writes every moved checkpoint at once.
    const more = await oneRowEach(keeper, tables);
    await keeper.flush();
    expect(keeper.saves).toBe(4);
    expect(await saved(tables)).toEqual(more);
    await other.query('ROLLBACK');
    other.release();
  });
});
