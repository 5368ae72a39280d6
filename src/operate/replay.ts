import type pg from 'pg';
import { Assembler, type AssemblerOptions } from '../assembler/assembler.js';
import type { LogbookConfig, PumpConfig } from '../config/env.js';
import { readingKey } from '../delivery/sensor-poster.js';
import type { Member } from '../model/reading.js';
import { Decoder } from '../source/decode.js';
import { describePgError, inTransaction } from '../store/db.js';
import { insertKeyedDeferred, type KeyedPost } from '../store/deferred-posts.js';
import { member } from '../store/members.js';
import { insertReplayVectors, type ReplayVector, vectorKey } from '../store/outbox.js';
import {
  asTimestamp,
  isBefore,
  RangeReader,
  type RangeRow,
  type RangeTable,
  readerCheckpoints,
} from '../store/replay-rows.js';
import { finishReplay, type ReplayCounts, startReplay } from '../store/replays.js';
import { ManualClock, sleep } from '../util/clock.js';

export interface ReplayOptions {
  pool: pg.Pool;
  pump: PumpConfig;
  /** Every pump of the wiring (default: `pump` alone): a table it shares with another is keyed with the pump. */
  pumps?: PumpConfig[];
  /** The grouping rules, as the engine runs them (SETTLE_MS, GROUP_EXPIRY_MS, FILL_MAX_AGE_MS, …). */
  assembler: AssemblerOptions;
  /** The range on the rows' tiempo_ejecucion, in PostgreSQL's timestamp syntax: from inclusive, to exclusive. */
  from: string;
  to: string;
  /** Also queue every reading's per-sensor post again. */
  posts: boolean;
  /** Count only: nothing is written, not even the audit row. */
  dryRun: boolean;
  /** At most this many rows (vectors and posts) inserted per second. */
  rate?: number | undefined;
  /** Who runs it, for the audit (the OS user). */
  runBy: string;
  onProgress?: (p: ReplayProgress) => void;
  signal?: AbortSignal;
}

export interface ReplayProgress {
  read: number;
  total: number;
  counts: ReplayCounts;
}

export interface ReplayResult {
  /** The audit row's id, in every key the replay sends; none for a dry run. */
  id: number | undefined;
  pump: string;
  /** The range as PostgreSQL read it. */
  from: string;
  to: string;
  counts: ReplayCounts;
  /** Rows actually inserted: fewer than counted only when an insert was retried after a lost answer. */
  inserted: { vectors: number; posts: number };
}

/** A mistake in what the operator asked for: the CLI prints it as one line. */
export class ReplayInputError extends Error {
  override name = 'ReplayInputError';
}

/** The engine's tick: how often open groups are looked at for settle time and expiry. */
const TICK_MS = 100;
const FETCH_ROWS = 1_000;

/** The Idempotency-Key suffix that marks a replay's requests: new for each run, the same within one. */
export function replaySuffix(id: number): string {
  return `-replay-${id}`;
}

async function parseRange(pool: pg.Pool, from: string, to: string): Promise<{ from: string; to: string }> {
  const read = async (flag: string, value: string) => {
    try {
      return await asTimestamp(pool, value);
    } catch (err) {
      throw new ReplayInputError(
        `${flag}: got ${JSON.stringify(value)}, expected a timestamp such as 2025-01-31 08:00 (${describePgError(err)})`,
      );
    }
  };
  const f = await read('--from', from);
  const t = await read('--to', to);
  if (!(await isBefore(pool, f, t))) throw new ReplayInputError(`--from ${f} is not before --to ${t}`);
  return { from: f, to: t };
}

/** Each table's number and checkpoint for this reader; every table must have one. */
async function checkpointsOf(
  pool: pg.Pool,
  reader: string,
  what: string,
  tables: string[],
): Promise<Map<string, { no: number; lastId: number }>> {
  const out = await readerCheckpoints(pool, reader, tables);
  const missing = tables.filter((t) => !out.has(t));
  if (missing.length > 0) {
    throw new ReplayInputError(
      `${what} has never been served by pump-monitor listen (no checkpoint for ${missing.slice(0, 3).join(', ')}${missing.length > 3 ? ', …' : ''}); start it once first`,
    );
  }
  return out;
}

