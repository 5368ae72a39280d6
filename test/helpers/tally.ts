import { appendFileSync, mkdirSync } from 'node:fs';
import type pg from 'pg';
import type { PumpConfig } from '../../src/config/env.js';
import { quoteIdent } from '../../src/store/db.js';
import { member } from '../../src/store/members.js';
import { vectorKey } from '../../src/store/outbox.js';
import type { FakeBackend } from './fake-backend.js';
import { waitFor } from './wait.js';

export interface Expected {
  readings: Set<string>;
  vectors: Set<string>;
}

/**
 * Each timestamp's vector key, from the rows in the tables: a vector's key derives from its member rows,
 * and a full timestamp's members are every row with that `tiempo_sensor`.
 */
export async function vectorKeysFromRows(
  db: pg.Pool,
  pump: PumpConfig,
): Promise<Map<string, { key: string; rows: number }>> {
  const members = new Map<string, number[]>();
  for (const s of pump.sensors) {
    const { rows } = await db.query<{ id: number; tiempo_sensor: string; no: number }>(
      `SELECT s.id, s.tiempo_sensor, c.table_no AS no FROM ${quoteIdent(s.table)} s
         JOIN pump_monitor.checkpoints c ON c.table_name = $1 WHERE s.valor_sensor IS NOT NULL`,
      [s.table],
    );
    for (const r of rows)
      members.set(r.tiempo_sensor, [...(members.get(r.tiempo_sensor) ?? []), member(r.no, r.id)]);
  }
  return new Map([...members].map(([t, m]) => [t, { key: vectorKey(pump.id, t, m), rows: m.length }]));
}

/** What must be delivered: every row in the sensor tables, and every timestamp whose vector is full. */
export async function expectedDeliveries(db: pg.Pool, pumps: PumpConfig[]): Promise<Expected> {
  const readings = new Set<string>();
  const vectors = new Set<string>();
  for (const p of pumps) {
    for (const s of p.sensors) {
      const { rows } = await db.query<{ id: number }>(
        `SELECT id FROM ${quoteIdent(s.table)} WHERE valor_sensor IS NOT NULL`,
      );
      for (const r of rows) readings.add(`rd-${s.table}-${r.id}`);
    }
    for (const v of (await vectorKeysFromRows(db, p)).values())
      if (v.rows === p.sensors.length) vectors.add(v.key);
  }
  return { readings, vectors };
}

export interface Tally {
  readings: number;
  vectors: number;
  readingsDelivered: number;
  vectorsDelivered: number;
  lost: number;
  /** A key accepted with two different bodies: a second, different delivery of one reading or timestamp. */
  duplicated: number;
  /** The same request sent again after an answer was lost to a crash; a key-honouring backend absorbs it. */
  replays: number;
  /** A few of the replayed keys, to investigate with. */
  replayed: string[];
}

export function tally(backend: FakeBackend, exp: Expected): Tally {
  const ok = backend.successes();
  let lost = 0;
  let readingsDelivered = 0;
  let vectorsDelivered = 0;
  for (const k of exp.readings) ok.has(k) ? readingsDelivered++ : lost++;
  for (const k of exp.vectors) ok.has(k) ? vectorsDelivered++ : lost++;
  let duplicated = 0;
  let replays = 0;
  const replayed: string[] = [];
  for (const [k, e] of ok) {
    if (!exp.readings.has(k) && !exp.vectors.has(k)) continue;
    duplicated += e.bodies.size - 1;
    replays += e.count - e.bodies.size;
    if (e.count > 1 && replayed.length < 5) replayed.push(k);
  }
  return {
    readings: exp.readings.size,
    vectors: exp.vectors.size,
    readingsDelivered,
    vectorsDelivered,
    lost,
    duplicated,
    replays,
    replayed,
  };
}

/** Waits until nothing expected is missing at the backend, then reports and returns the tally. */
export async function settleAndReport(
  name: string,
  db: pg.Pool,
  pumps: PumpConfig[],
  backend: FakeBackend,
  timeoutMs = 60_000,
): Promise<Tally> {
  const exp = await expectedDeliveries(db, pumps);
  try {
    await waitFor(
      `${name}: every reading and vector delivered`,
      () => tally(backend, exp).lost === 0,
      timeoutMs,
    );
  } catch {
    // Report what was lost below; the assertion in the test fails with the figures.
  }
  const t = tally(backend, exp);
  const line =
    `fault ${name}: readings ${t.readings} inserted, ${t.readingsDelivered} delivered; ` +
    `vectors ${t.vectors} expected, ${t.vectorsDelivered} delivered; lost ${t.lost}, duplicated ${t.duplicated}, replays ${t.replays}` +
    (t.replays > 0 ? ` (e.g. ${t.replayed.join(', ')})` : '');
  console.log(line);
  mkdirSync('test-artifacts', { recursive: true });
  appendFileSync('test-artifacts/reliability.txt', `${line}\n`);
  return t;
}
