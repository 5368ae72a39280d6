import type pg from 'pg';
import type { Logger } from 'pino';
import type { PumpConfig } from '../config/env.js';
import { describePgError } from '../store/db.js';
import { readRowsAfter, type SensorRow } from '../store/sensor-rows.js';
import { sleep } from '../util/clock.js';
import { getOrAdd } from '../util/maps.js';

export interface CatchUpOptions {
  pool: pg.Pool;
  pumps: PumpConfig[];
  /** The readers' ledger: a round per reader says where to read from, and is finished once read to the end. */
  ledger: { beginCatchUp(pump: string, table: string): { from: number; finish(): void } };
  /** Rows read per table and statement (`CATCHUP_BATCH`); a table holds at most two batches unhanded. */
  batch: number;
  /**
   * Feeds a batch of one table's rows, in id order, through the same path as notified rows on its channel,
   * for one reader (`pump`); each row's `posted`: its per-sensor post for that pump is already on record
   * (answered, deferred or dead-lettered before a restart). Synchronous: every row is begun in the ledger
   * when it returns.
   */
  handle: (channel: string, rows: readonly SensorRow[], pump: string) => void;
  /** Resolves when the engine has room for another batch (backpressure). */
  capacity: () => Promise<void>;
  signal: AbortSignal;
  onRows?: (pump: string, rows: number) => void;
  /** Progress of a long catch-up, about once a second; rows read so far and tables still being read. */
  onProgress?: (rows: number, tablesLeft: number) => void;
}

/**
 * Rows handed over between two turns of the event loop. A round of the seed's two pumps is up to 17,500
 * rows, seconds of work on a loaded machine; the per-sensor posts its first rows start would wait all that
 * time to be written, with their attempt's deadline running.
 */
const SLICE = 256;

/** One table's rows read and not yet handed over, in id order, and whether the table is read to its end. */
export interface Buffered {
  table: string;
  /** Read to the end: no more rows are fetched, and the buffer is all that is left. */
  done: boolean;
  /** Rows read but not yet handed over, in id order; fewer than two batches. */
  buffer: SensorRow[];
}

interface Cursor extends Buffered {
  pump: string;
  channel: string;
  after: number;
  released: boolean;
  round: { from: number; finish(): void };
}

/**
 * Reads the rows each reader (pump, table) has not settled, above its own checkpoint, in bounded batches, and hands them to the
 * sensor path, the same way as the rows notifications name (both read `tiempo_sensor` as the trigger's
 * JSON renders it, so both group by the same text). Live notifications keep flowing between batches; duplicates from the overlap are
 * removed per reader by (table, id). A shared table is read once per pump, each from its checkpoint.
 *
 * A bulk path: each round reads every table's next batch in one statement (`readRowsAfter`), hands each
 * table's share over in synchronous batches (`handle`) of up to SLICE rows, with a turn of the event loop
 * between them so the posts they start go out meanwhile, and starts reading the next round's rows while
 * the engine works off this one's (its posts and vectors) and the backpressure holds the hand-over back.
 * What a round hands over is decided by `takeRound`.
 */
