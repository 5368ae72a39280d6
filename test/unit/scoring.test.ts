import { describe, expect, it } from 'vitest';
import { loadPumpDefinitions } from '../../src/config/pumps.js';
import {
  classifyReading,
  deviationScore,
  failureProbability,
  RollingWindow,
  SensorScorer,
  WARMUP_COUNT,
} from '../../src/tools/backend/scoring.js';
import { nominalFor } from '../../src/tools/nominal.js';

const pumps = loadPumpDefinitions();
const pumpA = pumps.find((p) => p.id === 'A');
if (!pumpA) throw new Error('pump A definition not found');
const fieldsA = pumpA.sensors.map((s) => s.field);

/** A small deterministic generator (mulberry32), so failures reproduce. */
function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** A vector of pump A with every field at nominal mean + offset(field) * nominal std. */
function vectorA(offset: (field: string) => number = () => 0): Record<string, number> {
  return Object.fromEntries(
    fieldsA.map((f) => {
      const n = nominalFor(f);
      return [f, n.mean + offset(f) * n.std];
    }),
  );
}

describe('RollingWindow', () => {
  it('computes the mean and sample standard deviation of its values', () => {
    const w = new RollingWindow(10);
    for (const v of [2, 4, 4, 4, 5, 5, 7, 9]) w.push(v);
    const s = w.stats();
    expect(s.count).toBe(8);
    expect(s.mean).toBe(5);
    expect(s.std).toBeCloseTo(Math.sqrt(32 / 7), 12);
  });

  it('keeps only the most recent values once full', () => {
    const w = new RollingWindow(3);
    for (const v of [100, 200, 1, 2, 3]) w.push(v);
    expect(w.stats()).toMatchObject({ count: 3, mean: 2 });
  });

  it('stays precise on a large value with a small spread', () => {
    const w = new RollingWindow(120);
    for (let i = 0; i < 500; i++) w.push(6600 + (i % 2 === 0 ? 1e-3 : -1e-3));
    // Sample standard deviation of 120 values alternating ±1e-3 around the mean.
    expect(w.stats().std).toBeCloseTo(1e-3 * Math.sqrt(120 / 119), 9);
  });
});

describe('per-sensor classification', () => {
  it('classifies normal readings as 1, before and after warm-up', () => {
    const random = seededRandom(7);
    const scorer = new SensorScorer();
    for (const field of fieldsA) {
      const n = nominalFor(field);
      for (let i = 0; i < 300; i++) {
        const value = n.mean + (random() * 2 - 1) * 2 * n.std;
        const score = scorer.score('A', field, value);
        expect(score.prediction, `${field} reading ${i}`).toBe(1);
        expect(score.description).toBe('Normal');
      }
    }
  });

  it('classifies a large outlier as -1 after warm-up, with a Spanish description', () => {
    const scorer = new SensorScorer();
    const n = nominalFor('temp_bomba');
    for (let i = 0; i < 50; i++) scorer.score('A', 'temp_bomba', n.mean + (i % 3) * 0.2);
    const score = scorer.score('A', 'temp_bomba', n.mean + 20 * n.std);
    expect(score.prediction).toBe(-1);
    expect(score.warmedUp).toBe(true);
    expect(score.description).toMatch(/^Anomalía: valor 82 fuera de rango \(media 58\.\d+, desv\. 0\.\d+\)$/);
  });

  it('before warm-up, judges by the nominal point: 6 standard deviations', () => {
    const n = nominalFor('vibracion_axial');
    const empty = { count: 0, mean: 0, std: 0 };
    expect(classifyReading(n.mean + 5.9 * n.std, empty, n).prediction).toBe(1);
    expect(classifyReading(n.mean - 6.1 * n.std, empty, n).prediction).toBe(-1);
    const nearlyWarm = { count: WARMUP_COUNT - 1, mean: n.mean, std: n.std };
    expect(classifyReading(n.mean + 6.1 * n.std, nearlyWarm, n).warmedUp).toBe(false);
  });

  it('after warm-up, judges by the baseline: 4 times its (floored) standard deviation', () => {
    const n = { mean: 100, std: 4 };
    const baseline = { count: 50, mean: 120, std: 2 };
    expect(classifyReading(127.9, baseline, n).prediction).toBe(1);
    expect(classifyReading(128.1, baseline, n).prediction).toBe(-1);
    expect(classifyReading(111.9, baseline, n).prediction).toBe(-1);
  });

  it('floors the baseline spread at a quarter of the nominal one, so a flat signal tolerates small wobbles', () => {
    const n = { mean: 100, std: 4 };
    const flat = { count: 50, mean: 100, std: 0 };
    expect(classifyReading(103.9, flat, n).prediction).toBe(1);
    expect(classifyReading(104.1, flat, n).prediction).toBe(-1);
  });

  it('classifies a non-finite value as an anomaly and keeps it out of the baseline', () => {
    const scorer = new SensorScorer();
    expect(scorer.score('A', 'temp_motor', Number.NaN).prediction).toBe(-1);
    expect(scorer.score('A', 'temp_motor', nominalFor('temp_motor').mean).prediction).toBe(1);
  });

  it('keeps separate baselines per pump and field', () => {
    const scorer = new SensorScorer();
    for (let i = 0; i < 30; i++) scorer.score('A', 'corriente_motor', 300 + (i % 2));
    // 300 A is far out for a fresh baseline of another pump's field (nominal 245 ± 6).
    expect(scorer.score('B', 'corriente_motor', 300).prediction).toBe(-1);
    expect(scorer.score('A', 'corriente_motor', 300).prediction).toBe(1);
  });
});

