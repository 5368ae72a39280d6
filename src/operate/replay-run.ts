import type pg from 'pg';
import { replaySuffix } from '../model/keys.js';
import { describePgError, inTransaction } from '../store/db.js';
import { insertKeyedDeferred, type KeyedPost } from '../store/deferred-posts.js';
import {
  asTimestamp,
  isBefore,
  RangeReader,
  type RangeRow,
  type RangeTable,
  readerCheckpoints,
} from '../store/replay-rows.js';
import { finishReplay, type ReplayCounts, startReplay } from '../store/replays.js';
import { sleep } from '../util/clock.js';

/** What a pump's replay and a logbook's share: the range, the audit row, the pacing and the snapshot read. */

/** What every replay is given. */
export interface RunOptions {
  pool: pg.Pool;
  /** The range on the rows' tiempo_ejecucion, in PostgreSQL's timestamp syntax: from inclusive, to exclusive. */
  from: string;
  to: string;
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

const FETCH_ROWS = 1_000;

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
export class Pacer {
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
export async function withRetries<T>(fn: () => Promise<T>, signal?: AbortSignal): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn();
    } catch (err) {
      if (attempt >= 5 || signal?.aborted) throw err;
      await sleep(200 * 2 ** attempt, signal);
    }
  }
}

function emptyCounts(): ReplayCounts {
  return { rows: 0, vectors: 0, filled: 0, dropped: 0, late: 0, invalid: 0, posts: 0, unsettled: 0 };
}

/** Inserts queued posts in paced chunks, each retried after a lost answer (idempotent by key). */
export async function queuePosts(
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
export async function readRange(
  pool: pg.Pool,
  tables: RangeTable[],
  range: { from: string; to: string },
  counts: ReplayCounts,
  o: Pick<RunOptions, 'onProgress' | 'signal'>,
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

/** A run begun: its range as PostgreSQL read it, the reader's checkpoints, its counts and audit row. */
export interface Run {
  range: { from: string; to: string };
  checkpoints: Map<string, { no: number; lastId: number }>;
  counts: ReplayCounts;
  /** The audit row's id; none for a dry run. */
  id: number | undefined;
  /** `-replay-<id>`, or '' for a dry run. */
  suffix: string;
  pacer: Pacer;
}

/**
 * Checks the range, reads the reader's checkpoint of every table (each must have one), and opens the
 * audit row (not for a dry run).
 */
export async function beginRun(
  o: RunOptions,
  reader: string,
  what: string,
  tables: string[],
  options: Record<string, unknown>,
): Promise<Run> {
  const range = await parseRange(o.pool, o.from, o.to);
  const checkpoints = await checkpointsOf(o.pool, reader, what, tables);
  const id = o.dryRun
    ? undefined
    : await startReplay(o.pool, { runBy: o.runBy, pump: reader, from: range.from, to: range.to, options });
  return {
    range,
    checkpoints,
    counts: emptyCounts(),
    id,
    suffix: id === undefined ? '' : replaySuffix(id),
    pacer: new Pacer(o.rate),
  };
}