/** Spaces inserts out to at most `perSecond` rows a second. */
class Pacer {
  private next = Date.now();
  constructor(private readonly perSecond: number | undefined) {}

  /** How many rows to insert at once. */
  get chunk(): number {
    return this.perSecond === undefined ? 500 : Math.max(1, Math.min(500, Math.floor(this.perSecond)));
  }

  async take(n: number, signal?: AbortSignal): Promise<void> {
    if (this.perSecond === undefined) return;
    const wait = this.next - Date.now();
    if (wait > 0) await sleep(wait, signal);
    this.next = Math.max(this.next, Date.now()) + (n * 1000) / this.perSecond;
  }
}

/** Runs a statement again after a lost connection or a timeout: every insert here is idempotent by key. */
async function withRetries<T>(fn: () => Promise<T>, signal?: AbortSignal): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn();
    } catch (err) {
      if (attempt >= 5 || signal?.aborted) throw err;
      await sleep(200 * 2 ** attempt, signal);
    }
  }
}

/**
 * Rebuilds a pump's vectors (and, with `posts`, its per-sensor posts) for a range of tiempo_ejecucion, from
 * the sensor tables, through the engine's own grouping rules: the rows are fed to an Assembler in the order
 * they were written, on a clock that follows their tiempo_ejecucion, so settle time, expiry, fills from
 * recent values and the late rule apply as they did live; at the end every open group is resolved. Full
 * vectors and those at the threshold (with fills) are stored as pending outbox rows of the pump, under the
 * group's key plus `-replay-<id>`; groups below the threshold are counted as dropped. The pump's owning
 * replica sends them with its normal sender, so a replay is safe beside running listeners and replicas.
 *
 * Every run is a new replay, with an audit row and keys of its own: a backend that deduplicates by key
 * takes it as new on purpose. Within one run the keys are unique, so an insert retried after a lost
 * answer stores nothing twice.
 */
