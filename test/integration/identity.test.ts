import { afterEach, describe, expect, it } from 'vitest';
import { quoteIdent } from '../../src/store/db.js';
import { ENGINE_SCHEMA } from '../../src/store/schema.js';
import { ManualClock } from '../../src/util/clock.js';
import { type Harness, harness, insertTimestamp } from '../helpers/engine.js';
import { waitFor } from '../helpers/wait.js';

/**
 * A vector's identity is its rows, not its key text: `tiempo_sensor` comes back (HH:MM every day, a clock
 * reset), and a group rebuilt from rows already sent is a replay, never a second vector.
 */

let h: Harness | undefined;
afterEach(async () => {
  await h?.close();
  h = undefined;
});

const DAY = 86_400_000;

function unifiedA(x: Harness) {
  return x.backend.requests.filter((r) => r.status === 200 && r.path === '/sensores/predecir-bomba');
}

async function outboxRows(x: Harness, pump: string) {
  const { rows } = await x.admin.query<{ tiempo_sensor: string; idempotency_key: string; status: string }>(
    `SELECT tiempo_sensor, idempotency_key, status FROM ${ENGINE_SCHEMA}.outbox WHERE pump = $1 ORDER BY id`,
    [pump],
  );
  return rows;
}

/** Inserts one row for one sensor of pump A and returns its id. */
async function insertOne(x: Harness, sensor: number, tiempo: string, valor: number): Promise<number> {
  const s = x.pumps.A.sensors[sensor];
  if (!s) throw new Error(`no sensor ${sensor}`);
  const { rows } = await x.admin.query<{ id: number }>(
    `INSERT INTO ${quoteIdent(s.table)} (tiempo_sensor, valor_sensor) VALUES ($1, $2) RETURNING id`,
    [tiempo, valor],
  );
  return rows[0]?.id as number;
}

function postsFor(x: Harness, endpoint: string, id: number) {
  return x.backend.requests.filter(
    (r) => r.status === 200 && r.path === `/sensores${endpoint}` && r.body.id_sensor === id,
  );
}

/** Delivers one timestamp of pump A with a first engine, waits until its 20 posts are on record, stops it. */
async function deliveredThenStopped(x: Harness, t: string): Promise<number[]> {
  const m1 = await x.startMonitor();
  const ids = await insertTimestamp(x.admin, x.pumps.A, t);
  const postsA = () =>
    x.backend.requests.filter((r) => r.status === 200 && r.path.startsWith('/sensores/prediccion'));
  await waitFor('the vector and its 20 posts', () => unifiedA(x).length === 1 && postsA().length === 20);
  await waitFor('the posts on record', async () => {
    const { rows } = await x.admin.query<{ n: number }>(
      `SELECT count(*)::int AS n FROM ${ENGINE_SCHEMA}.sensor_posts WHERE pump = 'A'`,
    );
    return rows[0]?.n === 20;
  });
  await m1.stop();
  return ids;
}

