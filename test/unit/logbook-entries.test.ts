import { describe, expect, it } from 'vitest';
import { ENTRY_KINDS, type EntryKind, logbookEntry, templatesOf } from '../../src/tools/logbook-entries.js';

/** mulberry32, seeded: the same draws on every run. */
function seeded(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function draw(n: number, pump: string, bearingWear: number, seed = 1) {
  const random = seeded(seed);
  const at = new Date('2026-03-02T14:30:00Z');
  return Array.from({ length: n }, () => logbookEntry({ pump, at, bearingWear, random }));
}

describe('simulated logbook entries', () => {
  it('vary: every kind appears, in many different texts, naming their pump', () => {
    const entries = draw(400, 'B', 0);
    const kinds = new Set(entries.map((e) => e.kind));
    expect([...kinds].sort()).toEqual([...ENTRY_KINDS].sort());
    expect(new Set(entries.map((e) => e.text)).size).toBeGreaterThan(200);
    for (const e of entries) {
      expect(e.text).toMatch(/\b(bomba|BAA) B\b/i);
      expect(e.text).not.toMatch(/undefined|NaN/);
    }
    // Routine rounds dominate, as in a real logbook.
    const count = (k: EntryKind) => entries.filter((e) => e.kind === k).length;
    expect(count('ronda')).toBeGreaterThan(count('alarma'));
    expect(entries[0]?.text).toMatch(/turno (mañana|tarde|noche)|\d{2}:\d{2}|OT \d+|bomba B/);
  });

  it("note pump A's vibration more often as its bearing wears", () => {
    const vibration = (wear: number) => draw(600, 'A', wear, 7).filter((e) => e.kind === 'vibracion').length;
    expect(vibration(1)).toBeGreaterThan(3 * vibration(0));
    // Pump B's bearing does not wear in the scenario.
    const b = draw(600, 'B', 1, 7).filter((e) => e.kind === 'vibracion').length;
    expect(b).toBeLessThan(vibration(1) / 2);
  });

  it('write numbers with a decimal comma around nominal values', () => {
    const [ronda] = templatesOf('ronda');
    expect(ronda).toBe(
      'Ronda de las 08:00: bomba A en servicio, presión de succión 5,2 barg, corriente 245,0 A. Sin fugas ni ruidos anormales. Sin novedad.',
    );
  });
});
