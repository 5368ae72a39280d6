import type pg from 'pg';
import type { LogbookDefinition, LogbookStream, PumpDefinition } from '../config/pumps.js';
import { quoteIdent } from '../store/db.js';
import { type EntryKind, logbookEntry } from './logbook-entries.js';
import { nominalOf } from './nominal.js';

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

const BEARING_PUMP = 'A';
const BEARING_FIELDS = new Set(['temp_bomba', 'temp_motor', 'temp_empuje', 'vibracion_axial']);
const BEARING_DRIFT_STDS = 8;
const LOAD_PERIOD_S = 600;
const LOAD_SWING_STDS = 0.5;
// Ambient conditions and the grid voltage do not follow the pump's load.
const LOAD_INDEPENDENT = new Set(['temp_ambiental', 'temperatura_ambiental', 'voltaje_barra']);
const LATE_MIN_MS = 500;
const LATE_MAX_MS = 3_000;
const MAX_RATE = 1_000;

interface Row {
  table: string;
  value: number;
}

interface LateRow {
  row: Row;
  delayMs: number;
}

interface PendingEntry {
  stream: LogbookStream;
  at: Date;
  kind: EntryKind;
  text: string;
}

interface Batch {
  pump: string;
  tiempo: string;
  rows: Row[];
  late: LateRow[];
  missing: string[];
}

/**
 * The reading's timestamp text, in UTC. Second resolution as in the original data; milliseconds
 * when there is more than one timestamp per second, so that every timestamp stays a distinct key.
 */
export function formatTiempo(d: Date, rate: number): string {
  return d.toISOString().slice(0, rate > 1 ? 23 : 19);
}

/** Inserts simulated readings until `count` timestamps per pump are written or `signal` aborts. */
export async function runSimulator(opts: SimulatorOptions): Promise<SimulatorResult> {
  validate(opts);
  return new Simulator(opts).run();
}

