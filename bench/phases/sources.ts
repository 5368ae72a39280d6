/**
 * The two sources on the same inserts, in one run (issue 25, item 6): the engine on SOURCE=notify (the
 * tables' NOTIFY triggers and a LISTEN session) and on SOURCE=replication (no trigger, a pgoutput slot).
 * For each source and each number of writers (the bench's --inserters, then 8), the same burst of full
 * timestamps goes in as fast as the writers commit, and the phase reports the commits per second the
 * writers reached, each vector's delay from its commit to its arrival at the backend (p50, p99, max), and
 * the engine's CPU per reading. With 8 writers the notify source's writers queue on the cluster-wide lock
 * PostgreSQL takes in PreCommit_Notify; without triggers nothing does. Quick mode keeps the bursts small.
 */
import pg from 'pg';
import { loadConfig } from '../../src/config/env.js';
import { migrateSource } from '../../src/source/replication/migrate.js';
import { replicationNames } from '../../src/source/replication/setup.js';
import { clientConfig, withClient } from '../../src/store/db.js';
import { ENGINE_SCHEMA } from '../../src/store/schema.js';
import type { EngineCost } from '../cost.js';
import type { CpuShare } from '../cpu.js';
import {
  arrivals,
  type Database,
  type Env,
  freshDatabase,
  fullGroups,
  timeoutFor,
  withPhase,
} from '../harness.js';
import { quantile, round } from '../stats.js';

export type SourceKind = 'notify' | 'replication';

export interface SourceBurst {
  source: SourceKind;
  writers: number;
  timestamps: number;
  readings: number;
  /** Commits (one per pump timestamp, its rows in one transaction) per second over the burst. */
  commitsPerS: number;
  /** Each vector from its commit to its first arrival at the backend, ms. */
  lag: { p50Ms: number; p99Ms: number; maxMs: number };
  /** Vectors not arrived (or not found in the outbox) when the phase gave up waiting. */
  missing: number;
  cpu: CpuShare;
  engineCost: EngineCost | undefined;
}

export interface SourcesResult {
  /** Each source's bursts, in the order run: notify then replication, each with its writer counts. */
  runs: SourceBurst[];
  /** 8 writers' commits/s on the notify source over the replication source's (below 1: the lock costs). */
  notifyWritersRatio: number;
}

/** Timestamps per burst and of the warm-up, by mode: quick is a check that it runs, full is the measure. */
function sizes(env: Env): { timestamps: number; warmup: number } {
  return env.opts.mode === 'quick' ? { timestamps: 30, warmup: 10 } : { timestamps: 1_500, warmup: 300 };
}

/** Under SOURCE=replication: the triggers off, the publication and the slot, as `migrate` makes them. */
async function asReplication(db: Database): Promise<void> {
  const config = loadConfig({ DATABASE_URL: db.url, SOURCE: 'replication' });
  await withClient(db.config, 'bench-setup', (c) => migrateSource(c, config));
}

