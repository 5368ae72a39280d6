import type { PumpConfig } from '../config/env.js';
import type { DroppedGroup, Fill, Vector } from '../model/groups.js';
import type { Member, Reading } from '../model/reading.js';
import type { Clock } from '../util/clock.js';

export interface AssemblerOptions {
  /** A vector at or above the threshold but not full is sent this long after its last reading. */
  settleMs: number;
  /** A group still open this long after its first reading is resolved: sent if it can be, else dropped. */
  expiryMs: number;
  /** A missing field may be filled with its sensor's last value if that value is at most this old. */
  fillMaxAgeMs: number;
  /** At most this many groups are open; the oldest by arrival is resolved early beyond it. */
  maxOpenGroups: number;
  /**
   * A reading of a table the group lacked, for a timestamp whose group closed less than this long ago, is
   * late: counted, logged and not merged. After it, or for a table the closed group held, the same key text
   * starts a new group, a new vector: `HH:MM` keys come back every day, and a sensor clock can be reset.
   */
  lateWindowMs: number;
  /** How many closed timestamps are remembered at most to recognise late readings. */
  closedMemory?: number;
}

export interface AssemblerSink {
  vector(v: Vector): void;
  dropped(d: DroppedGroup): void;
}

/**
 * `replaced`: a second row of the same table for the same timestamp, a correction (the later value wins).
 * `conflicting`: a reading of another table for a field this timestamp already has (two channels feeding
 * one field): the first reading keeps it; the row is still a member of the group, and settles with it.
 */
export type AddResult = 'added' | 'replaced' | 'late' | 'conflicting';

interface Group {
  tiempo: string;
  /** The tables it holds a row of, as bits of the pump's table numbers (31 a word). */
  tables: number[];
  values: (number | undefined)[];
  /** The table each present value came from. */
  sources: (string | undefined)[];
  count: number;
  members: Member[];
  firstAt: number;
  lastAt: number;
}

/** One open group's presence per field, for the status page's completeness grid. */
export interface GroupView {
  tiempo: string;
  present: boolean[];
}

/**
 * Groups one pump's readings by exact `tiempo_sensor` into vectors of the pump's `vectorFields` (readings
 * of sensors outside the vector never come here). When two tables feed one field, the first reading of a
 * timestamp wins it; the other is reported as conflicting, never swapped in.
 * A full vector goes out at once; one at or above the threshold goes out after the settle time with its
 * gaps filled; one that cannot be completed is dropped at expiry. Late readings are counted, never merged.
 */
export class Assembler {
  private readonly fields: string[];
  private readonly index = new Map<string, number>();
  private readonly groups = new Map<string, Group>();
  /** Closed key text → when it closed and the tables it held, oldest first. */
  private readonly closed = new Map<string, { at: number; tables: number[] }>();
  /** Each table of the pump's vector sensors: its bit in a group's `tables`. */
  private readonly tableBit = new Map<string, number>();
  private readonly last: ({ value: number; at: number } | undefined)[];
  private readonly closedMemory: number;
  private settling = 0;
  /** The last tick at which the pump's readers were held for a catch-up. */
  private heldAt = Number.NEGATIVE_INFINITY;

  constructor(
    private readonly pump: PumpConfig,
    private readonly opts: AssemblerOptions,
    private readonly clock: Clock,
    private readonly sink: AssemblerSink,
  ) {
    this.fields = pump.vectorFields ?? [
      ...new Set(pump.sensors.filter((s) => s.inVector !== false).map((s) => s.field)),
    ];
    for (const [i, f] of this.fields.entries()) this.index.set(f, i);
    for (const s of pump.sensors)
      if (!this.tableBit.has(s.table)) this.tableBit.set(s.table, this.tableBit.size);
    this.last = this.fields.map(() => undefined);
    this.closedMemory = opts.closedMemory ?? 10_000;
  }

  get openGroups(): number {
    return this.groups.size;
  }

  /** Open groups at or above the threshold: they close within the settle time. The rest wait for expiry. */
  get settlingGroups(): number {
    return this.settling;
  }

  add(r: Reading): AddResult {
    const now = this.clock.now();
    const closed = this.closed.get(r.tiempo);
    if (closed !== undefined) {
      // Only a table the closed group lacks can be late for it. A second row of a table it holds is the
      // key coming back (a clock reset, `HH:MM` the next day): a new timestamp, as after the window.
      if (now - closed.at < this.opts.lateWindowMs && !this.holds(closed.tables, r.sensor.table))
        return 'late';
      this.closed.delete(r.tiempo);
    }
    const i = this.index.get(r.sensor.field);
    if (i === undefined) throw new Error(`pump ${this.pump.id} has no field ${r.sensor.field}`);
    let g = this.groups.get(r.tiempo);
    if (!g) {
      if (this.groups.size >= this.opts.maxOpenGroups) this.evictOldest();
      g = {
        tiempo: r.tiempo,
        tables: [],
        values: this.fields.map(() => undefined),
        sources: this.fields.map(() => undefined),
        count: 0,
        members: [],
        firstAt: now,
        lastAt: now,
      };
      this.groups.set(r.tiempo, g);
    }
    this.mark(g.tables, r.sensor.table);
    const replaced = g.values[i] !== undefined;
    if (replaced && g.sources[i] !== r.sensor.table) {
      // Another channel's reading for a field this timestamp has: the first one keeps it.
      g.members.push({ table: r.sensor.table, id: r.id, ticket: r.ticket });
      return 'conflicting';
    }
    if (!replaced) {
      g.count += 1;
      if (g.count === this.pump.minFields) this.settling += 1;
    }
    // A second row for the same sensor and timestamp is a correction: the later value wins.
    g.values[i] = r.valor;
    g.sources[i] = r.sensor.table;
    g.members.push({ table: r.sensor.table, id: r.id, ticket: r.ticket });
    g.lastAt = now;
    this.last[i] = { value: r.valor, at: now };
    if (g.count === this.fields.length) this.emit(g, []);
    return replaced ? 'replaced' : 'added';
  }

