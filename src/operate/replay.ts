import { Assembler, type AssemblerOptions } from '../assembler/assembler.js';
import type { PumpConfig } from '../config/env.js';
import { readingKey, vectorKey } from '../model/keys.js';
import type { Member } from '../model/reading.js';
import { Decoder } from '../source/decode.js';
import type { KeyedPost } from '../store/deferred-posts.js';
import { member } from '../store/members.js';
import { insertReplayVectors, type ReplayVector } from '../store/outbox.js';
import { ManualClock } from '../util/clock.js';
import {
  beginRun,
  queuePosts,
  type ReplayResult,
  type RunOptions,
  readRange,
  withRetries,
} from './replay-run.js';

export interface ReplayOptions extends RunOptions {
  pump: PumpConfig;
  /** Every pump of the wiring (default: `pump` alone): a table it shares with another is keyed with the pump. */
  pumps?: PumpConfig[];
  /** The grouping rules, as the engine runs them (SETTLE_MS, GROUP_EXPIRY_MS, FILL_MAX_AGE_MS, …). */
  assembler: AssemblerOptions;
  /** Also queue every reading's per-sensor post again. */
  posts: boolean;
}

/** The engine's tick: how often open groups are looked at for settle time and expiry. */
const TICK_MS = 100;

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
  // Posted-only sensors (inVector false) never join a vector: read only for their posts.
  const sensors = pump.sensors.filter((s) => s.inVector || o.posts);
  const run = await beginRun(
    o,
    pump.id,
    `pump ${pump.id}`,
    sensors.map((s) => s.table),
    { posts: o.posts, rate: o.rate ?? null },
  );
  const { range, checkpoints, counts, id, suffix, pacer } = run;
  const inserted = { vectors: 0, posts: 0 };
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

export { type LogbookReplayOptions, replayLogbook } from './replay-logbook.js';
export { ReplayInputError, type ReplayProgress, type ReplayResult } from './replay-run.js';