/** The slot first (it would refuse the drop), then the database; a just-stopped walsender lets go late. */
async function dropWithSlot(db: Database): Promise<void> {
  const slot = replicationNames(loadConfig({ SOURCE: 'replication' }).source, db.name).slot;
  const c = new pg.Client(clientConfig(db.config, 'bench-setup'));
  c.on('error', () => {});
  await c.connect();
  try {
    for (let attempt = 1; attempt <= 50; attempt++) {
      try {
        await c.query(
          'SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1',
          [slot],
        );
        break;
      } catch (err) {
        if (attempt === 50) throw err;
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  } finally {
    await c.end().catch(() => {});
  }
  await db.drop();
}

async function runSource(env: Env, source: SourceKind, writerCounts: number[]): Promise<SourceBurst[]> {
  const db = await freshDatabase(env, `sources_${source}`);
  try {
    if (source === 'replication') await asReplication(db);
    const spec = { label: `sources-${source}`, database: db, engine: { env: { SOURCE: source } } };
    return await withPhase(env, spec, async (ctx) => {
      const { timestamps, warmup } = sizes(env);
      const out: SourceBurst[] = [];
      let vectors = 0;
      let posts = 0;
      const warm = fullGroups(env, warmup);
      const ins0 = await ctx.inserter(2);
      await ins0.burst(warm);
      vectors += warm.length;
      posts += warmup * env.sensorsPerTick;
      if (!(await arrivals(env, vectors, posts, timeoutFor(posts, 200)))) {
        throw new Error(`sources, ${source}: the warm-up readings did not all arrive`);
      }
      for (const writers of writerCounts) {
        const groups = fullGroups(env, timestamps);
        const ins = await ctx.inserter(writers);
        const commits = new Map<string, number>();
        let last = 0;
        const meter = await ctx.meter();
        const { rows, firstAt } = await ins.burst(groups, (c) => {
          commits.set(`${c.pump}\n${c.tiempo}`, c.at);
          last = Math.max(last, c.at);
        });
        vectors += groups.length;
        posts += rows;
        const arrived = await arrivals(env, vectors, posts, timeoutFor(rows, 200));
        const { cpu, cost } = await meter.stop(rows);
        await ins.close();
        const lags = await lagsOf(ctx.db, env, commits);
        out.push({
          source,
          writers,
          timestamps,
          readings: rows,
          commitsPerS: round((groups.length * 1000) / Math.max(1, last - firstAt), 0),
          lag: {
            p50Ms: round(quantile(lags.values, 0.5), 1),
            p99Ms: round(quantile(lags.values, 0.99), 1),
            maxMs: round(lags.values.length ? Math.max(...lags.values) : Number.NaN, 1),
          },
          missing: arrived ? lags.missing : Math.max(lags.missing, 1),
          cpu,
          engineCost: cost,
        });
      }
      return out;
    });
  } finally {
    await (source === 'replication' ? dropWithSlot(db) : db.drop());
  }
}

/** Each committed pump timestamp's delay to its vector's first arrival (its key read from the outbox). */
async function lagsOf(
  db: Database,
  env: Env,
  commits: Map<string, number>,
): Promise<{ values: number[]; missing: number }> {
  const keys = await withClient(db.config, 'bench-setup', async (c) => {
    const { rows } = await c.query<{ k: string; t: string }>(
      `SELECT idempotency_key AS k, pump || E'\\n' || tiempo_sensor AS t FROM ${ENGINE_SCHEMA}.outbox`,
    );
    return new Map(rows.map((r) => [r.t, r.k]));
  });
  const values: number[] = [];
  let missing = 0;
  for (const [t, at] of commits) {
    const key = keys.get(t);
    const got = key === undefined ? undefined : env.bench.unified.get(key);
    if (got === undefined) missing += 1;
    else values.push(got - at);
  }
  return { values, missing };
}

export async function phaseSources(env: Env): Promise<SourcesResult> {
  const writerCounts = [...new Set([env.opts.inserters, 8])];
  const runs = [
    ...(await runSource(env, 'notify', writerCounts)),
    ...(await runSource(env, 'replication', writerCounts)),
  ];
  const at8 = (s: SourceKind) =>
    runs.find((r) => r.source === s && r.writers === 8)?.commitsPerS ?? Number.NaN;
  return { runs, notifyWritersRatio: round(at8('notify') / at8('replication'), 2) };
}

/** The phase's lines of the bench's table: one per source and writer count. */
export function sourcesTable(
  r: SourcesResult,
): { measure: string; value: string; cost: EngineCost | undefined; cpu: CpuShare }[] {
  return r.runs.map((b) => ({
    measure: `sources: ${b.source}, ${b.writers} writers (${b.readings} readings)`,
    value: `${b.commitsPerS} commits/s; lag p50 ${b.lag.p50Ms} ms, p99 ${b.lag.p99Ms} ms${b.missing ? `; ${b.missing} missing` : ''}`,
    cost: b.engineCost,
    cpu: b.cpu,
  }));
}
