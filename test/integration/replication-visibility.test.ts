import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { notYetVisible } from '../../src/store/replication.js';
import { createTestDatabase, type TestDatabase } from '../helpers/db.js';

/**
 * The replication source hands a transaction's rows on only once other sessions see it: the slot can give
 * a commit a moment before it is visible, and the backend reads the row by its id (under SOURCE=notify the
 * notification comes after visibility). These check the question it asks, on a real server.
 */
describe('notYetVisible: the transactions a new snapshot does not see', () => {
  let db: TestDatabase;
  let pool: pg.Pool;

  beforeAll(async () => {
    db = await createTestDatabase('repl_visible');
    pool = new pg.Pool({ connectionString: db.url, max: 2 });
    await pool.query('CREATE TABLE t (id bigserial PRIMARY KEY, v int)');
  });

  afterAll(async () => {
    await pool?.end();
    await db?.drop();
  });

  /** The 32-bit id the slot gives for the transaction open on `c`. */
  async function xidOf(c: pg.ClientBase): Promise<number> {
    const { rows } = await c.query<{ x: string }>(
      'SELECT (pg_current_xact_id()::text::bigint % 4294967296)::text AS x',
    );
    return Number(rows[0]?.x);
  }

  it('names a transaction still open, and not once it has committed', async () => {
    const c = new pg.Client({ connectionString: db.url });
    await c.connect();
    try {
      await c.query('BEGIN');
      await c.query('INSERT INTO t (v) VALUES (1)');
      const xid = await xidOf(c);
      expect(await notYetVisible(pool, [xid])).toEqual([xid]);
      await c.query('COMMIT');
      expect(await notYetVisible(pool, [xid])).toEqual([]);
    } finally {
      await c.end();
    }
  });

  it('keeps an aborted or finished one out, and answers for several at once', async () => {
    const a = new pg.Client({ connectionString: db.url });
    const b = new pg.Client({ connectionString: db.url });
    await a.connect();
    await b.connect();
    try {
      await a.query('BEGIN');
      await a.query('INSERT INTO t (v) VALUES (2)');
      const open = await xidOf(a);
      await b.query('BEGIN');
      await b.query('INSERT INTO t (v) VALUES (3)');
      const aborted = await xidOf(b);
      await b.query('ROLLBACK');
      const { rows } = await pool.query<{ x: string }>(
        'SELECT (pg_current_xact_id()::text::bigint % 4294967296)::text AS x FROM (SELECT 1) s',
      );
      const finished = Number(rows[0]?.x);
      expect(await notYetVisible(pool, [finished, open, aborted])).toEqual([open]);
      await a.query('COMMIT');
      expect(await notYetVisible(pool, [finished, open, aborted])).toEqual([]);
    } finally {
      await a.end();
      await b.end();
    }
  });
});