export async function replay(o: ReplayOptions): Promise<ReplayResult> {
  const { pool, pump } = o;
  const range = await parseRange(pool, o.from, o.to);
  // Posted-only sensors (inVector false) never join a vector: read only for their posts.
  const sensors = pump.sensors.filter((s) => s.inVector || o.posts);
  const checkpoints = await checkpointsOf(
    pool,
    pump.id,
    `pump ${pump.id}`,
    sensors.map((s) => s.table),
  );
  const counts = emptyCounts();
  const inserted = { vectors: 0, posts: 0 };
  const id = o.dryRun
    ? undefined
    : await startReplay(pool, {
        runBy: o.runBy,
        pump: pump.id,
        from: range.from,
        to: range.to,
        options: { posts: o.posts, rate: o.rate ?? null },
      });
  const suffix = id === undefined ? '' : replaySuffix(id);
  const vectors: ReplayVector[] = [];
  const posts: KeyedPost[] = [];
  const numbered = (members: Member[]) =>
    members.map((m) => member(checkpoints.get(m.table)?.no as number, m.id));
  const clock = new ManualClock();
  const assembler = new Assembler(pump, o.assembler, clock, {
    vector: (v) => {
      counts.vectors += 1;
      if (v.filled.length > 0) counts.filled += 1;
      const members = numbered(v.members);
      vectors.push({
        pump: pump.id,
        tiempo: v.tiempo,
        key: `${vectorKey(pump.id, v.tiempo, members)}${suffix}`,
        body: v.values,
        filled: v.filled.map((f) => `${f.field}:${f.from}`),
        missing: v.omitted,
        members,
        replayId: id ?? 0,
      });
    },
    dropped: () => {
      counts.dropped += 1;
    },
  });
  /** Moves the clock to `at`, looking at open groups every tick on the way, as the engine does. */
  const advanceTo = (at: number) => {
    if (at <= clock.now()) return;
    while (assembler.openGroups > 0 && clock.now() + TICK_MS < at) {
      clock.advance(TICK_MS);
      assembler.tick();
    }
    clock.advance(at - clock.now());
    assembler.tick();
  };
  const pacer = new Pacer(o.rate);
  const flush = async () => {
    if (o.dryRun) {
      vectors.length = 0;
      posts.length = 0;
      return;
    }
    while (vectors.length > 0) {
      const chunk = vectors.splice(0, pacer.chunk);
      await pacer.take(chunk.length, o.signal);
      inserted.vectors += await withRetries(() => insertReplayVectors(pool, chunk), o.signal);
    }
    inserted.posts += await queuePosts(pool, posts, pacer, o.signal);
  };

  // Every pump of the wiring: a shared table's reading is keyed with its pump, as the engine keys it.
  const decoder = new Decoder(o.pumps ?? [pump]);
  // Only rows at or below their table's checkpoint: the engine has dealt with those (their groups are
  // stored). A row above it is still the engine's to group and send; a replay building a group from it
  // would share its members with the group the engine is about to store, and the engine would take its
  // own, perhaps fuller, group for a rebuild of the replay's and not send it.
  const tables = sensors.map((s) => ({
    table: s.table,
    checkpoint: checkpoints.get(s.table)?.lastId ?? 0,
    shape: 'sensor' as const,
  }));
  let started = false;
  await readRange(
    pool,
    tables,
    range,
    counts,
    o,
    async (r) => {
      if (!started) {
        clock.advance(r.at - clock.now());
        started = true;
      } else advanceTo(r.at);
      const sensor = sensors[r.s] as PumpConfig['sensors'][number];
      const decoded = decoder.decode(sensor.channel, r.payload, clock.now(), 'catchup', pump.id);
      if (!decoded.ok) {
        counts.invalid += 1;
        return;
      }
      if (sensor.inVector && assembler.add(decoded.reading) === 'late') counts.late += 1;
      if (o.posts) {
        counts.posts += 1;
        posts.push({
          pump: pump.id,
          channel: sensor.channel,
          payload: r.payload,
          key: `${readingKey(decoded.reading)}${suffix}`,
        });
      }
    },
    flush,
    async () => {
      // Resolve whatever is still open: past expiry every group is either sent (with fills) or dropped.
      advanceTo(clock.now() + o.assembler.expiryMs + o.assembler.settleMs + TICK_MS);
      await flush();
    },
    id,
  );
  return { id, pump: pump.id, from: range.from, to: range.to, counts, inserted };
}

function emptyCounts(): ReplayCounts {
  return { rows: 0, vectors: 0, filled: 0, dropped: 0, late: 0, invalid: 0, posts: 0, unsettled: 0 };
}

/** Inserts queued posts in paced chunks, each retried after a lost answer (idempotent by key). */
async function queuePosts(
  pool: pg.Pool,
  posts: KeyedPost[],
  pacer: Pacer,
  signal: AbortSignal | undefined,
): Promise<number> {
  let inserted = 0;
  while (posts.length > 0) {
    const chunk = posts.splice(0, pacer.chunk);
    await pacer.take(chunk.length, signal);
    inserted += await withRetries(
      () => inTransaction(pool, (tx) => insertKeyedDeferred(tx, chunk)),
      signal,
    ).then((keys) => keys.size);
  }
  return inserted;
}

/**
 * Reads a range's settled rows in one snapshot, handing each to `each` and flushing after every batch;
 * `finish` runs after the last. The audit row (`id`) is closed with the counts, or the error.
 */
