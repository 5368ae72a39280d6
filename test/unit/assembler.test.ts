import { describe, expect, it } from 'vitest';
import { Assembler } from '../../src/assembler/assembler.js';
import { loadConfig, type PumpConfig } from '../../src/config/env.js';
import type { DroppedGroup, Vector } from '../../src/model/groups.js';
import type { Reading } from '../../src/model/reading.js';
import { ManualClock } from '../../src/util/clock.js';

const config = loadConfig({});
const pumpA = config.pumps.find((p) => p.id === 'A') as PumpConfig;
const pumpB = config.pumps.find((p) => p.id === 'B') as PumpConfig;
const opts = {
  settleMs: 2_000,
  expiryMs: 30_000,
  fillMaxAgeMs: 60_000,
  maxOpenGroups: 100,
  lateWindowMs: 600_000,
};

function setup(pump: PumpConfig, o = opts) {
  const clock = new ManualClock(1_000_000);
  const vectors: Vector[] = [];
  const dropped: DroppedGroup[] = [];
  const a = new Assembler(pump, o, clock, {
    vector: (v) => vectors.push(v),
    dropped: (d) => dropped.push(d),
  });
  let id = 0;
  const add = (tiempo: string, fields: number | string[], value = 1) => {
    const sensors =
      typeof fields === 'number'
        ? pump.sensors.slice(0, fields)
        : pump.sensors.filter((s) => fields.includes(s.field));
    return sensors.map((sensor) => {
      id += 1;
      const r: Reading = {
        pump: pump.id,
        sensor,
        id,
        valor: value,
        tiempo,
        receivedAt: clock.now(),
        origin: 'notify',
      };
      return a.add(r);
    });
  };
  return { a, clock, vectors, dropped, add };
}

