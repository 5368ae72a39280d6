import { nominalOf } from '../nominal.js';
import type { Scenario } from './options.js';

/**
 * The simulated signal: each sensor's nominal value, the slow swing of plant load, pump A's bearing wear in
 * the bearing-failure scenario, and noise, rounded as the plant's data is.
 */

const BEARING_PUMP = 'A';
const BEARING_FIELDS = new Set(['temp_bomba', 'temp_motor', 'temp_empuje', 'vibracion_axial']);
const BEARING_DRIFT_STDS = 8;
const LOAD_PERIOD_S = 600;
const LOAD_SWING_STDS = 0.5;
// Ambient conditions and the grid voltage do not follow the pump's load.
const LOAD_INDEPENDENT = new Set(['temp_ambiental', 'temperatura_ambiental', 'voltaje_barra']);

/** One run's values: `random` is the run's (seeded in tests), so a seeded run draws the same values. */
export class SignalModel {
  constructor(
    private readonly random: () => number,
    private readonly scenario: Scenario | undefined,
    private readonly driftSeconds: number,
  ) {}

  value(pumpId: string, sensor: { table: string; field: string }, elapsedS: number): number {
    const { mean, std } = nominalOf(sensor);
    const load = LOAD_INDEPENDENT.has(sensor.field) ? 0 : loadSwing(elapsedS);
    const drift = BEARING_FIELDS.has(sensor.field) && pumpId === BEARING_PUMP ? this.wear(elapsedS) : 0;
    return roundToSpread(mean + std * (load + BEARING_DRIFT_STDS * drift + gaussian(this.random)), std);
  }

  /** How far pump A's bearing has failed, 0..1 (always 0 outside the bearing-failure scenario). */
  wear(elapsedS: number): number {
    if (this.scenario !== 'bearing-failure') return 0;
    return Math.min(1, elapsedS / this.driftSeconds);
  }
}

/**
 * The reading's timestamp text, in UTC. Second resolution as in the original data; milliseconds
 * when there is more than one timestamp per second, so that every timestamp stays a distinct key.
 */
export function formatTiempo(d: Date, rate: number): string {
  return d.toISOString().slice(0, rate > 1 ? 23 : 19);
}

/** The slow swing of plant load, in standard deviations. */
function loadSwing(elapsedS: number): number {
  return LOAD_SWING_STDS * Math.sin((2 * Math.PI * elapsedS) / LOAD_PERIOD_S);
}

/** A standard normal draw (Box-Muller). */
function gaussian(random: () => number): number {
  // 1 - random() lies in (0, 1], so the logarithm stays finite.
  const u = 1 - random();
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * random());
}

/** Rounds so that the spread keeps about three significant digits (245.37, 2.134, 0.05123). */
function roundToSpread(value: number, std: number): number {
  const decimals = std > 0 ? Math.min(6, Math.max(0, 2 - Math.floor(Math.log10(std)))) : 3;
  const factor = 10 ** decimals;
  return Math.round(value * factor) / factor;
}
