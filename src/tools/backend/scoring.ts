/**
 * Scoring of the reference prediction backend.
 *
 * This is not a trained model and does not pretend to be one. It is two transparent statistical rules,
 * good enough to make development and demos behave plausibly:
 *
 * - Per sensor: a reading is an anomaly (-1) when it lies far from a rolling baseline of that sensor's
 *   recent readings or, before the baseline has warmed up, far from the field's nominal operating point.
 * - Per pump: the failure "probability" is a logistic squashing of how far the worst few fields of a
 *   vector lie from their nominal operating points, in units of their nominal spread.
 *
 * Both are bounded and monotone, so dashboards and alert thresholds behave sensibly, but the numbers
 * carry no calibrated meaning. Nominal points come from src/tools/nominal.ts.
 */

import { getOrAdd } from '../../util/maps.js';
import { type Nominal, nominalFor } from '../nominal.js';

/** How many recent readings of one sensor form its baseline. */
export const WINDOW_SIZE = 120;
/** The baseline is trusted once it holds at least this many readings. */
export const WARMUP_COUNT = 10;
/** A reading is anomalous beyond this many (floored) baseline standard deviations. */
export const WINDOW_THRESHOLD = 4;
/** Before warm-up, a reading is anomalous beyond this many nominal standard deviations. */
export const NOMINAL_THRESHOLD = 6;
/**
 * The baseline's standard deviation is floored at this fraction of the nominal one: a signal that has
 * been nearly flat for a while would otherwise flag every tiny wobble as an anomaly.
 */
export const STD_FLOOR_FRACTION = 0.25;

/** The unified score is the mean of the largest this-many per-field deviations. */
export const TOP_FIELDS = 3;
/** The deviation score (in nominal standard deviations) at which the probability is 50%. */
export const PROBABILITY_CENTER = 3;
/** Steepness of the logistic curve per standard deviation of score. */
export const PROBABILITY_SLOPE = 2;

export interface WindowStats {
  count: number;
  mean: number;
  /** Sample standard deviation; 0 with fewer than two values. */
  std: number;
}

/** A fixed-size ring of the most recent values of one sensor. */
export class RollingWindow {
  private readonly values: number[] = [];
  private next = 0;

  constructor(readonly capacity: number = WINDOW_SIZE) {
    if (!Number.isInteger(capacity) || capacity < 1)
      throw new RangeError('capacity must be a positive integer');
  }

  push(value: number): void {
    if (this.values.length < this.capacity) this.values.push(value);
    else this.values[this.next] = value;
    this.next = (this.next + 1) % this.capacity;
  }

  // Recomputed from the window (at most a few hundred values) rather than kept as running sums:
  // running sums of squares lose precision on signals like 6600 V with a spread of a few volts.
  stats(): WindowStats {
    const count = this.values.length;
    if (count === 0) return { count, mean: 0, std: 0 };
    const mean = this.values.reduce((sum, v) => sum + v, 0) / count;
    if (count < 2) return { count, mean, std: 0 };
    const squares = this.values.reduce((sum, v) => sum + (v - mean) ** 2, 0);
    return { count, mean, std: Math.sqrt(squares / (count - 1)) };
  }
}

export type SensorClass = 1 | -1;

export interface SensorScore {
  /** 1 normal, -1 anomaly (the contract's `prediccion`). */
  prediction: SensorClass;
  /** Spanish text for the contract's `descripcion`. */
  description: string;
  /** The reference the reading was compared with: the baseline's, or the nominal one before warm-up. */
  mean: number;
  std: number;
  warmedUp: boolean;
}

/**
 * Classifies one reading against a baseline.
 *
 * Warmed up (at least WARMUP_COUNT values): anomaly when |value - mean| > 4 * max(std, 0.25 * nominal.std).
 * Before that: anomaly when |value - nominal.mean| > 6 * nominal.std. A non-finite value is an anomaly.
 */