async function readRange(
  pool: pg.Pool,
  tables: RangeTable[],
  range: { from: string; to: string },
  counts: ReplayCounts,
  o: Pick<ReplayOptions, 'onProgress' | 'signal'>,
  each: (r: RangeRow) => Promise<void> | void,
  flush: () => Promise<void>,
  finish: () => Promise<void>,
  id: number | undefined,
): Promise<void> {
  const reader = await RangeReader.open(pool, tables, range.from, range.to);
  let error: string | undefined;
  let ok = false;
  try {
    const { settled: totalRows, unsettled } = await reader.counts();
    counts.unsettled = unsettled;
    for (;;) {
      if (o.signal?.aborted) throw new Error(`interrupted after ${counts.rows} of ${totalRows} rows`);
      const rows = await reader.fetch(FETCH_ROWS);
      for (const r of rows) {
        counts.rows += 1;
        await each(r);
      }
      await flush();
      o.onProgress?.({ read: counts.rows, total: totalRows, counts });
      if (rows.length < FETCH_ROWS) break;
    }
    await reader.close(true);
    ok = true;
    await finish();
    o.onProgress?.({ read: counts.rows, total: totalRows, counts });
  } catch (err) {
    error = describePgError(err);
    if (!ok) await reader.close(false).catch(() => {});
    throw err;
  } finally {
    if (id !== undefined) await finishReplay(pool, id, counts, error).catch(() => {});
  }
}

/** A logbook's replay: what the operator asked for. */
export interface LogbookReplayOptions
  extends Pick<
    ReplayOptions,
    'pool' | 'from' | 'to' | 'dryRun' | 'rate' | 'runBy' | 'onProgress' | 'signal'
  > {
  logbook: LogbookConfig;
}

/**
 * Queues a logbook's entries of a range of tiempo_ejecucion again: each settled row of its streams' tables
 * (at or below the logbook's checkpoint) becomes a queued post (deferred_posts, pump = the logbook id)
 * under its key plus `-replay-<id>`, which the replica holding the logbook's lease sends, reading the
 * entry's text from the row. Rows without a tiempo_ejecucion are outside every range.
 */
export async function replayLogbook(o: LogbookReplayOptions): Promise<ReplayResult> {
  const { pool, logbook } = o;
  const range = await parseRange(pool, o.from, o.to);
  const streams = logbook.streams;
  const checkpoints = await checkpointsOf(
    pool,
    logbook.id,
    `logbook ${logbook.id}`,
    streams.map((s) => s.table),
  );
  const counts = emptyCounts();
  const id = o.dryRun
    ? undefined
    : await startReplay(pool, {
        runBy: o.runBy,
        pump: logbook.id,
        from: range.from,
        to: range.to,
        options: { logbook: true, rate: o.rate ?? null },
      });
  const suffix = id === undefined ? '' : replaySuffix(id);
  const posts: KeyedPost[] = [];
  const pacer = new Pacer(o.rate);
  let inserted = 0;
  const flush = async () => {
    if (o.dryRun) posts.length = 0;
    else inserted += await queuePosts(pool, posts, pacer, o.signal);
  };
  const tables = streams.map((s) => ({
    table: s.table,
    checkpoint: checkpoints.get(s.table)?.lastId ?? 0,
    shape: 'logbook' as const,
  }));
  await readRange(
    pool,
    tables,
    range,
    counts,
    o,
    (r) => {
      const stream = streams[r.s] as LogbookConfig['streams'][number];
      counts.posts += 1;
      posts.push({
        pump: logbook.id,
        channel: stream.channel,
        payload: JSON.stringify({ id: r.id }),
        key: `${logbookEntryKey(stream.table, r.id)}${suffix}`,
      });
    },
    flush,
    flush,
    id,
  );
  return {
    id,
    pump: logbook.id,
    from: range.from,
    to: range.to,
    counts,
    inserted: { vectors: 0, posts: inserted },
  };
}

/** A logbook entry's Idempotency-Key, as the logbook lane sends it: lb-<table>-<id>. */
export function logbookEntryKey(table: string, id: number): string {
  return `lb-${table}-${id}`;
}