describe('assembler', () => {
  it('sends a full vector at once, with every field in definition order', () => {
    const { vectors, add } = setup(pumpA);
    add('t1', 20, 5);
    expect(vectors).toHaveLength(1);
    expect(Object.keys(vectors[0]?.values ?? {})).toEqual(pumpA.sensors.map((s) => s.field));
    expect(vectors[0]?.filled).toEqual([]);
    expect(vectors[0]?.members).toHaveLength(20);
  });

  it.each([15, 16, 17, 18, 19])(
    'pump A with %i of 20 fields sends a filled vector after the settle time',
    (n) => {
      const { vectors, add, a, clock } = setup(pumpA);
      add('t0', 20, 7); // gives every sensor a recent last value
      add('t1', n, 3);
      a.tick();
      expect(vectors).toHaveLength(1);
      clock.advance(1_999);
      a.tick();
      expect(vectors).toHaveLength(1);
      clock.advance(1);
      a.tick();
      expect(vectors).toHaveLength(2);
      const v = vectors[1] as Vector;
      expect(Object.keys(v.values)).toHaveLength(20);
      expect(v.present).toBe(n);
      expect(v.filled).toHaveLength(20 - n);
      expect(v.filled.every((f) => f.from === 'last' && f.value === 7)).toBe(true);
    },
  );

  it('pump A with 14 fields sends nothing and drops the group at expiry, naming the missing fields', () => {
    const { vectors, dropped, add, a, clock } = setup(pumpA);
    add('t0', 20, 7);
    add('t1', 14);
    clock.advance(29_999);
    a.tick();
    expect(vectors).toHaveLength(1);
    expect(dropped).toHaveLength(0);
    clock.advance(1);
    a.tick();
    expect(vectors).toHaveLength(1);
    expect(dropped).toHaveLength(1);
    expect(dropped[0]?.missing).toEqual(pumpA.sensors.slice(14).map((s) => s.field));
    expect(a.openGroups).toBe(0);
  });

  it('pump B sends only when all 15 fields are present', () => {
    const { vectors, dropped, add, a, clock } = setup(pumpB);
    add('t0', 15);
    add('t1', 14);
    clock.advance(30_000);
    a.tick();
    expect(vectors.map((v) => v.tiempo)).toEqual(['t0']);
    expect(dropped.map((d) => d.tiempo)).toEqual(['t1']);
  });

  it('fills from a configured default when the last value is too old, and holds when neither exists', () => {
    const pump: PumpConfig = { ...pumpA, defaults: { temp_ambiental: 25 } };
    const { vectors, add, a, clock } = setup(pump, { ...opts, fillMaxAgeMs: 5_000 });
    const all = pump.sensors.map((s) => s.field);
    add('t0', all, 7);
    clock.advance(10_000); // last values are now stale
    add(
      't1',
      all.filter((f) => f !== 'temp_ambiental'),
    );
    clock.advance(2_000);
    a.tick();
    expect(vectors[1]?.filled).toEqual([{ field: 'temp_ambiental', from: 'default', value: 25 }]);
    clock.advance(6_000); // corriente_motor's last value (from t1) is now stale too
    add(
      't2',
      all.filter((f) => f !== 'corriente_motor'),
    );
    clock.advance(2_000);
    a.tick();
    expect(vectors).toHaveLength(2); // no recent value, no default: held
    add('t2', ['corriente_motor']);
    expect(vectors).toHaveLength(3); // complete now: sent at once
    expect(vectors[2]?.filled).toEqual([]);
  });

  it('leaves an optional field out for the backend default when it cannot be filled', () => {
    const { vectors, add, a, clock } = setup(pumpA);
    const all = pumpA.sensors.map((s) => s.field);
    add(
      't1',
      all.filter((f) => f !== 'salida_bomba'),
    );
    clock.advance(2_000);
    a.tick();
    expect(vectors[0]?.omitted).toEqual(['salida_bomba']);
    expect('salida_bomba' in (vectors[0]?.values ?? {})).toBe(false);
  });

  it('counts a reading of a table the closed group lacked as late, and never merges it', () => {
    const { vectors, dropped, add, a, clock } = setup(pumpA);
    const last = pumpA.sensors[19]?.field as string;
    add('t1', 19);
    clock.advance(opts.expiryMs);
    a.tick();
    expect(a.openGroups).toBe(0);
    expect(vectors.length + dropped.length).toBe(1);
    expect(add('t1', [last])).toEqual(['late']);
    expect(vectors.length + dropped.length).toBe(1);
    expect(a.openGroups).toBe(0);
  });

  it('starts a new occurrence when every table repeats a key 5 s after its close (a clock reset)', () => {
    const { vectors, add, a, clock } = setup(pumpA);
    add('10:00', 20, 1);
    expect(vectors).toHaveLength(1);
    clock.advance(5_000);
    // Each table's second row for the key: none can belong to the closed group, which holds a row of each.
    expect(add('10:00', 20, 2)).toEqual(Array(20).fill('added'));
    expect(vectors).toHaveLength(2);
    expect(vectors[1]?.values.corriente_motor).toBe(2);
    expect(vectors[1]?.members.map((m) => m.id)).toEqual(Array.from({ length: 20 }, (_, i) => 21 + i));
    expect(a.openGroups).toBe(0);
  });

  it('takes a repeated table as a new occurrence while a lacking table of the same key is still late', () => {
    const { add, a, clock } = setup(pumpA);
    const first = pumpA.sensors[0]?.field as string;
    const last = pumpA.sensors[19]?.field as string;
    add('t1', 19);
    clock.advance(opts.expiryMs);
    a.tick();
    expect(a.openGroups).toBe(0);
    expect(add('t1', [last])).toEqual(['late']); // the table it lacked, within the late window
    expect(add('t1', [first])).toEqual(['added']); // a table the closed group held: the key came back
    expect(a.openGroups).toBe(1);
    expect(add('t1', [last])).toEqual(['added']); // the new occurrence is open: it joins that one
    expect(a.openGroups).toBe(1);
  });

  it('holds a group at the threshold while rows may be unread, and closes it at expiry all the same', () => {
    const { a, add, clock, vectors } = setup(pumpA);
    add('t0', 20); // a last value for every field, for fills
    add('t1', 19);
    clock.advance(opts.settleMs);
    a.tick(true); // a catch-up is due: the 20th reading may be among the rows not read yet
    expect(vectors).toHaveLength(1);
    expect(a.openGroups).toBe(1);
    a.tick(false); // read to the end: the settle rule applies again
    expect(vectors.map((v) => [v.tiempo, v.filled.length])).toEqual([
      ['t0', 0],
      ['t1', 1],
    ]);
    add('t2', 19);
    clock.advance(opts.expiryMs);
    a.tick(true); // still missing at expiry: resolved as always
    expect(vectors.map((v) => v.tiempo)).toEqual(['t0', 't1', 't2']);
  });

  it('while its readers are held for a catch-up, a group does not expire; expiry counts from the end of the hold', () => {
    const { a, add, clock, vectors, dropped } = setup(pumpA);
    add('t0', 20); // a last value for every field, for fills
    add('t1', 19); // above the threshold: would go out filled
    add('t2', 2); // below it: would be dropped
    clock.advance(opts.expiryMs * 3);
    a.tick(true, true); // the LISTEN session was lost; the catch-up is slower than the expiry
    expect(vectors.map((v) => v.tiempo)).toEqual(['t0']);
    expect(dropped).toHaveLength(0);
    expect(a.openGroups).toBe(2);
    // The catch-up reads t1's last row: the timestamp goes out whole, not filled.
    add('t1', 20);
    expect(vectors.map((v) => [v.tiempo, v.filled.length])).toEqual([
      ['t0', 0],
      ['t1', 0],
    ]);
    a.tick(true, false); // read to the end; its missing rows get a full expiry from here
    clock.advance(opts.expiryMs - 1);
    a.tick(false, false);
    expect(dropped).toHaveLength(0);
    clock.advance(1);
    a.tick(false, false);
    expect(dropped.map((d) => [d.tiempo, d.reason])).toEqual([['t2', 'expired']]);
  });

  it('caps open groups and resolves the oldest by arrival', () => {
    const { dropped, add, a } = setup(pumpA, { ...opts, maxOpenGroups: 3 });
    for (const t of ['t1', 't2', 't3', 't4', 't5']) add(t, 2);
    expect(a.openGroups).toBe(3);
    expect(dropped.map((d) => [d.tiempo, d.reason])).toEqual([
      ['t1', 'evicted'],
      ['t2', 'evicted'],
    ]);
  });

  it('keeps the later value when a sensor reports twice for one timestamp', () => {
    const { vectors, add } = setup(pumpB);
    expect(add('t1', ['corriente_motor'], 1)).toEqual(['added']);
    expect(add('t1', ['corriente_motor'], 2)).toEqual(['replaced']);
    add(
      't1',
      pumpB.sensors.slice(1).map((s) => s.field),
      9,
    );
    expect(vectors[0]?.values.corriente_motor).toBe(2);
    expect(vectors[0]?.members).toHaveLength(16);
  });

  it('counts as settling only the open groups at or above the threshold', () => {
    const { a, add, clock, vectors, dropped } = setup(pumpA);
    add('t0', 20); // full: sent at once, never open
    add('t1', 14);
    add('t2', 15);
    add('t3', 16);
    add('t2', 15); // corrections of the same sensors do not count twice
    expect(a.openGroups).toBe(3);
    expect(a.settlingGroups).toBe(2);
    clock.advance(opts.settleMs);
    a.tick();
    expect(vectors.map((v) => v.tiempo)).toEqual(['t0', 't2', 't3']);
    expect(a.settlingGroups).toBe(0);
    clock.advance(opts.expiryMs);
    a.tick();
    expect(dropped.map((d) => d.tiempo)).toEqual(['t1']);
    expect(a.openGroups).toBe(0);
  });
});

