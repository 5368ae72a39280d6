import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import {
  readingKeyPattern,
  sharedTables,
  specPumpFor,
  specSensorPath,
  specUnifiedPath,
  vectorKeyPattern,
  WIRINGS,
} from '../helpers/spec-oracle.js';

/** The tests' own reading of ../shared/spec, which the fake backend and the ledger hold the engine to. */

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

describe('spec oracle', () => {
  it('the frozen copies in test/fixtures/spec hold what ../shared/spec holds, where that exists', () => {
    for (const name of ['pumps.json', 'plant-2026-03.json']) {
      const shared = path.join(repoRoot, '..', 'shared', 'spec', name);
      if (!existsSync(shared)) continue;
      // Compared as data: the copies are formatted as the repository formats JSON.
      const read = (p: string): unknown => JSON.parse(readFileSync(p, 'utf8'));
      expect(read(path.join(repoRoot, 'test', 'fixtures', 'spec', name))).toEqual(read(shared));
    }
  });

  it('reads both wirings as the spec states them', () => {
    const [plain, plant] = WIRINGS;
    expect(plain?.pumps.map((p) => [p.id, p.sensors.length, specUnifiedPath(p)])).toEqual([
      ['A', 20, '/sensores/predecir-bomba'],
      ['B', 15, '/sensores_b/predecir-bomba-b'],
    ]);
    expect(plant?.pumps.map((p) => [p.id, p.sensors.length])).toEqual([
      ['A', 25],
      ['B', 25],
    ]);
    // "10 tables are read by both pumps" (the profile's notes).
    expect(sharedTables(plant?.pumps ?? []).size).toBe(10);
    expect(sharedTables(plain?.pumps ?? []).size).toBe(0);
    expect(plant?.logbookTables).toEqual(['gm_bitacoras_a', 'gm_bitacoras_b']);
    const a = plain?.pumps[0];
    if (!a) throw new Error('no pump A');
    expect(specSensorPath(a, 'sensores_corriente')).toBe('/sensores/prediccion_corriente');
    expect(specPumpFor(a)).toBe(a);
    expect(specPumpFor({ id: 'A', sensors: a.sensors.slice(1) })).toBeUndefined();
  });

  it('key forms: rd-<table>-<id>, rd-<pump>-<table>-<id> for a shared table, vec-<pump>-<32 hex>', () => {
    expect(readingKeyPattern('A', 'sensores_corriente', 7, false).test('rd-sensores_corriente-7')).toBe(true);
    expect(readingKeyPattern('A', 'sensores_corriente', 7, false).test('rd-sensores_corriente-70')).toBe(
      false,
    );
    expect(readingKeyPattern('A', 't', 7, false).test('rd-t-7-replay-3')).toBe(true);
    expect(
      readingKeyPattern('B', 'mw_brutos_generacion_gas', 7, true).test('rd-B-mw_brutos_generacion_gas-7'),
    ).toBe(true);
    expect(
      readingKeyPattern('B', 'mw_brutos_generacion_gas', 7, true).test('rd-mw_brutos_generacion_gas-7'),
    ).toBe(false);
    expect(vectorKeyPattern('A').test(`vec-A-${'0a'.repeat(16)}`)).toBe(true);
    expect(vectorKeyPattern('A').test(`vec-B-${'0a'.repeat(16)}`)).toBe(false);
  });
});
