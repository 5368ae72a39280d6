/**
 * What every phase shares: the run's environment, fresh databases, the engine child, and `withPhase`, the
 * one helper that sets a phase up (database, backend, engine), hands it a context to measure with, and
 * tears everything down in reverse order, also when the phase fails.
 */
import type { ChildProcess } from 'node:child_process';
import path from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import type { DatabaseConfig, PumpConfig } from '../src/config/env.js';
import { quoteIdent, withClient } from '../src/store/db.js';
import { ENGINE_SCHEMA, migrate } from '../src/store/schema.js';
import type { EmbeddedPostgres } from '../src/tools/postgres/embedded.js';
import type { BenchServer, Completion } from './bench-server.js';
import { Child } from './children.js';
import { costOf, type EngineCost, engineMark } from './cost.js';
import { type CpuShare, type CpuSnapshot, cpuShare, cpuSnapshot } from './cpu.js';
import type { EngineCommand, EngineMessage, RssSample } from './engine-runner.js';
import { type Group, Inserter, tiempoOf } from './inserter.js';
import type { EngineVariant, Options } from './options.js';
import { formatSummary, type ProfileSummary, summarizeProfile } from './profile-summary.js';
import { megabytes, now, waitUntil } from './stats.js';

export interface Env {
  opts: Options;
  server: EmbeddedPostgres;
  pumps: PumpConfig[];
  bench: BenchServer;
  sensorsPerTick: number;
  serial: number;
  baseMs: number;
  children: Set<{ proc: ChildProcess }>;
  /** The compiled bench scripts the children run. */
  scripts: string;
  /** The PostgreSQL postmaster's pid, for CPU accounting. */
  postmaster: number | undefined;
  /** CPU profile summaries of the engine children, by phase label (with --cpu-prof). */
  profiles: Record<string, ProfileSummary>;
  /** The engine variant the current phase runs under (--engine-variants), laid over --engine-env. */
  variant?: EngineVariant | undefined;
}

export interface Database {
  name: string;
  url: string;
  config: DatabaseConfig;
  drop(): Promise<void>;
}

export type Engine = Child<EngineMessage, EngineCommand>;

export interface EngineRun {
  engine: Engine;
  samples: RssSample[];
  profileName: string | undefined;
}

export function log(line: string): void {
  process.stdout.write(`${line}\n`);
}

export function indent(text: string, n: number): string {
  const pad = ' '.repeat(n);
  return text
    .split('\n')
    .map((l) => pad + l)
    .join('\n');
}

/** A generous bound for a phase of `n` items at no less than `minPerS` items per second. */
export function timeoutFor(n: number, minPerS: number): number {
  return Math.min(15 * 60_000, Math.max(60_000, (n / minPerS) * 1000));
}

/** A clean environment for the children: the bench decides every setting, nothing leaks from the shell. */
export function childEnv(extra: Record<string, string>): Record<string, string> {
  const keep = ['PATH', 'HOME', 'LANG', 'TMPDIR', 'TZ'];
  const out: Record<string, string> = {};
  for (const k of keep) if (process.env[k] !== undefined) out[k] = process.env[k] as string;
  return { ...out, ...extra };
}

/**
 * A fresh database with the seed pumps' sensor tables, the triggers, and every checkpoint at 0. withPhase
 * makes one per phase; a phase that runs several engines on one database (the fleet) makes its own.
 */