describe('assembler with plant-2026-03 (vector fields, two channels for one field)', () => {
  const plant = loadConfig({ PUMPS_PROFILE: 'plant-2026-03' });
  const plantB = plant.pumps.find((p) => p.id === 'B') as PumpConfig;
  const reading = (sensor: PumpConfig['sensors'][number], id: number, valor: number): Reading => ({
    pump: 'B',
    sensor,
    id,
    valor,
    tiempo: 't1',
    receivedAt: 0,
    origin: 'notify',
  });

  it("groups only the pump's vector fields; the first reading of a field wins, another table's is conflicting", () => {
    const clock = new ManualClock(1_000_000);
    const vectors: Vector[] = [];
    const a = new Assembler(plantB, opts, clock, { vector: (v) => vectors.push(v), dropped: () => {} });
    const inVector = plantB.sensors.filter((s) => s.inVector);
    const second = inVector.find((s) => s.table === 'temperatura_agua_alim_ap_b');
    const others = inVector.filter((s) => s !== second);
    const results = others.slice(0, -1).map((s, i) => a.add(reading(s, i + 1, 10 + i)));
    expect(results.every((r) => r === 'added')).toBe(true);
    expect(a.add(reading(second as PumpConfig['sensors'][number], 99, 7))).toBe('conflicting');
    expect(vectors).toHaveLength(0);
    a.add(reading(others[others.length - 1] as PumpConfig['sensors'][number], 50, 1));
    expect(vectors).toHaveLength(1);
    expect(Object.keys(vectors[0]?.values ?? {})).toEqual(plantB.vectorFields);
    expect(vectors[0]?.values.temperatura_agua_alim_ap).not.toBe(7);
    expect(vectors[0]?.members.map((m) => m.id)).toContain(99);
  });
});
