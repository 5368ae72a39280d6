import type pg from 'pg';
import { Assembler, type AssemblerOptions } from '../assembler/assembler.js';
import type { PumpConfig } from '../config/env.js';
import { readingKey, replaySuffix, vectorKey } from '../model/keys.js';
import type { Member } from '../model/reading.js';
import { Decoder } from '../source/decode.js';
import { describePgError, inTransaction, quoteIdent } from '../store/db.js';
import { insertKeyedDeferred, type KeyedPost } from '../store/deferred-posts.js';
import { member } from '../store/members.js';
import { ENGINE_SCHEMA } from '../store/migrations.js';
import { insertReplayVectors, type ReplayVector } from '../store/outbox.js';
import { finishReplay, type ReplayCounts, startReplay } from '../store/replays.js';
import { ManualClock, sleep } from '../util/clock.js';

export interface ReplayOptions {
  pool: pg.Pool;
  pump: PumpConfig;
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

async function parseRange(pool: pg.Pool, from: string, to: string): Promise<{ from: string; to: string }> {
  const asTimestamp = async (flag: string, value: string) => {
    try {
      const { rows } = await pool.query<{ t: string }>('SELECT $1::timestamp::text AS t', [value]);
      return rows[0]?.t as string;
    } catch (err) {
      throw new ReplayInputError(
        `${flag}: got ${JSON.stringify(value)}, expected a timestamp such as 2025-01-31 08:00 (${describePgError(err)})`,
      );
    }
  };
  const f = await asTimestamp('--from', from);
  const t = await asTimestamp('--to', to);
  const { rows } = await pool.query<{ ok: boolean }>('SELECT $1::timestamp < $2::timestamp AS ok', [f, t]);
  if (!rows[0]?.ok) throw new ReplayInputError(`--from ${f} is not before --to ${t}`);
  return { from: f, to: t };
}

/**
 * Each table's number (for members) and saved checkpoint for this pump, its reader: every row at or below
 * it is settled. A table's row from before per-reader checkpoints (pump '') stands in until the engine has
 * started with the upgrade.
 */
async function checkpointsOf(
  pool: pg.Pool,
  pump: PumpConfig,
): Promise<Map<string, { no: number; lastId: number }>> {
  const tables = pump.sensors.map((s) => s.table);
  const { rows } = await pool.query<{ table_name: string; table_no: number; last_id: string }>(
    `SELECT DISTINCT ON (table_name) table_name, table_no, last_id FROM ${ENGINE_SCHEMA}.checkpoints
      WHERE table_name = ANY($1) AND pump IN ($2, '') ORDER BY table_name, pump = $2 DESC`,
    [tables, pump.id],
  );
  const out = new Map(rows.map((r) => [r.table_name, { no: r.table_no, lastId: Number(r.last_id) }]));
  const missing = tables.filter((t) => !out.has(t));
  if (missing.length > 0) {
    throw new ReplayInputError(
      `pump ${pump.id} has never been served by pump-monitor listen (no checkpoint for ${missing.slice(0, 3).join(', ')}${missing.length > 3 ? ', …' : ''}); start it once first`,
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
  const checkpoints = await checkpointsOf(pool, pump);
  const counts: ReplayCounts = {
    rows: 0,
    vectors: 0,
    filled: 0,
    dropped: 0,
    late: 0,
    invalid: 0,
    posts: 0,
    unsettled: 0,
  };
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
    while (posts.length > 0) {
      const chunk = posts.splice(0, pacer.chunk);
      await pacer.take(chunk.length, o.signal);
      inserted.posts += await withRetries(
        () => inTransaction(pool, (tx) => insertKeyedDeferred(tx, chunk)),
        o.signal,
      ).then((keys) => keys.size);
    }
  };

  const decoder = new Decoder([pump]);
  // Only rows at or below their table's checkpoint: the engine has dealt with those (their groups are
  // stored). A row above it is still the engine's to group and send; a replay building a group from it
  // would share its members with the group the engine is about to store, and the engine would take its
  // own, perhaps fuller, group for a rebuild of the replay's and not send it.
  const branches = (settled: boolean) =>
    pump.sensors.map((s, k) => {
      const cp = checkpoints.get(s.table)?.lastId ?? 0;
      return `SELECT ${k} AS s, id, tiempo_ejecucion AS te,
              json_build_object('id_sensor', id, 'valor', valor_sensor, 'tiempo_sensor', tiempo_sensor)::text AS payload
         FROM ${quoteIdent(s.table)} WHERE tiempo_ejecucion >= $1::timestamp AND tiempo_ejecucion < $2::timestamp
          AND id ${settled ? '<=' : '>'} ${cp}`;
    });
  const rowsSql = `(${branches(true).join('\nUNION ALL\n')})`;
  // One snapshot for the count and every batch; read-only, so it holds no transaction id and no checkpoint back.
  const reader = await pool.connect();
  let error: string | undefined;
  try {
    await reader.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
    const { rows: total } = await reader.query<{ n: string }>(`SELECT count(*) AS n FROM ${rowsSql} r`, [
      range.from,
      range.to,
    ]);
    const totalRows = Number(total[0]?.n ?? 0);
    const { rows: above } = await reader.query<{ n: string }>(
      `SELECT count(*) AS n FROM (${branches(false).join('\nUNION ALL\n')}) r`,
      [range.from, range.to],
    );
    counts.unsettled = Number(above[0]?.n ?? 0);
    await reader.query(
      `DECLARE replay_rows NO SCROLL CURSOR FOR
         SELECT s, id, (extract(epoch FROM te) * 1000)::float8 AS at, payload FROM ${rowsSql} r ORDER BY te, s, id`,
      [range.from, range.to],
    );
    let started = false;
    for (;;) {
      if (o.signal?.aborted) throw new Error(`interrupted after ${counts.rows} of ${totalRows} rows`);
      const { rows } = await reader.query<{ s: number; id: string | number; at: number; payload: string }>(
        `FETCH ${FETCH_ROWS} FROM replay_rows`,
      );
      for (const r of rows) {
        if (!started) {
          clock.advance(r.at - clock.now());
          started = true;
        } else advanceTo(r.at);
        counts.rows += 1;
        const sensor = pump.sensors[r.s] as PumpConfig['sensors'][number];
        const decoded = decoder.decode(sensor.channel, r.payload, clock.now(), 'catchup');
        if (!decoded.ok) {
          counts.invalid += 1;
          continue;
        }
        if (assembler.add(decoded.reading) === 'late') counts.late += 1;
        if (o.posts) {
          counts.posts += 1;
          posts.push({
            pump: pump.id,
            channel: sensor.channel,
            payload: r.payload,
            key: `${readingKey(decoded.reading)}${suffix}`,
          });
        }
      }
      await flush();
      o.onProgress?.({ read: counts.rows, total: totalRows, counts });
      if (rows.length < FETCH_ROWS) break;
    }
    await reader.query('COMMIT');
    // Resolve whatever is still open: past expiry every group is either sent (with fills) or dropped.
    advanceTo(clock.now() + o.assembler.expiryMs + o.assembler.settleMs + TICK_MS);
    await flush();
    o.onProgress?.({ read: counts.rows, total: totalRows, counts });
  } catch (err) {
    error = describePgError(err);
    await reader.query('ROLLBACK').catch(() => {});
    throw err;
  } finally {
    reader.release();
    if (id !== undefined) await finishReplay(pool, id, counts, error).catch(() => {});
  }
  return { id, pump: pump.id, from: range.from, to: range.to, counts, inserted };
}