export async function freshDatabase(env: Env, label: string): Promise<Database> {
  env.serial += 1;
  const name = `bench_${env.serial}_${label}`;
  await env.server.createDatabase(name);
  const config = env.server.database(name);
  const url = new URL(env.server.url);
  url.pathname = `/${name}`;
  const tables = env.pumps.flatMap((p) => p.sensors.map((s) => s.table));
  await withClient(config, 'bench-setup', async (c) => {
    await migrate(c, env.pumps);
    // A fresh database's checkpoints would start at each table's last row; 0 makes every row count. A
    // row with no pump is a table's single-reader checkpoint, which its reader takes over at start.
    await c.query(
      `INSERT INTO ${ENGINE_SCHEMA}.checkpoints (table_name, pump, last_id)
       SELECT DISTINCT t, '', 0 FROM unnest($1::text[]) AS t
       ON CONFLICT (table_name, pump) DO UPDATE SET last_id = 0`,
      [tables],
    );
    await c.query('CHECKPOINT');
  });
  return {
    name,
    url: url.toString(),
    config,
    drop: () =>
      withClient(env.server.database('postgres'), 'bench-setup', async (c) => {
        await c.query(`DROP DATABASE IF EXISTS ${quoteIdent(name)} WITH (FORCE)`);
      }),
  };
}

/** Forks the engine runner (its Monitor is built, not started); `ready` resolves once it is built. */
function spawnEngine(
  env: Env,
  db: Database,
  label: string,
  extra: Record<string, string>,
  timeoutMs: number,
): { run: EngineRun; ready: Promise<unknown> } {
  const profileName = env.opts.cpuProf ? `engine-${label}${variantSuffix(env)}.cpuprofile` : undefined;
  const nodeFlags = [
    ...env.opts.engineNodeFlags,
    ...(env.opts.cpuProf
      ? ['--cpu-prof', `--cpu-prof-dir=${env.opts.cpuProf}`, `--cpu-prof-name=${profileName}`]
      : []),
  ];
  const engine: Engine = new Child(path.join(env.scripts, 'engine-runner.js'), {
    env: childEnv({
      DATABASE_URL: db.url,
      BASE_URL: env.bench.url,
      BASE_URL_B: `${env.bench.url}/sensores_b`,
      API_KEY: 'bench-api-key',
      LOG_LEVEL: 'silent',
      PORT: '0',
      ...env.opts.engineEnv,
      ...env.variant?.env,
      ...extra,
    }),
    nodeFlags,
  });
  env.children.add(engine);
  const samples: RssSample[] = [];
  engine.on('sample', (s) =>
    samples.push({ at: s.at, rss: s.rss, heapUsed: s.heapUsed, external: s.external }),
  );
  return { run: { engine, samples, profileName }, ready: engine.next('ready', timeoutMs) };
}

/** "-name" of the variant a phase runs under, "" without --engine-variants. */
function variantSuffix(env: Env): string {
  return env.variant ? `-${env.variant.name}` : '';
}

async function stopEngine(env: Env, run: EngineRun, label: string): Promise<void> {
  await run.engine.stop({ type: 'stop' }, 20_000);
  env.children.delete(run.engine);
  if (!env.opts.cpuProf || !run.profileName) return;
  try {
    const s = summarizeProfile(path.join(env.opts.cpuProf, run.profileName), 15);
    env.profiles[`${label}${variantSuffix(env)}`] = s;
    log(`\n  profile of the engine (${run.profileName}):\n${indent(formatSummary(s), 4)}\n`);
  } catch (err) {
    log(`  no profile: ${(err as Error).message}`);
  }
}

/** The engine's status() and its own CPU time so far. */
export async function engineProbe(
  run: EngineRun,
): Promise<{ status: Record<string, unknown>; cpuMs: number } | undefined> {
  try {
    const reply = run.engine.next('status', 5_000);
    run.engine.send({ type: 'status' });
    const m = await reply;
    return { status: m.status as unknown as Record<string, unknown>, cpuMs: m.cpuMs };
  } catch {
    return undefined;
  }
}

function snap(env: Env, run: EngineRun | undefined, helper?: number): CpuSnapshot {
  return cpuSnapshot({ postmaster: env.postmaster, engine: run?.engine.proc.pid, helpers: [helper] });
}

/**
 * Other work on the machine (another test suite, a build) steals cores from the measurement. Waits, up to
 * the configured bound, for a one-second window in which it stays below 0.25 cores; returns that load.
 */