export async function catchUp(o: CatchUpOptions): Promise<number> {
  const cursors: Cursor[] = o.pumps.flatMap((p) =>
    p.sensors.map((s) => {
      // From the saved checkpoint, not the one in memory: only the saved one is held below rows that
      // transactions still in progress may commit. What lies between is deduplicated by (table, id).
      const round = o.ledger.beginCatchUp(p.id, s.table);
      return {
        pump: p.id,
        channel: s.channel,
        table: s.table,
        after: round.from,
        done: false,
        released: false,
        round,
        buffer: [],
      };
    }),
  );
  const byPump = new Map<string, Cursor[]>();
  for (const c of cursors) byPump.set(c.pump, [...(byPump.get(c.pump) ?? []), c]);
  let total = 0;
  let lastReport = Date.now();
  let reading: Promise<void> | undefined = readRound(o, cursors);
  try {
    while (!o.signal.aborted && cursors.some((c) => !c.released)) {
      await reading;
      reading = undefined;
      if (o.signal.aborted) break;
      let sinceTurn = 0;
      for (const [pump, own] of byPump) {
        const taken = takeRound(own);
        let handed = 0;
        for (const [i, c] of own.entries()) {
          const rows = taken[i] as SensorRow[];
          for (let from = 0; from < rows.length; from += SLICE) {
            // The posts a slice starts are under way (their attempt's deadline running) once handed: the
            // event loop gets a turn between slices to send them, instead of after the whole round.
            if (sinceTurn >= SLICE) {
              await new Promise<void>((resolve) => setImmediate(resolve));
              sinceTurn = 0;
              // Stopping: the rows not handed are not begun, and their reader's hold stays.
              if (o.signal.aborted) {
                if (handed > 0) o.onRows?.(pump, handed);
                return total + handed;
              }
            }
            const slice = rows.length <= SLICE ? rows : rows.slice(from, from + SLICE);
            o.handle(c.channel, slice, c.pump);
            sinceTurn += slice.length;
            handed += slice.length;
          }
          // Only once every row read is handed over (and so begun in the ledger): the hold it lifts would
          // otherwise let the checkpoint pass a row still in the buffer.
          if (c.done && c.buffer.length === 0 && !c.released) {
            c.released = true;
            c.round.finish();
          }
        }
        if (handed > 0) {
          total += handed;
          o.onRows?.(pump, handed);
        }
      }
      if (Date.now() - lastReport > 1_000) {
        lastReport = Date.now();
        o.onProgress?.(total, cursors.filter((c) => !c.released).length);
      }
      if (!cursors.some((c) => !c.released)) break;
      // The next round's rows are read while this one's posts and vectors go out.
      reading = readRound(o, cursors);
      // Awaited after the wait for room; until then a failed read must not count as unhandled.
      reading.catch(() => {});
      await o.capacity();
      await new Promise<void>((resolve) => setImmediate(resolve));
    }
  } finally {
    // No read outlives the round (a stop closes the pool after it).
    await reading?.catch(() => {});
  }
  return total;
}

/** Reads the next batch of every table that is not read to its end and holds less than a batch, in one statement. */
async function readRound(o: CatchUpOptions, cursors: Cursor[]): Promise<void> {
  const want = cursors.filter((c) => !c.done && c.buffer.length < o.batch);
  if (want.length === 0 || o.signal.aborted) return;
  const read = await readRowsAfter(
    o.pool,
    want.map((c) => ({ table: c.table, pump: c.pump, after: c.after })),
    o.batch,
  );
  for (const [i, c] of want.entries()) {
    const rows = read[i] as SensorRow[];
    if (rows.length > 0) c.after = (rows[rows.length - 1] as SensorRow).id;
    // Read to the end: everything committed before this catch-up began has now been seen.
    if (rows.length < o.batch) c.done = true;
    for (const r of rows) c.buffer.push(r);
  }
}

/**
 * What one pump's tables hand over in a round, taken from their buffers: for each table, a prefix of its
 * buffer in id order, so a checkpoint never passes a row held back.
 *
 * A pump's tables are kept in step by time. A table with missing readings covers more time per batch than
 * its siblings, and handing batches over as read would open groups far ahead of the others, which the
 * assembler can only expire. So each round hands over only rows up to the horizon: the smallest of the
 * latest `tiempo_sensor` read from each table that still has rows to read. The rest wait in the table's
 * buffer. The table that sets the horizon hands over all it holds, so every round makes progress.
 * Timestamps are compared as text: ISO-like keys sort by time; keys that do not (such as `HH:MM` across
 * midnight) only weaken the alignment, never stall it.
 *
 * A table hands over one row per key text a round. A second row of a table under a key text it handed
 * this round is that key coming back (`HH:MM` the next day, a clock reset), or a correction: it waits for
 * the next round, after the group it would join has had its other tables' rows, as a live engine would
 * have seen it. Handed together, two days of `HH:MM` rows made one group. Pure.
 */
