import pg from 'pg';
import { afterEach, describe, expect, it } from 'vitest';
import { BatchWriter, isDataError, writersOf } from '../../src/util/batch.js';
import { pgText } from '../../src/util/pg-text.js';
import { createTestDatabase } from '../helpers/db.js';
import { TcpProxy } from '../helpers/tcp-proxy.js';
import { waitFor } from '../helpers/wait.js';

/** BatchWriter against a real PostgreSQL: a poison item is set aside, a lost connection is retried whole. */

const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c().catch(() => {});
});

interface Item {
  id: number;
  label: string;
}

const NUL = String.fromCharCode(0);

async function setup(prefix: string, viaProxy = false) {
  const db = await createTestDatabase(prefix);
  cleanups.push(() => db.drop());
  const admin = new pg.Pool({ connectionString: db.url, max: 2 });
  admin.on('error', () => {});
  cleanups.push(() => admin.end());
  await admin.query('CREATE TABLE items (id int PRIMARY KEY, label text NOT NULL)');
  let proxy: TcpProxy | undefined;
  let url = db.url;
  if (viaProxy) {
    proxy = await new TcpProxy(db.config.port).start();
    cleanups.push(() => (proxy as TcpProxy).stop());
    const u = new URL(db.url);
    u.port = String(proxy.port);
    url = u.toString();
  }
  const pool = new pg.Pool({ connectionString: url, max: 2, connectionTimeoutMillis: 2_000 });
  pool.on('error', () => {});
  cleanups.push(() => pool.end());
  const controller = new AbortController();
  cleanups.push(async () => controller.abort());
  /** Every write attempted, by its items' ids, and whether it went through. */
  const writes: { ids: number[]; ok: boolean }[] = [];
  const insert = async (db: pg.Pool, items: Item[]) => {
    await db.query('INSERT INTO items (id, label) SELECT * FROM unnest($1::int[], $2::text[])', [
      items.map((i) => i.id),
      items.map((i) => i.label),
    ]);
  };
  const write = async (items: Item[]) => {
    try {
      await insert(pool, items);
      writes.push({ ids: items.map((i) => i.id), ok: true });
    } catch (err) {
      writes.push({ ids: items.map((i) => i.id), ok: false });
      throw err;
    }
  };
  const rows = async () =>
    (await admin.query<Item>('SELECT id, label FROM items ORDER BY id')).rows.map((r) => ({ ...r }));
  return { admin, pool, proxy, controller, writes, write, insert, rows };
}

describe('BatchWriter against PostgreSQL', () => {
  it('one bad item in a batch of many: the rest are written, the bad one is handed to its owner', async () => {
    const s = await setup('batch_poison');
    const poisoned: { item: Item; code: string }[] = [];
    const errors: boolean[] = [];
    const w = new BatchWriter<Item>(s.write, {
      name: 'items',
      maxBatch: 100,
      retryMs: 50,
      signal: s.controller.signal,
      onError: (_err, _n, refused) => errors.push(refused === true),
      onPoison: async (item, err) => {
        poisoned.push({ item, code: (err as { code: string }).code });
        // The owner's choice here: a text PostgreSQL refuses is stored sanitised; a duplicate is dropped.
        if ((err as { code: string }).code === '22021') {
          await s.insert(s.pool, [{ ...item, label: pgText(item.label) }]);
        }
      },
    });
    // 64 items in one batch: item 23 holds a NUL (22021), item 41 repeats id 7 (23505).
    const items: Item[] = Array.from({ length: 64 }, (_, i) => ({ id: i + 1, label: `item ${i + 1}` }));
    (items[22] as Item).label = `bad${NUL}byte`;
    (items[40] as Item).id = 7;
    const waits = items.map((i) => w.pushAndWait(i));
    // Bounded: the old writer retried the batch forever.
    const settled = await Promise.race([
      Promise.all(waits),
      new Promise<'stuck'>((r) => setTimeout(() => r('stuck'), 15_000).unref()),
    ]);
    expect(settled).toEqual(items.map(() => true));
    expect(poisoned.map((p) => [p.item.id, p.code])).toEqual([
      [23, '22021'],
      [7, '23505'],
    ]);
    const stored = await s.rows();
    expect(stored).toHaveLength(63);
    expect(stored.find((r) => r.id === 23)?.label).toBe('bad\ufffdbyte');
    expect(stored.find((r) => r.id === 7)?.label).toBe('item 7');
    // Split, never retried whole: nothing was reported as a failure to retry.
    expect(errors).toEqual([]);
    expect(s.writes.filter((x) => !x.ok && x.ids.length === 1).map((x) => x.ids[0])).toEqual([23, 7]);
    expect(w.health).toMatchObject({
      name: 'items',
      retryingSince: undefined,
      failures: 0,
      refused: 2,
      pending: 0,
    });
  });

  it('a lost connection is retried as a whole, shows in the health, and nothing is split or lost', async () => {
    const s = await setup('batch_connection', true);
    const poisoned: Item[] = [];
    const w = new BatchWriter<Item>(s.write, {
      name: 'items',
      maxBatch: 100,
      retryMs: 50,
      signal: s.controller.signal,
      onError: () => {},
      onPoison: (item) => void poisoned.push(item),
    });
    await w.pushAndWait({ id: 1, label: 'before' });
    await (s.proxy as TcpProxy).refuse();
    const items: Item[] = Array.from({ length: 20 }, (_, i) => ({ id: i + 2, label: `item ${i + 2}` }));
    for (const i of items) w.push(i);
    await waitFor('the writer failing twice', () => w.health.failures >= 2, 15_000);
    const stuck = writersOf(s.controller.signal).find((h) => h.name === 'items');
    expect(stuck?.retryingSince).toBeTypeOf('number');
    expect(stuck?.pending).toBe(20);
    expect(stuck?.lastError).toBeTruthy();
    await (s.proxy as TcpProxy).restore();
    await w.idle();
    expect(await s.rows()).toHaveLength(21);
    // Every failed attempt was the whole batch, and so was the write that went through.
    const later = s.writes.slice(1);
    expect(later.every((x) => x.ids.length === 20)).toBe(true);
    expect(later.at(-1)?.ok).toBe(true);
    expect(poisoned).toEqual([]);
    expect(w.health).toMatchObject({ retryingSince: undefined, failures: 0, refused: 0, pending: 0 });
  });

  it('classes 22 and 23 are data errors; connection and server faults are not', () => {
    expect(isDataError({ code: '22021' })).toBe(true);
    expect(isDataError({ code: '23505' })).toBe(true);
    expect(isDataError({ code: '22P05' })).toBe(true);
    for (const code of ['08006', '57P01', '53300', '40001', 'ECONNREFUSED', undefined]) {
      expect(isDataError({ code })).toBe(false);
    }
    expect(isDataError(new Error('x'))).toBe(false);
    expect(isDataError(null)).toBe(false);
  });
});
