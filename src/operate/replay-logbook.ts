import type { LogbookConfig } from '../config/env.js';
import { logbookKey } from '../model/keys.js';
import type { KeyedPost } from '../store/deferred-posts.js';
import { beginRun, queuePosts, type ReplayResult, type RunOptions, readRange } from './replay-run.js';

/** A logbook's replay: what the operator asked for. */
export interface LogbookReplayOptions extends RunOptions {
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
  const streams = logbook.streams;
  const tableNames = streams.map((s) => s.table);
  const run = await beginRun(o, logbook.id, `logbook ${logbook.id}`, tableNames, {
    logbook: true,
    rate: o.rate ?? null,
  });
  const { range, checkpoints, counts, id, suffix, pacer } = run;
  const posts: KeyedPost[] = [];
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
        key: `${logbookKey(stream.table, r.id)}${suffix}`,
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