describe('unified failure probability', () => {
  it('is low for the nominal vector and for vectors within one standard deviation', () => {
    expect(failureProbability(vectorA())).toBeLessThan(1);
    expect(failureProbability(vectorA(() => 1))).toBeLessThan(2);
    expect(failureProbability(vectorA(() => -1))).toBeLessThan(2);
    const random = seededRandom(11);
    for (let i = 0; i < 200; i++) {
      expect(failureProbability(vectorA(() => random() * 2 - 1))).toBeLessThan(2);
    }
  });

  it('is high when bearing temperature and vibration drift by 5 to 8 standard deviations', () => {
    const drift: Record<string, number> = { temp_bomba: 6, temp_empuje: 5, vibracion_axial: 8 };
    expect(failureProbability(vectorA((f) => drift[f] ?? 0))).toBeGreaterThan(90);
    const twoFields: Record<string, number> = { temp_bomba: 5, vibracion_axial: 5 };
    expect(failureProbability(vectorA((f) => twoFields[f] ?? 0))).toBeGreaterThan(50);
  });

  it('grows monotonically with the deviation of a field', () => {
    let previous = -1;
    const values: number[] = [];
    for (let k = 0; k <= 40; k++) {
      const p = failureProbability(vectorA((f) => (f === 'vibracion_axial' ? k / 2 : 0.5)));
      expect(p).toBeGreaterThanOrEqual(previous);
      values.push(p);
      previous = p;
    }
    // Strictly increasing once the field is among the largest deviations and until the curve saturates.
    for (let k = 2; k <= 20; k++)
      expect(values[k]).toBeGreaterThan(values[k - 1] ?? Number.POSITIVE_INFINITY);
  });

  it('stays within [0, 100] for any input', () => {
    const random = seededRandom(3);
    const extremes = [
      0,
      -1e308,
      1e308,
      Number.MAX_VALUE,
      -Number.MAX_VALUE,
      Number.NaN,
      Number.POSITIVE_INFINITY,
    ];
    for (let i = 0; i < 500; i++) {
      const vector = vectorA(() => (random() - 0.5) * 10 ** Math.floor(random() * 8));
      if (i % 5 === 0) vector.temp_bomba = extremes[i % extremes.length] ?? 0;
      const p = failureProbability(vector);
      expect(p).toBeGreaterThanOrEqual(0);
      expect(p).toBeLessThanOrEqual(100);
    }
    expect(failureProbability({})).toBeGreaterThanOrEqual(0);
    expect(failureProbability({})).toBeLessThan(1);
  });

  it('scores the mean of the three largest deviations', () => {
    const deviated: Record<string, number> = {
      temp_bomba: 6,
      temp_motor: -3,
      vibracion_axial: 9,
      temp_empuje: 1,
    };
    expect(deviationScore(vectorA((f) => deviated[f] ?? 0))).toBeCloseTo(6, 9);
  });
});