export async function waitQuiet(env: Env): Promise<number> {
  const deadline = Date.now() + env.opts.quietWaitSeconds * 1000;
  let other = 0;
  let announced = false;
  for (let i = 0; i < 1_000; i++) {
    const a = snap(env, undefined);
    await delay(1_000);
    other = cpuShare(a, snap(env, undefined)).otherCores;
    if (other < 0.25 || Date.now() >= deadline) break;
    if (!announced) log(`  other load on the machine: ${other.toFixed(2)} cores; waiting for it to drop`);
    announced = true;
  }
  return other;
}

/**
 * Waits until `vectors` distinct vectors and `posts` distinct posts have arrived. Gives up after `maxMs`,
 * or once nothing new has arrived for 45 s (longer than a group's expiry): what is missing then is lost.
 */
export async function arrivals(
  env: Env,
  vectors: number,
  posts: number,
  maxMs: number,
): Promise<Completion | undefined> {
  let seen = -1;
  let since = now();
  const r = await waitUntil<Completion | 'stalled'>(() => {
    const x = env.bench.completion(vectors, posts);
    if (x.done) return x;
    const n = env.bench.unified.size + env.bench.sensorKeys.size;
    if (n !== seen) {
      seen = n;
      since = now();
    }
    return now() - since > 45_000 ? 'stalled' : undefined;
  }, maxMs);
  return r === 'stalled' ? undefined : r;
}

/** Timestamps of both pumps, interleaved A0, B0, A1, B1, ... with distinct tiempo_sensor texts. */
export function fullGroups(env: Env, timestamps: number): Group[] {
  env.baseMs += 86_400_000; // a new day per phase: no key is ever reused across phases
  const groups: Group[] = [];
  for (let i = 0; i < timestamps; i++) {
    for (const pump of env.pumps) groups.push({ pump, tiempo: tiempoOf(env.baseMs, i) });
  }
  return groups;
}

export function rssStats(samples: RssSample[]) {
  if (samples.length === 0) return { peakMb: Number.NaN, lastMb: Number.NaN };
  return {
    peakMb: megabytes(Math.max(...samples.map((s) => s.rss))),
    lastMb: megabytes(samples[samples.length - 1]?.rss ?? 0),
  };
}

// ---------------------------------------------------------------- the phase helper

export interface PhaseSpec {
  /** Names the phase's database (dashes become underscores) and its engine's CPU profile. */
  label: string;
  /**
   * A fresh database (default); false for a phase without one (the HTTP limit); or a database the caller
   * made with `freshDatabase` and drops itself (several engines in turn on the same tables: the fleet).
   */
  database?: boolean | Database;
  /** Runs once the database exists, before the engine is forked (the catch-up's outage). */
  prepare?: (db: Database) => Promise<void>;
  /**
   * An engine child with these settings; started before `measure` unless `start` is false. Its build and
   * its start may each take `timeoutMs` (default 60 s; thousands of tables take longer).
   */
  engine?: { env: Record<string, string>; start?: boolean; timeoutMs?: number };
}

/** What a measurement window measured: where the CPU went, and (with an engine) the engine's cost. */
export interface Measured {
  cpu: CpuShare;
  cost: EngineCost | undefined;
}

/** A measurement window: opened by `ctx.meter()`, closed by `stop(readings)`. */
export interface Meter {
  stop(readings?: number): Promise<Measured>;
}

export interface PhaseContext {
  readonly env: Env;
  /** The phase's database (throws for a phase that has none). */
  readonly db: Database;
  /** The phase's engine (throws for a phase that has none). */
  readonly engine: EngineRun;
  /** Starts the engine (when the phase asked for `start: false`); returns its start time in ms. */
  startEngine(): Promise<number>;
  /** Inserting connections to the phase's database, closed at tear-down (see Inserter.connect). */
  inserter(connections: number, maxStatements?: number): Promise<Inserter>;
  /** A helper child (bare listener, load generator): sent `stop` at tear-down, or awaited, then killed. */
  spawn<M extends { type: string }, C>(
    script: string,
    env: Record<string, string>,
    stop?: { command: C; graceMs: number },
  ): Child<M, C>;
  /** Runs `fn` at tear-down, before the engine stops and the database is dropped (last deferred first). */
  defer(fn: () => unknown): void;
  /**
   * Opens a measurement window over the tracked processes (and a helper child's pid); with an engine, it
   * also takes the engine's marks at both ends (one IPC round trip each, outside the CPU window).
   */
  meter(helper?: number): Promise<Meter>;
}