export function classifyReading(value: number, baseline: WindowStats, nominal: Nominal): SensorScore {
  const warmedUp = baseline.count >= WARMUP_COUNT;
  const mean = warmedUp ? baseline.mean : nominal.mean;
  const std = warmedUp ? Math.max(baseline.std, nominal.std * STD_FLOOR_FRACTION) : nominal.std;
  const limit = (warmedUp ? WINDOW_THRESHOLD : NOMINAL_THRESHOLD) * std;
  // Any comparison with NaN is false, so a NaN reading is not normal.
  const normal = Math.abs(value - mean) <= limit;
  const description = normal
    ? 'Normal'
    : `Anomalía: valor ${formatNumber(value)} fuera de rango (media ${formatNumber(mean)}, desv. ${formatNumber(std)})`;
  return { prediction: normal ? 1 : -1, description, mean, std, warmedUp };
}

/** Four significant digits, without trailing zeros: enough to read, short enough to log. */
function formatNumber(n: number): string {
  return Number.isFinite(n) ? String(Number(n.toPrecision(4))) : String(n);
}

/**
 * Keeps one rolling baseline per (pump, field) and scores readings against it.
 * Every finite reading joins its baseline after being scored, anomalies included, so the baseline
 * follows the plant when its operating point moves; a lasting shift stops being flagged after a while.
 */
export class SensorScorer {
  private readonly windows = new Map<string, RollingWindow>();

  constructor(private readonly windowSize: number = WINDOW_SIZE) {}

  /** `nominal` defaults to the field's; the backend passes the sensor's (its table's, where it has one). */
  score(pumpId: string, field: string, value: number, nominal: Nominal = nominalFor(field)): SensorScore {
    const window = this.windowFor(pumpId, field);
    const result = classifyReading(value, window.stats(), nominal);
    if (Number.isFinite(value)) window.push(value);
    return result;
  }

  private windowFor(pumpId: string, field: string): RollingWindow {
    const key = `${pumpId}\u0000${field}`;
    return getOrAdd(this.windows, key, () => new RollingWindow(this.windowSize));
  }
}

/**
 * Per-field deviations from nominal, in nominal standard deviations: z = |x - nominal.mean| / nominal.std.
 * Non-finite values are skipped: they carry no information about the pump.
 */
export function deviations(
  vector: Record<string, number>,
  nominalOfField: (field: string) => Nominal = nominalFor,
): number[] {
  const zs: number[] = [];
  for (const [field, value] of Object.entries(vector)) {
    if (!Number.isFinite(value)) continue;
    const nominal = nominalOfField(field);
    const z = Math.abs(value - nominal.mean) / nominal.std;
    if (!Number.isNaN(z)) zs.push(z);
  }
  return zs;
}

/**
 * The mean of the TOP_FIELDS largest deviations (fewer when the vector has fewer fields; 0 when empty).
 * Using the worst few fields rather than all of them lets a fault that shows on two or three sensors
 * (bearing temperature and vibration) stand out instead of being averaged away by twenty healthy ones.
 */
export function deviationScore(
  vector: Record<string, number>,
  nominalOfField: (field: string) => Nominal = nominalFor,
): number {
  const top = deviations(vector, nominalOfField)
    .sort((a, b) => b - a)
    .slice(0, TOP_FIELDS);
  return top.length === 0 ? 0 : top.reduce((sum, z) => sum + z, 0) / top.length;
}

/**
 * Failure probability in percent, 0..100: 100 * logistic((score - 3) * 2) with score = deviationScore.
 *
 * - Every field within 1 std of nominal: score <= 1, probability <= 1.8%.
 * - Two fields drifted by 5 std, the rest nominal: score 3.3, about 66%; three by 6 std: above 99%.
 * - Non-decreasing in every field's deviation, because the mean of the top-k values is.
 */
export function failureProbability(
  vector: Record<string, number>,
  nominalOfField: (field: string) => Nominal = nominalFor,
): number {
  const score = deviationScore(vector, nominalOfField);
  return 100 * logistic((score - PROBABILITY_CENTER) * PROBABILITY_SLOPE);
}

function logistic(x: number): number {
  // exp overflows to Infinity for very negative x, which still yields 0 here, never NaN.
  return 1 / (1 + Math.exp(-x));
}