export function takeRound(own: readonly Buffered[]): SensorRow[][] {
  const horizon = horizonOf(own);
  // By table: two sensors of a pump on one table share its rows, and its one row per key text.
  const handedKeys = new Map<string, Set<string>>();
  return own.map((c) => {
    const keys = getOrAdd(handedKeys, c.table, () => new Set<string>());
    let n = 0;
    while (n < c.buffer.length) {
      const r = c.buffer[n] as SensorRow;
      if (horizon !== undefined && r.t > horizon) break;
      if (r.t !== '') {
        if (keys.has(r.t)) break;
        keys.add(r.t);
      }
      n++;
    }
    return c.buffer.splice(0, n);
  });
}

/** The latest timestamp every table of a pump that still has rows to read has reached; none when all are read. */
function horizonOf(cursors: readonly Buffered[]): string | undefined {
  let horizon: string | undefined;
  for (const c of cursors) {
    if (c.done) continue;
    let latest: string | undefined;
    for (const r of c.buffer) if (latest === undefined || r.t > latest) latest = r.t;
    if (latest !== undefined && (horizon === undefined || latest < horizon)) horizon = latest;
  }
  return horizon;
}

export interface CatchUpRunnerOptions extends Omit<CatchUpOptions, 'pumps' | 'onProgress' | 'capacity'> {
  /**
   * The units whose load holds catch-up back: before each batch it waits while any is above 1 (the posts
   * in memory, the groups settling, the outbox writes waiting).
   */
  units: { load(): number }[];
  /** The pumps to read for: those this replica owns at the moment a round starts. */
  pumps: () => PumpConfig[];
  /** Whether a failed round should be tried again (the LISTEN connection is up). */
  listening: () => boolean;
  logger: Logger;
  /** A long catch-up's progress for a terminal line; undefined clears it. */
  progress?: (text: string | undefined) => void;
  /** What one round runs (default `catchUp`): the runner only schedules rounds. */
  round?: (o: CatchUpOptions) => Promise<number>;
}

/**
 * Runs catch-up rounds one at a time. A request during a round asks for one more round after it, so a
 * reconnect or a takeover that happens mid-round is never missed. Owns no state but its loop.
 */
export class CatchUpRunner {
  private loop: Promise<void> | undefined;
  private again = false;
  private waiting = false;
  private stopped = false;

  constructor(private readonly o: CatchUpRunnerOptions) {}

  get running(): boolean {
    return this.loop !== undefined;
  }

  request(): void {
    if (this.stopped) return;
    if (this.loop) {
      this.again = true;
      return;
    }
    this.loop = this.run().finally(() => {
      this.loop = undefined;
    });
  }

  /** No new rounds; resolves when the current one ends. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.again = false;
    await this.loop;
  }

  /**
   * True while a round waits for room: the groups its rows opened must then be let go by time (expiry),
   * or the round that would lift its readers' hold never goes on (`Monitor`'s tick).
   */
  get waitingForRoom(): boolean {
    return this.waiting;
  }

  /** Resolves once every unit has room for another batch, or the engine stops. */
  private async room(): Promise<void> {
    const { signal, units } = this.o;
    this.waiting = true;
    try {
      while (!signal.aborted && !this.stopped && units.some((u) => u.load() > 1)) await sleep(20, signal);
    } finally {
      this.waiting = false;
    }
  }

  private async run(): Promise<void> {
    const { logger, progress } = this.o;
    do {
      this.again = false;
      try {
        const started = Date.now();
        const rows = await (this.o.round ?? catchUp)({
          ...this.o,
          capacity: () => this.room(),
          pumps: this.o.pumps(),
          onProgress: (n, left) => progress?.(`catching up: ${n} rows read, ${left} tables left`),
        });
        progress?.(undefined);
        if (rows > 0) logger.info({ rows, ms: Date.now() - started }, 'caught up from the tables');
      } catch (err) {
        if (this.stopped) break;
        logger.warn({ err: describePgError(err) }, 'catch-up failed; will retry');
        await sleep(1_000, this.o.signal);
        this.again = this.o.listening();
      }
    } while (this.again && !this.stopped);
  }
}