function validate(opts: SimulatorOptions): void {
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

class Simulator {
  private readonly rate: number;
  private readonly intervalMs: number;
  private readonly startMs: number;
  private readonly random: () => number;
  private readonly totals: SimulatorResult = {
    timestamps: 0,
    rows: 0,
    missing: 0,
    late: 0,
    errors: 0,
    logbookEntries: 0,
  };
  /**
   * The pump that writes each table: the first simulated pump listing it. A table several pumps read is
   * one sensor, so it gets one row per timestamp, written in its owner's transaction.
   */
  private readonly owner = new Map<string, string>();
  private readonly streams: LogbookStream[];
  private readonly logbookEveryS: number;
  /** A batch held back to be written after its successor (out-of-order), per pump. */
  private readonly held = new Map<string, Batch>();
  private readonly late = new LateRows();
  /** The table that stops ('silent-sensor'), and from which simulated second. */
  private readonly silenced: { table: string; fromS: number } | undefined;

  constructor(private readonly opts: SimulatorOptions) {
    this.rate = opts.rate ?? 1;
    this.intervalMs = 1000 / this.rate;
    this.startMs = (opts.startTime ?? new Date()).getTime();
    this.random = opts.random ?? Math.random;
    for (const p of opts.pumps)
      for (const sensor of p.sensors) if (!this.owner.has(sensor.table)) this.owner.set(sensor.table, p.id);
    this.streams = (opts.logbooks ?? []).flatMap((l) => l.streams);
    this.logbookEveryS = opts.logbookEverySeconds ?? 180;
    this.silenced =
      opts.scenario === 'silent-sensor'
        ? { table: opts.silentTable ?? silentSensorTable(opts.pumps), fromS: opts.silentAfterSeconds ?? 20 }
        : undefined;
  }

  async run(): Promise<SimulatorResult> {
    const wallStart = performance.now();
    for (let i = 0; !this.finished(i); i += 1) {
      // Relative to the start, so slow writes do not push every later tick back; when behind, no wait.
      await sleep(wallStart + i * this.intervalMs - performance.now(), this.opts.signal);
      if (this.opts.signal?.aborted) break;
      // Drawn before any write starts, like the pumps' values, so a seeded run is reproducible.
      const entries = this.logbookEntriesAt(i);
      await Promise.all([
        ...this.opts.pumps.map((pump) => this.tick(pump, i)),
        ...entries.map((e) => this.writeLogbookEntry(e)),
      ]);
    }
    await this.flush();
    return { ...this.totals };
  }

  private finished(i: number): boolean {
    if (this.opts.signal?.aborted) return true;
    return this.opts.count !== undefined && i >= this.opts.count;
  }

  private isLastTick(i: number): boolean {
    return this.opts.count !== undefined && i === this.opts.count - 1;
  }

  private async tick(pump: PumpDefinition, i: number): Promise<void> {
    // Every random draw happens before the first await, so a seeded run is reproducible.
    const batch = this.buildBatch(pump, i);
    const held = this.held.get(pump.id);
    if (held) {
      this.held.delete(pump.id);
      await this.write(batch);
      await this.write(held);
      return;
    }
    if (!this.isLastTick(i) && this.chance(this.opts.outOfOrderProbability)) {
      this.held.set(pump.id, batch);
      return;
    }
    await this.write(batch);
  }

  private buildBatch(pump: PumpDefinition, i: number): Batch {
    const elapsedS = i / this.rate;
    const at = new Date(this.startMs + Math.round(i * this.intervalMs));
    const tiempo = formatTiempo(at, this.rate);
    const batch: Batch = { pump: pump.id, tiempo, rows: [], late: [], missing: [] };
    for (const sensor of pump.sensors) {
      if (this.owner.get(sensor.table) !== pump.id) continue;
      if (this.silenced?.table === sensor.table && elapsedS >= this.silenced.fromS) {
        batch.missing.push(sensor.field);
        continue;
      }
      if (this.chance(this.opts.missingProbability)) {
        batch.missing.push(sensor.field);
        continue;
      }
      const row = { table: sensor.table, value: this.value(pump.id, sensor, elapsedS) };
      if (this.chance(this.opts.lateProbability)) {
        batch.late.push({ row, delayMs: LATE_MIN_MS + this.random() * (LATE_MAX_MS - LATE_MIN_MS) });
      } else {
        batch.rows.push(row);
      }
    }
    return batch;
  }

  private chance(p: number | undefined): boolean {
    return p !== undefined && p > 0 && this.random() < p;
  }

  private value(pumpId: string, sensor: { table: string; field: string }, elapsedS: number): number {
    const { mean, std } = nominalOf(sensor);
    const load = LOAD_INDEPENDENT.has(sensor.field) ? 0 : loadSwing(elapsedS);
    const drift = BEARING_FIELDS.has(sensor.field) && pumpId === BEARING_PUMP ? this.wear(elapsedS) : 0;
    return roundToSpread(mean + std * (load + BEARING_DRIFT_STDS * drift + gaussian(this.random)), std);
  }

  /** How far pump A's bearing has failed, 0..1 (always 0 outside the bearing-failure scenario). */
  private wear(elapsedS: number): number {
    if (this.opts.scenario !== 'bearing-failure') return 0;
    return Math.min(1, elapsedS / (this.opts.driftSeconds ?? 120));
  }

  /**
   * The logbook entries due at tick i: stream k of n writes at simulated times k/n·every, (k/n + 1)·every,
   * ..., so the streams do not all write in the same second.
   */
  private logbookEntriesAt(i: number): PendingEntry[] {
    const out: PendingEntry[] = [];
    const now = i / this.rate;
    const before = (i - 1) / this.rate;
    this.streams.forEach((stream, k) => {
      const offset = (k / this.streams.length) * this.logbookEveryS;
      const slot = (t: number) => (t < offset ? -1 : Math.floor((t - offset) / this.logbookEveryS + 1e-9));
      if (slot(now) < 0 || (i > 0 && slot(now) === slot(before))) return;
      const at = new Date(this.startMs + Math.round(i * this.intervalMs));
      const entry = logbookEntry({ pump: stream.pump, at, bearingWear: this.wear(now), random: this.random });
      out.push({ stream, at, ...entry });
    });
    return out;
  }

  private async writeLogbookEntry(e: PendingEntry): Promise<void> {
    const iso = e.at.toISOString();
    try {
      const { rows } = await this.opts.pool.query<{ id: number }>(
        `INSERT INTO ${quoteIdent(e.stream.table)}
           (tiempo_ejecucion, bitacora, bomba_activa, "Fecha", "Hora", "Observaciones")
         VALUES ($1, $2, $3, $4, $5, 'registro simulado') RETURNING id`,
        // The simulated clock is UTC, as the sensor timestamps are.
        [iso.slice(0, 23), e.text, e.stream.pump, iso.slice(0, 10), iso.slice(11, 16)],
      );
      this.totals.logbookEntries += 1;
      const { table, tabla, pump } = e.stream;
      this.opts.onLogbookEntry?.({
        table,
        tabla,
        pump,
        id: rows[0]?.id ?? 0,
        kind: e.kind,
        bitacora: e.text,
      });
    } catch (err) {
      this.fail(err);
    }
  }

  private async write(batch: Batch): Promise<void> {
    let ok = true;
    try {
      if (batch.rows.length > 0) await this.opts.pool.query(insertStatement(batch.tiempo, batch.rows));
    } catch (err) {
      ok = false;
      this.fail(err);
    }
    this.totals.missing += batch.missing.length;
    // A late sensor writes on its own, whether or not its timestamp's others made it.
    for (const late of batch.late) {
      this.late.schedule(late.delayMs, () => this.writeLate(batch.tiempo, late.row));
    }
    if (!ok) return;
    this.totals.timestamps += 1;
    this.totals.rows += batch.rows.length;
    this.opts.onTick?.({
      pump: batch.pump,
      tiempo_sensor: batch.tiempo,
      inserted: batch.rows.length,
      missing: batch.missing,
    });
  }

  private async writeLate(tiempo: string, row: Row): Promise<void> {
    try {
      await this.opts.pool.query(insertStatement(tiempo, [row]));
      this.totals.rows += 1;
      this.totals.late += 1;
    } catch (err) {
      this.fail(err);
    }
  }

  private fail(err: unknown): void {
    this.totals.errors += 1;
    try {
      this.opts.onError?.(err instanceof Error ? err : new Error(String(err)));
    } catch {
      // A throwing error callback must not turn a failed insert into a crash.
    }
  }

  private async flush(): Promise<void> {
    const held = [...this.held.values()];
    this.held.clear();
    for (const batch of held) await this.write(batch);
    await this.late.flush();
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

/**
 * One statement, hence one transaction and one round trip, for all of a timestamp's rows:
 * each INSERT is a data-modifying CTE, which PostgreSQL always runs to completion.
 */
function insertStatement(tiempo: string, rows: Row[]): pg.QueryConfig {
  const values = [tiempo, ...rows.map((r) => r.value)];
  const inserts = rows.map((r, k) => insertSql(r.table, k + 2));
  if (inserts.length === 1) return { text: inserts[0] ?? '', values };
  const ctes = inserts.map((sql, k) => `w${k} AS (${sql})`);
  return { text: `WITH ${ctes.join(',\n')}\nSELECT ${rows.length} AS inserted`, values };
}

function insertSql(table: string, valueParam: number): string {
  return `INSERT INTO ${quoteIdent(table)} (tiempo_sensor, valor_sensor) VALUES ($1, $${valueParam})`;
}

/** Rows waiting on their own timer; flush() writes the waiting ones at once and awaits them all. */
class LateRows {
  private readonly waiting = new Map<NodeJS.Timeout, () => Promise<void>>();
  private readonly inFlight = new Set<Promise<void>>();

  schedule(delayMs: number, write: () => Promise<void>): void {
    const timer = setTimeout(() => {
      this.waiting.delete(timer);
      this.start(write);
    }, delayMs);
    this.waiting.set(timer, write);
  }

  async flush(): Promise<void> {
    for (const [timer, write] of this.waiting) {
      clearTimeout(timer);
      this.start(write);
    }
    this.waiting.clear();
    while (this.inFlight.size > 0) await Promise.all(this.inFlight);
  }

  /** `write` never rejects: it reports its own errors. */
  private start(write: () => Promise<void>): void {
    const p = write();
    this.inFlight.add(p);
    void p.then(() => this.inFlight.delete(p));
  }
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

/** Resolves after `ms`, or at once when `signal` aborts; never rejects. */
function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (ms <= 0 || signal?.aborted) {
      resolve();
      return;
    }
    const done = () => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal?.addEventListener('abort', done, { once: true });
  });
}
