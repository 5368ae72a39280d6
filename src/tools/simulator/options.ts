import type pg from 'pg';
import type { LogbookDefinition, PumpDefinition } from '../../config/pumps.js';
import type { EntryKind } from '../logbook-entries.js';

/** What a simulator run is asked to do, what it reports, and the checks of the request. */

export type Scenario = 'normal' | 'bearing-failure' | 'silent-sensor';

export const SCENARIOS: readonly Scenario[] = ['normal', 'bearing-failure', 'silent-sensor'];

export interface TickInfo {
  pump: string;
  tiempo_sensor: string;
  /** Rows written by this timestamp's transaction (late rows follow in their own). */
  inserted: number;
  missing: string[];
}

export interface LogbookEntryInfo {
  table: string;
  tabla: string;
  pump: string;
  /** The row's id. */
  id: number;
  kind: EntryKind;
  bitacora: string;
}

export interface SimulatorOptions {
  pool: pg.Pool;
  pumps: PumpDefinition[];
  /** timestamps per second per pump (default 1) */
  rate?: number;
  /** probability that one sensor's reading is missing from a timestamp (default 0) */
  missingProbability?: number;
  /** probability that a sensor's row is inserted late, in a later transaction 0.5..3 s after its timestamp's others (default 0) */
  lateProbability?: number;
  /** probability that two consecutive timestamps are inserted in swapped order (default 0) */
  outOfOrderProbability?: number;
  /** 'bearing-failure': pump A's bearing temperatures and axial vibration drift up to ~8 std above nominal */
  scenario?: Scenario;
  /** simulated seconds the bearing-failure drift takes to reach its full size (default 120) */
  driftSeconds?: number;
  /**
   * 'silent-sensor': simulated seconds after which one table gets no more rows (default 20), as when its
   * writer stops; the table is `silentTable`, or the one silentSensorTable() picks.
   */
  silentAfterSeconds?: number;
  silentTable?: string;
  /** logbook streams to write operator entries into (default none) */
  logbooks?: LogbookDefinition[];
  /** simulated seconds between two entries of one logbook stream (default 180); streams are staggered */
  logbookEverySeconds?: number;
  /** stop after this many timestamps per pump (default: run until signal aborts) */
  count?: number;
  signal?: AbortSignal;
  /** start of the simulated clock (default: now); timestamps advance by 1/rate s */
  startTime?: Date;
  /** injectable for deterministic tests (default Math.random) */
  random?: () => number;
  onTick?: (info: TickInfo) => void;
  onLogbookEntry?: (info: LogbookEntryInfo) => void;
  /** a failed write (e.g. connection lost); the simulator carries on at the next tick */
  onError?: (err: Error) => void;
}

export interface SimulatorResult {
  /** pump timestamps written, summed over pumps */
  timestamps: number;
  /** rows committed, late rows included */
  rows: number;
  /** readings left out on purpose */
  missing: number;
  /** rows committed in a later transaction than their timestamp's others */
  late: number;
  /** failed writes (each one reported to onError) */
  errors: number;
  /** logbook entries committed */
  logbookEntries: number;
}

const MAX_RATE = 1_000;

/** Throws a RangeError naming the first option out of range. */
export function validate(opts: SimulatorOptions): void {
  const rate = opts.rate ?? 1;
  if (!(rate > 0 && rate <= MAX_RATE)) {
    throw new RangeError(`rate: got ${rate}, expected a number > 0 and <= ${MAX_RATE} timestamps per second`);
  }
  const probabilities = {
    missingProbability: opts.missingProbability,
    lateProbability: opts.lateProbability,
    outOfOrderProbability: opts.outOfOrderProbability,
  };
  for (const [name, p] of Object.entries(probabilities)) {
    if (p !== undefined && !(p >= 0 && p <= 1)) throw new RangeError(`${name}: got ${p}, expected 0..1`);
  }
  if (opts.count !== undefined && !(Number.isInteger(opts.count) && opts.count >= 0)) {
    throw new RangeError(`count: got ${opts.count}, expected an integer >= 0`);
  }
  if (opts.driftSeconds !== undefined && !(opts.driftSeconds > 0)) {
    throw new RangeError(`driftSeconds: got ${opts.driftSeconds}, expected a number > 0`);
  }
  if (opts.silentAfterSeconds !== undefined && !(opts.silentAfterSeconds >= 0)) {
    throw new RangeError(`silentAfterSeconds: got ${opts.silentAfterSeconds}, expected a number >= 0`);
  }
  if (
    opts.silentTable !== undefined &&
    !opts.pumps.some((p) => p.sensors.some((s) => s.table === opts.silentTable))
  ) {
    throw new RangeError(`silentTable: got "${opts.silentTable}", expected a table of the simulated pumps`);
  }
  if (opts.logbookEverySeconds !== undefined && !(opts.logbookEverySeconds > 0)) {
    throw new RangeError(`logbookEverySeconds: got ${opts.logbookEverySeconds}, expected a number > 0`);
  }
  if (opts.startTime !== undefined && Number.isNaN(opts.startTime.getTime())) {
    throw new RangeError('startTime: got an invalid Date');
  }
}

/**
 * The table the 'silent-sensor' scenario stops: one that most pumps read (a shared table marks every pump
 * that reads it), preferring one outside every vector (the pumps' vectors still complete, so the page
 * shows a silent channel and not a stalled pump), else the first pump's last sensor.
 */
export function silentSensorTable(pumps: Pick<PumpDefinition, 'sensors'>[]): string {
  const readers = new Map<string, { pumps: number; inVector: boolean }>();
  for (const p of pumps)
    for (const s of p.sensors) {
      const r = readers.get(s.table) ?? { pumps: 0, inVector: false };
      r.pumps += 1;
      r.inVector ||= s.inVector;
      readers.set(s.table, r);
    }
  const score = (r: { pumps: number; inVector: boolean }) => r.pumps * 2 + (r.inVector ? 0 : 1);
  let best: string | undefined;
  for (const [table, r] of readers) {
    const b = best === undefined ? undefined : readers.get(best);
    if (!b || score(r) > score(b)) best = table;
  }
  const single = [...readers.values()].every((r) => r.pumps === 1 && r.inVector);
  if (single || best === undefined) {
    const last = pumps[0]?.sensors.at(-1)?.table;
    if (last === undefined) throw new RangeError('silent-sensor: the pumps have no sensors');
    return last;
  }
  return best;
}