describe('vector identity', () => {
  it('HH:MM keys: across midnight, a late reading the same day, and the same keys the next day', async () => {
    h = await harness('identity_hhmm');
    const x = h;
    const clock = new ManualClock(Date.now());
    const m = await x.startMonitor({}, { clock });
    const keys = ['23:58', '23:59', '00:00', '00:01'];
    const day1 = (f: string) => 100 + x.pumps.A.sensors.findIndex((s) => s.field === f);
    const day2 = (f: string) => 500 + x.pumps.A.sensors.findIndex((s) => s.field === f);

    // 00:01 comes without its first sensor: sent after the settle time, that field filled from 00:00.
    const allButFirst = x.pumps.A.sensors.slice(1).map((s) => s.field);
    for (const t of keys) {
      await insertTimestamp(x.admin, x.pumps.A, t, {
        value: day1,
        ...(t === '00:01' ? { fields: allButFirst } : {}),
      });
    }
    await waitFor('day 1: three full vectors', () => unifiedA(x).length === 3);
    await waitFor('00:01 open with all but one field', () =>
      m.units.snapshot
        .groupsView('A', 30)
        .some((g) => g.tiempo === '00:01' && g.present.filter(Boolean).length === 19),
    );
    clock.advance(1_000); // its settle time
    await waitFor('day 1: four vectors', () => unifiedA(x).length === 4);

    // The missing sensor reports 00:01 moments after its vector went out: a late reading.
    const lateId = await insertOne(x, 0, '00:01', 42);
    const endpoint = x.pumps.A.sensors[0]?.endpoint as string;
    await waitFor(
      'the late reading to be counted',
      () => (m.status().pumps.A as { readings_late: number }).readings_late === 1,
    );
    expect(m.units.snapshot.groupsView('A', 30)).toEqual([]);
    await waitFor('the late reading posted on its own', () => postsFor(x, endpoint, lateId).length === 1);

    // The next day the same key texts come back: four new vectors, with keys of their own.
    clock.advance(DAY);
    for (const t of keys) await insertTimestamp(x.admin, x.pumps.A, t, { value: day2 });
    await waitFor('day 2: four more vectors', () => unifiedA(x).length === 8);

    const sent = unifiedA(x);
    expect(new Set(sent.map((r) => r.idempotencyKey)).size).toBe(8);
    const expectedBody = (value: (f: string) => number) =>
      Object.fromEntries(x.pumps.A.sensors.map((s) => [s.field, value(s.field)]));
    expect(sent.slice(0, 4).map((r) => r.body)).toEqual(keys.map(() => expectedBody(day1)));
    expect(sent.slice(4).map((r) => r.body)).toEqual(keys.map(() => expectedBody(day2)));

    await waitFor('all eight recorded as sent', async () =>
      (await outboxRows(x, 'A')).every((r) => r.status === 'sent'),
    );
    const rows = await outboxRows(x, 'A');
    expect(rows.map((r) => r.tiempo_sensor)).toEqual([...keys, ...keys]);
    expect(rows.map((r) => r.idempotency_key)).toEqual(sent.map((r) => r.idempotencyKey));
    expect(m.status().pumps.A).toMatchObject({ vectors_sent: 8, vectors_suppressed: 0, readings_late: 1 });
  });

  it('ISO keys: a late reading is counted and not merged; the key back (5 s after, or after the window) is a new vector', async () => {
    h = await harness('identity_iso');
    const x = h;
    const clock = new ManualClock(Date.now());
    const m = await x.startMonitor({ LATE_WINDOW_MS: '600000' }, { clock });
    const t = '2025-03-01T08:00:00';
    await insertTimestamp(x.admin, x.pumps.A, '2025-03-01T07:59:00', { value: () => 6 });
    await waitFor('the vector before', () => unifiedA(x).length === 1);
    // Without sensor 3: sent after the settle time with that field filled.
    const fourth = x.pumps.A.sensors[3]?.field as string;
    await insertTimestamp(x.admin, x.pumps.A, t, {
      fields: x.pumps.A.sensors.map((s) => s.field).filter((f) => f !== fourth),
    });
    await waitFor('the group open with all but one field', () =>
      m.units.snapshot
        .groupsView('A', 30)
        .some((g) => g.tiempo === t && g.present.filter(Boolean).length === 19),
    );
    clock.advance(1_000);
    await waitFor('the first vector', () => unifiedA(x).length === 2);

    clock.advance(599_000); // still inside the late window: the table the group lacked is late
    await insertOne(x, 3, t, 7);
    await waitFor(
      'the late reading',
      () => (m.status().pumps.A as { readings_late: number }).readings_late === 1,
    );
    expect(m.units.snapshot.groupsView('A', 30)).toEqual([]);

    // A clock reset 5 s later, still inside the window: every table repeats the key. None of those rows
    // can be a late member of the closed group, which holds a row of each: a new vector at once.
    clock.advance(5_000);
    await insertTimestamp(x.admin, x.pumps.A, t, { value: () => 8 });
    await waitFor('the second vector', () => unifiedA(x).length === 3);
    expect((m.status().pumps.A as { readings_late: number }).readings_late).toBe(1);

    clock.advance(601_000); // the window has passed: the key back again is a new vector
    await insertTimestamp(x.admin, x.pumps.A, t, { value: () => 9 });
    await waitFor('the third vector', () => unifiedA(x).length === 4);
    const [, first, second, third] = unifiedA(x);
    expect(new Set([first, second, third].map((r) => r?.idempotencyKey)).size).toBe(3);
    expect(first?.body[fourth]).toBe(6); // filled from the vector before, not the late 7
    expect(second?.body).toEqual(Object.fromEntries(x.pumps.A.sensors.map((s) => [s.field, 8])));
    expect(third?.body).toEqual(Object.fromEntries(x.pumps.A.sensors.map((s) => [s.field, 9])));
    expect((await outboxRows(x, 'A')).map((r) => r.tiempo_sensor)).toEqual(['2025-03-01T07:59:00', t, t, t]);
  });

  it('rows read again after a crash: the group is recognised, counted and logged, and no post is repeated', async () => {
    h = await harness('identity_replay');
    const x = h;
    const ids = await deliveredThenStopped(x, '2025-03-02T09:00:00');
    const postsA = () =>
      x.backend.requests.filter((r) => r.status === 200 && r.path.startsWith('/sensores/prediccion'));

    // As if the process had died before its checkpoints were saved: the rows are read again.
    const tables = x.pumps.A.sensors.map((s) => s.table);
    await x.admin.query(
      `UPDATE ${ENGINE_SCHEMA}.checkpoints c SET last_id = t.id - 1
         FROM unnest($1::text[], $2::bigint[]) AS t(name, id) WHERE c.table_name = t.name`,
      [tables, ids],
    );
    const m2 = await x.startMonitor();
    await waitFor(
      'the rebuilt group recognised',
      () => (m2.status().pumps.A as { vectors_suppressed: number }).vectors_suppressed === 1,
    );
    await waitFor('the poster idle', () => m2.status().sensor_posts_queued === 0);
    expect(m2.status().pumps.A).toMatchObject({
      catchup_rows: 20,
      vectors_suppressed: 1,
      sensor_posts_ok: 0,
    });
    expect(unifiedA(x)).toHaveLength(1);
    expect(postsA()).toHaveLength(20);
    expect(await outboxRows(x, 'A')).toHaveLength(1);
  });

  it('some rows of a sent group read again: recognised as part of it, not counted or logged as a dropped group', async () => {
    h = await harness('identity_partial');
    const x = h;
    const t = '2025-03-03T09:00:00';
    const ids = await deliveredThenStopped(x, t);

    // Three tables' checkpoints held short of their rows (a late commit elsewhere on the server), the
    // others at theirs: three rows are read again, a group far below the pump's threshold of 15 fields.
    // Every checkpoint is set here, whatever the first engine saved (the suite's other files may hold
    // its saves back).
    const tables = x.pumps.A.sensors.map((s) => s.table);
    await x.admin.query(
      `UPDATE ${ENGINE_SCHEMA}.checkpoints c SET last_id = t.id
         FROM unnest($1::text[], $2::bigint[]) AS t(name, id) WHERE c.table_name = t.name`,
      [tables, ids.map((id, i) => (i < 3 ? id - 1 : id))],
    );
    const m2 = await x.startMonitor();
    await waitFor(
      'the rows read again recognised',
      () => (m2.status().pumps.A as { vectors_suppressed: number }).vectors_suppressed === 1,
    );
    expect(m2.status().pumps.A).toMatchObject({
      catchup_rows: 3,
      vectors_suppressed: 1,
      vectors_dropped: 0,
      sensor_posts_ok: 0,
    });
    expect(unifiedA(x)).toHaveLength(1);
    expect(await outboxRows(x, 'A')).toEqual([expect.objectContaining({ tiempo_sensor: t, status: 'sent' })]);
  });
});
