import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bigintArray, textArray } from '../../src/store/db.js';
import { createTestDatabase, type TestDatabase } from '../helpers/db.js';

/** The array literals the post ledger and the deferred posts send are read back by PostgreSQL as given. */

let db: TestDatabase;
let client: pg.Client;

beforeAll(async () => {
  db = await createTestDatabase('sql_arrays');
  client = new pg.Client({ connectionString: db.url });
  await client.connect();
});
afterAll(async () => {
  await client?.end();
  await db?.drop();
});

describe('array literals', () => {
  it('keeps every text exactly, quotes, backslashes, braces, commas, spaces, NULL and the empty string included', async () => {
    const texts = [
      'p001_s01',
      '',
      'NULL',
      'a,b',
      '{x}',
      ' lead and trail ',
      'say "hi"',
      'back\\slash',
      '\\"',
      '{"id_sensor":7,"valor":1.5,"tiempo_sensor":"12:00"}',
      'ñandú 温度',
    ];
    const { rows } = await client.query<{ v: string[] }>('SELECT $1::text[] AS v', [textArray(texts)]);
    expect(rows[0]?.v).toEqual(texts);
  });

  it('keeps bigints beyond 32 bits, and an empty list', async () => {
    const ids = [0, 1, 2 ** 40 + 7, Number.MAX_SAFE_INTEGER];
    const { rows } = await client.query<{ v: string[]; e: string[] }>(
      'SELECT $1::bigint[]::text[] AS v, $2::bigint[]::text[] AS e',
      [bigintArray(ids), bigintArray([])],
    );
    expect(rows[0]?.v).toEqual(ids.map(String));
    expect(rows[0]?.e).toEqual([]);
    expect(textArray([])).toBe('{}');
  });
});
