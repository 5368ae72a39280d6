import type { LogbookStream, PumpDefinition } from '../config/pumps.js';
import { type EntryKind, logbookEntry } from './logbook-entries.js';
import {
  type SimulatorOptions,
  type SimulatorResult,
  silentSensorTable,
  validate,
} from './simulator/options.js';
import { formatTiempo, SignalModel } from './simulator/signal.js';
import { insertLogbookEntry, insertStatement, LateRows, type Row } from './simulator/writes.js';

/**
 * The plant simulator: writes each pump's readings, one transaction per timestamp, with readings missing,
 * late or out of order as asked, and operator entries into the logbooks. Its options are in
 * simulator/options.ts, the values it writes in simulator/signal.ts, its statements in simulator/writes.ts.
 */

export {
  type LogbookEntryInfo,
  SCENARIOS,
  type Scenario,
  type SimulatorOptions,
  type SimulatorResult,
  silentSensorTable,
  type TickInfo,
} from './simulator/options.js';
export { formatTiempo } from './simulator/signal.js';

const LATE_MIN_MS = 500;
const LATE_MAX_MS = 3_000;

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

/** Inserts simulated readings until `count` timestamps per pump are written or `signal` aborts. */
export async function runSimulator(opts: SimulatorOptions): Promise<SimulatorResult> {
  validate(opts);
  return new Simulator(opts).run();
}

class Simulator {
  private readonly rate: number;
  private readonly intervalMs: number;
  private readonly startMs: number;
  private readonly random: () => number;
  private readonly signal: SignalModel;
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
    this.signal = new SignalModel(this.random, opts.scenario, opts.driftSeconds ?? 120);
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
      const row = { table: sensor.table, value: this.signal.value(pump.id, sensor, elapsedS) };
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
      const entry = logbookEntry({
        pump: stream.pump,
        at,
        bearingWear: this.signal.wear(now),
        random: this.random,
      });
      out.push({ stream, at, ...entry });
    });
    return out;
  }

  private async writeLogbookEntry(e: PendingEntry): Promise<void> {
    try {
      const id = await insertLogbookEntry(this.opts.pool, e.stream, e.at, e.text);
      this.totals.logbookEntries += 1;
      const { table, tabla, pump } = e.stream;
      this.opts.onLogbookEntry?.({ table, tabla, pump, id, kind: e.kind, bitacora: e.text });
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