/**
 * Sets a phase up (backend reset, fresh database, `prepare`, engine), runs `measure`, and tears down in
 * reverse order whatever was set up, also when a step fails; the first error is rethrown.
 */
export async function withPhase<T>(
  env: Env,
  spec: PhaseSpec,
  measure: (ctx: PhaseContext) => Promise<T>,
): Promise<T> {
  const undo: (() => unknown)[] = [];
  let db: Database | undefined;
  let run: EngineRun | undefined;
  const ctx: PhaseContext = {
    env,
    get db(): Database {
      if (!db) throw new Error(`phase ${spec.label} has no database`);
      return db;
    },
    get engine(): EngineRun {
      if (!run) throw new Error(`phase ${spec.label} has no engine`);
      return run;
    },
    async startEngine() {
      const engine = ctx.engine.engine;
      const started = engine.next('started', spec.engine?.timeoutMs ?? 60_000);
      engine.send({ type: 'start' });
      return (await started).startMs;
    },
    async inserter(connections, maxStatements) {
      const ins = await Inserter.connect(ctx.db.config, connections, maxStatements);
      undo.push(() => ins.close());
      return ins;
    },
    spawn<M extends { type: string }, C>(
      script: string,
      extra: Record<string, string>,
      stop?: { command: C; graceMs: number },
    ) {
      const child = new Child<M, C>(path.join(env.scripts, script), { env: childEnv(extra) });
      env.children.add(child);
      undo.push(async () => {
        if (stop) await child.stop(stop.command, stop.graceMs);
        else {
          const kill = setTimeout(() => child.proc.kill('SIGKILL'), 15_000);
          await child.exited;
          clearTimeout(kill);
        }
        env.children.delete(child);
      });
      return child;
    },
    defer(fn) {
      undo.push(fn);
    },
    async meter(helper) {
      const engine = run?.engine;
      const m0 = engine ? await engineMark(engine) : undefined;
      const a = snap(env, run, helper);
      return {
        stop: async (readings = 0) => {
          const b = snap(env, run, helper);
          const m1 = engine ? await engineMark(engine) : undefined;
          const cost = engine
            ? costOf(m0, m1, b.engineMs - a.engineMs, b.engineSysMs - a.engineSysMs, readings)
            : undefined;
          return { cpu: cpuShare(a, b), cost };
        },
      };
    },
  };
  let failed = false;
  let failure: unknown;
  let result: T | undefined;
  try {
    env.bench.reset();
    if (typeof spec.database === 'object') db = spec.database;
    else if (spec.database !== false) {
      const d = await freshDatabase(env, spec.label.replaceAll('-', '_'));
      db = d;
      undo.push(() => d.drop());
    }
    if (spec.prepare) await spec.prepare(ctx.db);
    if (spec.engine) {
      const spawned = spawnEngine(env, ctx.db, spec.label, spec.engine.env, spec.engine.timeoutMs ?? 60_000);
      const r = spawned.run;
      run = r;
      undo.push(() => stopEngine(env, r, spec.label));
      await spawned.ready;
      if (spec.engine.start !== false) await ctx.startEngine();
    }
    result = await measure(ctx);
  } catch (err) {
    failed = true;
    failure = err;
  }
  for (const fn of undo.reverse()) {
    try {
      await fn();
    } catch (err) {
      if (!failed) failure = err;
      failed = true;
    }
  }
  env.bench.reset();
  if (failed) throw failure;
  return result as T;
}