  /**
   * Resolves groups whose settle time or expiry has passed. Call it periodically.
   * - `missing`: rows of the pump may still be unread (a read is slow, or a catch-up is due): a group at
   *   the threshold waits for them rather than going out with fills; expiry still closes it.
   * - `held`: notifications of the pump were lost and the catch-up that reads them has not finished: no
   *   group expires either, and expiry counts from the moment the hold ends, so a slow catch-up's rows
   *   still meet their timestamp. The open-group cap still bounds what waits.
   */
  tick(missing = false, held = false): void {
    const now = this.clock.now();
    if (held) this.heldAt = now;
    // Closed keys are kept in closing order: forget those past the late window.
    for (const [tiempo, { at }] of this.closed) {
      if (now - at < this.opts.lateWindowMs) break;
      this.closed.delete(tiempo);
    }
    for (const g of this.groups.values()) {
      const expired = !held && now - Math.max(g.firstAt, this.heldAt) >= this.opts.expiryMs;
      const settled = !missing && g.count >= this.pump.minFields && now - g.lastAt >= this.opts.settleMs;
      if (!expired && !settled) continue;
      const fills = g.count >= this.pump.minFields ? this.fillsFor(g, now) : undefined;
      if (fills) this.emit(g, fills);
      else if (expired) this.drop(g, 'expired');
      // else: above the threshold but a gap cannot be filled yet; hold until full or expired.
    }
  }

  /** Open groups, oldest first, for display. */
  view(limit: number): GroupView[] {
    const out: GroupView[] = [];
    for (const g of this.groups.values()) {
      if (out.length >= limit) break;
      out.push({ tiempo: g.tiempo, present: g.values.map((v) => v !== undefined) });
    }
    return out;
  }

  /** Fill values for every missing field, or undefined if a required field has no usable fill. */
  private fillsFor(g: Group, now: number): Fill[] | undefined {
    const fills: Fill[] = [];
    for (let i = 0; i < this.fields.length; i++) {
      if (g.values[i] !== undefined) continue;
      const field = this.fields[i] as string;
      const last = this.last[i];
      const fallback = this.pump.defaults[field];
      if (last && now - last.at <= this.opts.fillMaxAgeMs)
        fills.push({ field, from: 'last', value: last.value });
      else if (fallback !== undefined) fills.push({ field, from: 'default', value: fallback });
      else if (!(field in this.pump.optionalFields)) return undefined;
    }
    return fills;
  }

  private evictOldest(): void {
    const oldest = this.groups.values().next().value;
    if (!oldest) return;
    const fills = oldest.count >= this.pump.minFields ? this.fillsFor(oldest, this.clock.now()) : undefined;
    if (fills) this.emit(oldest, fills);
    else this.drop(oldest, 'evicted');
  }

  private close(g: Group): void {
    this.groups.delete(g.tiempo);
    if (g.count >= this.pump.minFields) this.settling -= 1;
    this.closed.set(g.tiempo, { at: this.clock.now(), tables: g.tables });
    if (this.closed.size > this.closedMemory) {
      const first = this.closed.keys().next().value;
      if (first !== undefined) this.closed.delete(first);
    }
  }

  private mark(tables: number[], table: string): void {
    const bit = this.tableBit.get(table) ?? 0;
    const w = (bit / 31) | 0;
    while (tables.length <= w) tables.push(0);
    tables[w] = (tables[w] as number) | (1 << (bit % 31));
  }

  private holds(tables: number[], table: string): boolean {
    const bit = this.tableBit.get(table) ?? 0;
    return (((tables[(bit / 31) | 0] ?? 0) >> (bit % 31)) & 1) === 1;
  }

  /** The present values (and fills), keyed by field in the definition's order. */
  private valuesOf(g: Group, fills: Fill[] = []): Record<string, number> {
    const merged = [...g.values];
    for (const f of fills) merged[this.index.get(f.field) as number] = f.value;
    const values: Record<string, number> = {};
    merged.forEach((v, i) => {
      if (v !== undefined) values[this.fields[i] as string] = v;
    });
    return values;
  }

  private emit(g: Group, fills: Fill[]): void {
    this.close(g);
    const values = this.valuesOf(g, fills);
    const omitted = this.fields.filter((f) => values[f] === undefined);
    this.sink.vector({
      pump: this.pump.id,
      tiempo: g.tiempo,
      values,
      present: g.count,
      filled: fills,
      omitted,
      members: g.members,
      firstReceivedAt: g.firstAt,
    });
  }

  private drop(g: Group, reason: DroppedGroup['reason']): void {
    this.close(g);
    this.sink.dropped({
      pump: this.pump.id,
      tiempo: g.tiempo,
      values: this.valuesOf(g),
      missing: this.fields.filter((_, i) => g.values[i] === undefined),
      reason,
      members: g.members,
    });
  }
}
