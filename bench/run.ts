/**
 * npm run bench [-- --quick] [--rows N] [--cpu-prof[=dir]] [--only listener,http,engine,latency,catchup,memory]
 *
 * Measures the engine against the physical limits of this machine in one run: a bare LISTEN client
 * (the source's limit), the benchmark HTTP server (the delivery side's limit), then the engine itself:
 * throughput with and without per-sensor posts, commit-to-delivery latency at a steady rate, catch-up
 * after an outage, and (full mode) memory over a long run with a backend outage. Prints a table and writes
 * it as JSON to bench/results/. It reports; it does not fail on timings.
 */
import { type ChildProcess, execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { chmod, mkdir, mkdtemp, readFile, rename, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import pg from 'pg';
import { type DatabaseConfig, loadConfig, type PumpConfig } from '../src/config/env.js';
import { clientConfig, quoteIdent, withClient } from '../src/store/db.js';
import { ENGINE_SCHEMA, migrate } from '../src/store/schema.js';
import { type EmbeddedPostgres, startEmbeddedPostgres } from '../src/tools/embedded-postgres.js';
import { BenchServer, type Completion } from './bench-server.js';
import { buildForChildren } from './build.js';
import { Child } from './children.js';
import { type CpuShare, type CpuSnapshot, cpuShare, cpuSnapshot } from './cpu.js';
import type { EngineCommand, EngineMessage, RssSample } from './engine-runner.js';
import type { HttpLoadMessage } from './http-load.js';
import { type Group, Inserter, tiempoOf } from './inserter.js';
import type { ListenerCommand, ListenerMessage } from './listener-runner.js';
import { formatSummary, type ProfileSummary, summarizeProfile } from './profile-summary.js';
import { megabytes, now, quantile, round, sleepUntil, waitUntil } from './stats.js';

const here = path.dirname(fileURLToPath(import.meta.url));
/** The heap flags `npm start` runs the engine with; the container image sets the same in NODE_OPTIONS. */
const PRODUCTION_NODE_FLAGS = (
  (
    JSON.parse(readFileSync(path.join(here, '..', 'package.json'), 'utf8')) as { scripts: { start: string } }
  ).scripts.start.match(/--max-[a-z-]+=\d+/g) ?? []
).join(' ');
const PHASES = ['listener', 'http', 'engine', 'latency', 'catchup', 'memory'] as const;
type Phase = (typeof PHASES)[number];

// ---------------------------------------------------------------- options

interface Options {
  mode: 'quick' | 'full';
  rows: number;
  inserters: number;
  httpRequests: number;
  httpConnections: number;
  latencyRate: number;
  latencySeconds: number;
  latencyWarmupSeconds: number;
  catchUpTimestamps: number;
  catchUpGaps: boolean;
  memoryRows: number;
  memoryRate: number;
  outageSeconds: number;
  cpuProf: string | undefined;
  engineNodeFlags: string[];
  /** Extra engine settings (KEY=VALUE), applied under each phase's own (SENSOR_POSTS in the engine phases). */
  engineEnv: Record<string, string>;
  quietWaitSeconds: number;
  phases: Set<Phase>;
  out: string;
}

const HELP = `npm run bench -- [options]
  --quick                 small sizes, under a minute, no long memory run
  --rows N                readings for the throughput phases (default 20000 quick, 210000 full)
  --inserters N           inserting connections (default 2)
  --http-requests N       requests for the HTTP limit (default 20000 quick, 150000 full)
  --latency-seconds S     measured seconds of the latency phase (default 5 quick, 30 full)
  --catchup-timestamps N  timestamps per pump inserted during the outage (default 60 quick, 300 full)
  --catchup-gaps          catch up the memory run's mix (25% of the groups incomplete), not full vectors
  --memory-rows N         readings of the memory run (default 0 quick = skipped, 1000000 full)
  --memory-rate R         readings per second of the memory run (default 3000)
  --outage-seconds S      backend outage in the middle of the memory run (default 120)
  --cpu-prof[=DIR]        run the engine children under node --cpu-prof and summarize the profiles
  --engine-env K=V,...    extra engine environment, e.g. SENSOR_POST_CONCURRENCY=32 (the throughput
                          phases still set SENSOR_POSTS themselves)
  --engine-node-flags F   node flags for the engine children, space-separated (default: the heap
                          cap that npm start and the container image use; '--engine-node-flags=' for
                          none; add "--expose-gc" to make each RSS sample follow a full GC)
  --quiet-wait S          before each phase, wait up to S s for other load on the machine to
                          drop below 0.25 cores (default 0 quick, 60 full)
  --only a,b              phases: ${PHASES.join(', ')}
  --out DIR               where the JSON goes (default bench/results)`;

function parseOptions(argv: string[]): Options {
  const { values } = parseArgs({
    args: argv,
    options: {
      quick: { type: 'boolean', default: false },
      rows: { type: 'string' },
      inserters: { type: 'string' },
      'http-requests': { type: 'string' },
      'latency-seconds': { type: 'string' },
      'catchup-timestamps': { type: 'string' },
      'catchup-gaps': { type: 'boolean', default: false },
      'memory-rows': { type: 'string' },
      'memory-rate': { type: 'string' },
      'outage-seconds': { type: 'string' },
      'cpu-prof': { type: 'string' },
      'engine-node-flags': { type: 'string' },
      'engine-env': { type: 'string' },
      'quiet-wait': { type: 'string' },
      only: { type: 'string' },
      out: { type: 'string' },
      help: { type: 'boolean', default: false },
    },
    allowPositionals: false,
  });
  if (values.help) {
    process.stdout.write(`${HELP}\n`);
    process.exit(0);
  }
  const quick = values.quick === true;
  const int = (name: string, raw: string | undefined, fallback: number, min = 0) => {
    if (raw === undefined) return fallback;
    const n = Number(raw);
    if (!Number.isInteger(n) || n < min)
      throw new Error(`--${name}: got "${raw}", expected an integer >= ${min}`);
    return n;
  };
  const only = values.only?.split(',').map((s) => s.trim()) ?? [...PHASES];
  for (const p of only) {
    if (!PHASES.includes(p as Phase))
      throw new Error(`--only: unknown phase "${p}"; expected ${PHASES.join(', ')}`);
  }
  const cpuProfRaw = values['cpu-prof'];
  return {
    mode: quick ? 'quick' : 'full',
    rows: int('rows', values.rows, quick ? 20_000 : 210_000, 35),
    inserters: int('inserters', values.inserters, 2, 1),
    httpRequests: int('http-requests', values['http-requests'], quick ? 20_000 : 150_000, 100),
    httpConnections: 32,
    latencyRate: 1_000,
    latencySeconds: int('latency-seconds', values['latency-seconds'], quick ? 5 : 30, 1),
    latencyWarmupSeconds: quick ? 1 : 3,
    catchUpTimestamps: int('catchup-timestamps', values['catchup-timestamps'], quick ? 60 : 300, 1),
    catchUpGaps: values['catchup-gaps'] === true,
    memoryRows: int('memory-rows', values['memory-rows'], quick ? 0 : 1_000_000),
    memoryRate: int('memory-rate', values['memory-rate'], 3_000, 100),
    outageSeconds: int('outage-seconds', values['outage-seconds'], quick ? 3 : 120),
    cpuProf:
      cpuProfRaw === undefined
        ? undefined
        : cpuProfRaw === '' || cpuProfRaw === 'true'
          ? path.join(os.tmpdir(), `pump-monitor-bench-profiles-${Date.now()}`)
          : path.resolve(cpuProfRaw),
    engineEnv: parseEngineEnv(values['engine-env']),
    quietWaitSeconds: int('quiet-wait', values['quiet-wait'], quick ? 0 : 60),
    engineNodeFlags: (values['engine-node-flags'] ?? PRODUCTION_NODE_FLAGS).split(/\s+/).filter(Boolean),
    phases: new Set(only as Phase[]),
    out: path.resolve(values.out ?? path.join(here, 'results')),
  };
}

function parseEngineEnv(raw: string | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  for (const pair of (raw ?? '').split(',').filter(Boolean)) {
    const eq = pair.indexOf('=');
    if (eq <= 0) throw new Error(`--engine-env: got "${pair}", expected KEY=VALUE`);
    out[pair.slice(0, eq).trim()] = pair.slice(eq + 1).trim();
  }
  return out;
}

// The node parser treats "--cpu-prof" without a value as an error for a string option; accept both forms.
function normalizeArgv(argv: string[]): string[] {
  return argv.map((a) => (a === '--cpu-prof' ? '--cpu-prof=' : a));
}

// ---------------------------------------------------------------- environment

interface Env {
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
}

interface Database {
  name: string;
  url: string;
  config: DatabaseConfig;
  drop(): Promise<void>;
}

/** A fresh database with the sensor tables, the triggers, and every checkpoint at 0. */
async function freshDatabase(env: Env, label: string): Promise<Database> {
  env.serial += 1;
  const name = `bench_${env.serial}_${label}`;
  await env.server.createDatabase(name);
  const config = env.server.database(name);
  const url = new URL(env.server.url);
  url.pathname = `/${name}`;
  const tables = env.pumps.flatMap((p) => p.sensors.map((s) => s.table));
  await withClient(config, 'bench-setup', async (c) => {
    await migrate(c, env.pumps);
    // A fresh database's checkpoints would start at each table's last row; 0 makes every row count.
    await c.query(
      `INSERT INTO ${ENGINE_SCHEMA}.checkpoints (table_name, last_id)
       SELECT t, 0 FROM unnest($1::text[]) AS t
       ON CONFLICT (table_name) DO UPDATE SET last_id = 0`,
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

/** A clean environment for the children: the bench decides every setting, nothing leaks from the shell. */
function childEnv(extra: Record<string, string>): Record<string, string> {
  const keep = ['PATH', 'HOME', 'LANG', 'TMPDIR', 'TZ'];
  const out: Record<string, string> = {};
  for (const k of keep) if (process.env[k] !== undefined) out[k] = process.env[k] as string;
  return { ...out, ...extra };
}

function engineEnv(env: Env, db: Database, extra: Record<string, string>): Record<string, string> {
  return childEnv({
    DATABASE_URL: db.url,
    BASE_URL: env.bench.url,
    BASE_URL_B: `${env.bench.url}/sensores_b`,
    API_KEY: 'bench-api-key',
    LOG_LEVEL: 'silent',
    PORT: '0',
    ...env.opts.engineEnv,
    ...extra,
  });
}

type Engine = Child<EngineMessage, EngineCommand>;

interface EngineRun {
  engine: Engine;
  samples: RssSample[];
  profileName: string | undefined;
}

/** Spawns the engine runner and waits until it has built its Monitor (not started). */
async function spawnEngine(
  env: Env,
  db: Database,
  label: string,
  extra: Record<string, string>,
): Promise<EngineRun> {
  const profileName = env.opts.cpuProf ? `engine-${label}.cpuprofile` : undefined;
  const nodeFlags = [
    ...env.opts.engineNodeFlags,
    ...(env.opts.cpuProf
      ? ['--cpu-prof', `--cpu-prof-dir=${env.opts.cpuProf}`, `--cpu-prof-name=${profileName}`]
      : []),
  ];
  const engine: Engine = new Child(path.join(env.scripts, 'engine-runner.js'), {
    env: engineEnv(env, db, extra),
    nodeFlags,
  });
  env.children.add(engine);
  const samples: RssSample[] = [];
  engine.on('sample', (s) =>
    samples.push({ at: s.at, rss: s.rss, heapUsed: s.heapUsed, external: s.external }),
  );
  await engine.next('ready', 60_000);
  return { engine, samples, profileName };
}

async function startEngine(run: EngineRun): Promise<number> {
  const started = run.engine.next('started', 60_000);
  run.engine.send({ type: 'start' });
  return (await started).startMs;
}

/**
 * Other work on the machine (another test suite, a build) steals cores from the measurement. Waits, up to
 * the configured bound, for a one-second window in which it stays below 0.25 cores; returns that load.
 */
async function waitQuiet(env: Env): Promise<number> {
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
async function arrivals(
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

function snap(env: Env, run: EngineRun | undefined, helper?: number): CpuSnapshot {
  return cpuSnapshot({ postmaster: env.postmaster, engine: run?.engine.proc.pid, helpers: [helper] });
}

async function engineStatus(run: EngineRun): Promise<Record<string, unknown> | undefined> {
  return (await engineProbe(run))?.status;
}

/** The engine's status() and its own CPU time so far. */
async function engineProbe(
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

async function stopEngine(env: Env, run: EngineRun, label: string): Promise<void> {
  await run.engine.stop({ type: 'stop' }, 20_000);
  env.children.delete(run.engine);
  if (!env.opts.cpuProf || !run.profileName) return;
  try {
    const s = summarizeProfile(path.join(env.opts.cpuProf, run.profileName), 15);
    env.profiles[label] = s;
    log(`\n  profile of the engine (${run.profileName}):\n${indent(formatSummary(s), 4)}\n`);
  } catch (err) {
    log(`  no profile: ${(err as Error).message}`);
  }
}

/** Timestamps of both pumps, interleaved A0, B0, A1, B1, ... with distinct tiempo_sensor texts. */
function fullGroups(env: Env, timestamps: number): Group[] {
  env.baseMs += 86_400_000; // a new day per phase: no key is ever reused across phases
  const groups: Group[] = [];
  for (let i = 0; i < timestamps; i++) {
    for (const pump of env.pumps) groups.push({ pump, tiempo: tiempoOf(env.baseMs, i) });
  }
  return groups;
}

function rssStats(samples: RssSample[]) {
  if (samples.length === 0) return { peakMb: Number.NaN, lastMb: Number.NaN };
  return {
    peakMb: megabytes(Math.max(...samples.map((s) => s.rss))),
    lastMb: megabytes(samples[samples.length - 1]?.rss ?? 0),
  };
}

// ---------------------------------------------------------------- phases

interface ListenerResult {
  rows: number;
  transactions: number;
  insertMs: number;
  insertRowsPerS: number;
  lastNotificationMs: number;
  rowsPerS: number;
  cpu: CpuShare;
}

async function phaseListener(env: Env): Promise<ListenerResult> {
  const db = await freshDatabase(env, 'listener');
  const child = new Child<ListenerMessage, ListenerCommand>(path.join(env.scripts, 'listener-runner.js'), {
    env: childEnv({ DATABASE_URL: db.url }),
  });
  env.children.add(child);
  try {
    await child.next('ready', 60_000);
    const timestamps = Math.ceil(env.opts.rows / env.sensorsPerTick);
    const groups = fullGroups(env, timestamps);
    const expected = timestamps * env.sensorsPerTick;
    const done = child.next('done', timeoutFor(expected, 500));
    child.send({ type: 'expect', n: expected });
    const ins = await Inserter.connect(db.config, env.opts.inserters);
    const cpu0 = snap(env, undefined, child.proc.pid);
    const { rows, firstAt } = await ins.burst(groups);
    const insertEnd = now();
    const d = await done;
    const cpu = cpuShare(cpu0, snap(env, undefined, child.proc.pid));
    await ins.close();
    const elapsed = d.lastAt - firstAt;
    return {
      rows,
      transactions: groups.length,
      insertMs: round(insertEnd - firstAt, 0),
      insertRowsPerS: round((rows / (insertEnd - firstAt)) * 1000, 0),
      lastNotificationMs: round(elapsed, 0),
      rowsPerS: round((d.count / elapsed) * 1000, 0),
      cpu,
    };
  } finally {
    await child.stop({ type: 'stop' }, 5_000);
    env.children.delete(child);
    await db.drop();
  }
}

interface HttpResult {
  requests: number;
  connections: number;
  errors: number;
  ms: number;
  requestsPerS: number;
  cpu: CpuShare;
}

async function phaseHttp(env: Env): Promise<HttpResult> {
  env.bench.reset();
  const paths = env.pumps.flatMap((p) => p.sensors.map((s) => `${p.pathPrefix}${s.endpoint}`));
  const child = new Child<HttpLoadMessage, never>(path.join(env.scripts, 'http-load.js'), {
    env: childEnv({
      BENCH_ORIGIN: env.bench.url,
      BENCH_PATHS: paths.join(','),
      BENCH_CONNECTIONS: String(env.opts.httpConnections),
      BENCH_REQUESTS: String(env.opts.httpRequests),
      BENCH_WARMUP: String(Math.min(5_000, Math.ceil(env.opts.httpRequests / 10))),
    }),
  });
  env.children.add(child);
  try {
    const cpu0 = snap(env, undefined, child.proc.pid);
    const d = await child.next('done', timeoutFor(env.opts.httpRequests, 1_000));
    // Warm-up included; the load generator's CPU is helperCores.
    const cpu = cpuShare(cpu0, snap(env, undefined, child.proc.pid));
    return {
      requests: d.requests,
      connections: d.connections,
      errors: d.errors,
      ms: round(d.ms, 0),
      requestsPerS: round(d.rps, 0),
      cpu,
    };
  } finally {
    await child.exited;
    env.children.delete(child);
    env.bench.reset();
  }
}

interface EngineResult {
  sensorPosts: boolean;
  rows: number;
  vectors: number;
  sensorPostsExpected: number;
  complete: boolean;
  deliveredVectors: number;
  deliveredPosts: number;
  duplicates: number;
  insertMs: number;
  insertRowsPerS: number;
  elapsedMs: number;
  readingsPerS: number;
  peakRssMb: number;
  /** Transactions the engine committed meanwhile (the database's total minus the inserts). */
  /** Queries the engine sent through its pool during the phase (its own count; the LISTEN session aside). */
  engineQueries: number;
  engineQueriesPerVector: number;
  cpu: CpuShare;
  status: Record<string, unknown> | undefined;
}

async function phaseEngine(env: Env, sensorPosts: boolean): Promise<EngineResult> {
  const label = sensorPosts ? 'posts-on' : 'posts-off';
  const db = await freshDatabase(env, label.replace('-', '_'));
  env.bench.reset();
  const run = await spawnEngine(env, db, label, { SENSOR_POSTS: String(sensorPosts) });
  try {
    await startEngine(run);
    const timestamps = Math.ceil(env.opts.rows / env.sensorsPerTick);
    const groups = fullGroups(env, timestamps);
    const vectors = groups.length;
    const rowsExpected = timestamps * env.sensorsPerTick;
    const postsExpected = sensorPosts ? rowsExpected : 0;
    const ins = await Inserter.connect(db.config, env.opts.inserters);
    const queries0 = Number((await engineProbe(run))?.status.db_queries ?? Number.NaN);
    const cpu0 = snap(env, run);
    const { rows, firstAt } = await ins.burst(groups);
    const insertEnd = now();
    const c = await arrivals(env, vectors, postsExpected, timeoutFor(rowsExpected, sensorPosts ? 200 : 500));
    const cpu1 = snap(env, run);
    const probe1 = await engineProbe(run);
    const engineQueries = Number(probe1?.status.db_queries ?? Number.NaN) - queries0;
    await ins.close();
    const last = c ?? env.bench.completion(vectors, postsExpected);
    const elapsed = last.at - firstAt;
    const status = probe1?.status;
    return {
      sensorPosts,
      rows,
      vectors,
      sensorPostsExpected: postsExpected,
      complete: c !== undefined,
      deliveredVectors: env.bench.unified.size,
      deliveredPosts: env.bench.sensorKeys.size,
      duplicates: env.bench.duplicates,
      insertMs: round(insertEnd - firstAt, 0),
      insertRowsPerS: round((rows / (insertEnd - firstAt)) * 1000, 0),
      elapsedMs: round(elapsed, 0),
      readingsPerS: c ? round((rows / elapsed) * 1000, 0) : Number.NaN,
      peakRssMb: rssStats(run.samples).peakMb,
      engineQueries,
      engineQueriesPerVector: round(engineQueries / vectors, 2),
      cpu: cpuShare(cpu0, cpu1),
      status,
    };
  } finally {
    await stopEngine(env, run, label);
    await db.drop();
    env.bench.reset();
  }
}

interface LatencyResult {
  sensorPosts: boolean;
  rate: number;
  seconds: number;
  warmupSeconds: number;
  timestamps: number;
  samples: number;
  missing: number;
  behindMs: number;
  p50Ms: number;
  p90Ms: number;
  p99Ms: number;
  maxMs: number;
  minMs: number;
  /**
   * The same latency cut in two at the outbox row's created_at (the start of the engine's INSERT into the
   * outbox, PostgreSQL's clock, same machine): commit -> outbox INSERT, and outbox INSERT -> POST received.
   */
  segments: {
    toOutbox: { p50Ms: number; p99Ms: number; maxMs: number };
    outboxToPost: { p50Ms: number; p99Ms: number; maxMs: number };
  };
  peakRssMb: number;
  cpu: CpuShare;
}

function spread(xs: number[]) {
  return {
    p50Ms: round(quantile(xs, 0.5), 2),
    p99Ms: round(quantile(xs, 0.99), 2),
    maxMs: round(xs.length ? Math.max(...xs) : Number.NaN, 2),
  };
}

async function phaseLatency(env: Env, sensorPosts: boolean): Promise<LatencyResult> {
  const label = sensorPosts ? 'latency-posts-on' : 'latency-posts-off';
  const db = await freshDatabase(env, label.replaceAll('-', '_'));
  env.bench.reset();
  const run = await spawnEngine(env, db, label, { SENSOR_POSTS: String(sensorPosts) });
  try {
    await startEngine(run);
    const { latencyRate, latencySeconds, latencyWarmupSeconds } = env.opts;
    // One tick = one timestamp of every pump (35 readings); 1,000 readings/s is one tick per 35 ms.
    const intervalMs = (1000 * env.sensorsPerTick) / latencyRate;
    const warmupTicks = Math.round((latencyWarmupSeconds * 1000) / intervalMs);
    const ticks = warmupTicks + Math.round((latencySeconds * 1000) / intervalMs);
    env.baseMs += 86_400_000;
    const commits = new Map<string, number>();
    const ins = await Inserter.connect(db.config, env.pumps.length);
    const cpu0 = snap(env, run);
    const start = now() + 20;
    let behind = 0;
    for (let i = 0; i < ticks; i++) {
      const due = start + i * intervalMs;
      await sleepUntil(due);
      behind = Math.max(behind, now() - due);
      const tiempo = tiempoOf(env.baseMs, i, Math.round(intervalMs));
      const committed = await Promise.all(env.pumps.map((pump, k) => ins.insert(k, { pump, tiempo })));
      if (i < warmupTicks) continue;
      for (const c of committed) commits.set(`${c.pump}\n${c.tiempo}`, c.at);
    }
    const vectors = ticks * env.pumps.length;
    await waitUntil(() => (env.bench.completion(vectors, 0).done ? true : undefined), 30_000);
    const cpu1 = snap(env, run);
    await ins.close();
    // A vector's key derives from its rows: the outbox tells which key each pump timestamp got.
    const outbox = await withClient(db.config, 'bench-setup', async (c) => {
      const { rows } = await c.query<{ k: string; t: string; ms: number }>(
        `SELECT idempotency_key AS k, pump || E'\\n' || tiempo_sensor AS t,
                extract(epoch FROM created_at)::float8 * 1000 AS ms FROM ${ENGINE_SCHEMA}.outbox`,
      );
      return new Map(rows.map((r) => [r.t, { key: r.k, ms: Number(r.ms) }]));
    });
    const latencies: number[] = [];
    let missing = 0;
    for (const [t, at] of commits) {
      const key = outbox.get(t)?.key;
      const got = key === undefined ? undefined : env.bench.unified.get(key);
      if (got === undefined) missing += 1;
      else latencies.push(got - at);
    }
    const toOutbox: number[] = [];
    const outboxToPost: number[] = [];
    for (const [t, at] of commits) {
      const row = outbox.get(t);
      const c = row?.ms;
      const got = row === undefined ? undefined : env.bench.unified.get(row.key);
      if (c === undefined || got === undefined) continue;
      toOutbox.push(c - at);
      outboxToPost.push(got - c);
    }
    return {
      sensorPosts,
      rate: latencyRate,
      seconds: latencySeconds,
      warmupSeconds: latencyWarmupSeconds,
      timestamps: commits.size,
      samples: latencies.length,
      missing,
      behindMs: round(behind, 1),
      p50Ms: round(quantile(latencies, 0.5), 2),
      p90Ms: round(quantile(latencies, 0.9), 2),
      p99Ms: round(quantile(latencies, 0.99), 2),
      maxMs: round(latencies.length ? Math.max(...latencies) : Number.NaN, 2),
      minMs: round(latencies.length ? Math.min(...latencies) : Number.NaN, 2),
      segments: { toOutbox: spread(toOutbox), outboxToPost: spread(outboxToPost) },
      peakRssMb: rssStats(run.samples).peakMb,
      cpu: cpuShare(cpu0, cpu1),
    };
  } finally {
    await stopEngine(env, run, label);
    await db.drop();
    env.bench.reset();
  }
}

interface CatchUpResult {
  timestamps: number;
  gaps: boolean;
  rows: number;
  vectors: number;
  startMs: number;
  vectorsMs: number;
  postsMs: number;
  complete: boolean;
  deliveredVectors: number;
  deliveredPosts: number;
  rowsPerS: number;
  rowsPerSWithPosts: number;
  duplicates: number;
  peakRssMb: number;
  cpu: CpuShare;
}

async function phaseCatchUp(env: Env): Promise<CatchUpResult> {
  const db = await freshDatabase(env, 'catchup');
  env.bench.reset();
  // The outage: rows land in the tables while no engine runs (only the amount matters, not the pace).
  // --catchup-gaps: the memory run's mix (25% of the groups incomplete) instead of full vectors only.
  const groups = fullGroups(env, env.opts.catchUpTimestamps).map((g, j) =>
    env.opts.catchUpGaps
      ? { ...g, fields: memoryVariant(g.pump, Math.floor(j / env.pumps.length)).fields }
      : g,
  );
  const vectors = env.opts.catchUpGaps
    ? groups.filter((g, j) => memoryVariant(g.pump, Math.floor(j / env.pumps.length)).kind !== 'below').length
    : groups.length;
  const ins = await Inserter.connect(db.config, env.opts.inserters);
  const { rows } = await ins.burst(groups);
  await ins.close();
  const run = await spawnEngine(env, db, 'catchup', {});
  try {
    const cpu0 = snap(env, run);
    const t0 = now();
    const startMs = await startEngine(run);
    const c = await arrivals(env, vectors, 0, timeoutFor(rows, 500));
    // With --engine-env SENSOR_POSTS=false no per-sensor post comes: the vectors are the whole job.
    const posts = !/^(0|false|no|off)$/i.test(env.opts.engineEnv.SENSOR_POSTS ?? 'true');
    const p = posts ? await arrivals(env, 0, rows, timeoutFor(rows, 500)) : c;
    const cpu1 = snap(env, run);
    const vectorsMs = c ? c.at - t0 : Number.NaN;
    const postsMs = p ? p.at - t0 : Number.NaN;
    return {
      timestamps: env.opts.catchUpTimestamps,
      gaps: env.opts.catchUpGaps,
      rows,
      vectors,
      startMs: round(startMs, 0),
      vectorsMs: round(vectorsMs, 0),
      postsMs: round(postsMs, 0),
      complete: c !== undefined && p !== undefined,
      deliveredVectors: env.bench.unified.size,
      deliveredPosts: env.bench.sensorKeys.size,
      rowsPerS: round((rows / vectorsMs) * 1000, 0),
      rowsPerSWithPosts: round((rows / Math.max(vectorsMs, postsMs)) * 1000, 0),
      duplicates: env.bench.duplicates,
      peakRssMb: rssStats(run.samples).peakMb,
      cpu: cpuShare(cpu0, cpu1),
    };
  } finally {
    await stopEngine(env, run, 'catchup');
    await db.drop();
    env.bench.reset();
  }
}

interface MemoryResult {
  rows: number;
  rate: number;
  achievedRate: number;
  groups: number;
  incompleteGroups: number;
  vectorsExpected: number;
  outageSeconds: number;
  outageAtS: number;
  insertSeconds: number;
  drainSeconds: number;
  /** Every expected vector and post arrived. */
  complete: boolean;
  /** Vectors of full or fillable timestamps that never arrived (dropped by the engine). */
  lostVectors: number;
  deliveredVectors: number;
  deliveredPosts: number;
  deadLetters: number;
  duplicates: number;
  refused503: number;
  peakRssMb: number;
  firstHalfPeakMb: number;
  secondHalfPeakMb: number;
  flat: boolean;
  peakHeapMb: number;
  cpu: CpuShare;
  /** [seconds since start, RSS MB, heap MB], one per second. */
  timeline: [number, number, number][];
  statusTimeline: Record<string, unknown>[];
}

/**
 * Which sensors report in a group: 75% of the groups are full; 25% are incomplete, half of them below
 * the pump's threshold (dropped at expiry) and half above it with gaps (sent after the settle time with
 * fills). Pump B's threshold is all of its sensors, so all of its incomplete groups are below it.
 */
function memoryVariant(pump: PumpConfig, i: number): { fields?: string[]; kind: 'full' | 'gaps' | 'below' } {
  if (i % 4 !== 1) return { kind: 'full' };
  const fields = pump.sensors.map((s) => s.field);
  const below = Math.floor(i / 4) % 2 === 0 || pump.minFields >= fields.length;
  if (below) return { kind: 'below', fields: fields.slice(0, Math.min(10, pump.minFields - 1)) };
  return { kind: 'gaps', fields: fields.slice(0, Math.max(pump.minFields, fields.length - 3)) };
}

async function phaseMemory(env: Env): Promise<MemoryResult> {
  const db = await freshDatabase(env, 'memory');
  env.bench.reset();
  const run = await spawnEngine(env, db, 'memory', {});
  const admin = new pg.Client(clientConfig(db.config, 'bench-admin'));
  admin.on('error', () => {});
  await admin.connect();
  const statusTimeline: Record<string, unknown>[] = [];
  try {
    await startEngine(run);
    const { memoryRows, memoryRate, outageSeconds } = env.opts;
    const plannedS = memoryRows / memoryRate;
    const outageAtS = Math.max(0, plannedS / 2 - outageSeconds / 2);
    env.baseMs += 86_400_000;
    const ins = await Inserter.connect(db.config, env.pumps.length);
    const cpu0 = snap(env, run);
    const t0 = now();
    let rows = 0;
    let groups = 0;
    let incomplete = 0;
    let vectorsExpected = 0;
    let nextStatus = t0 + 10_000;
    let outage: 'before' | 'on' | 'after' = 'before';
    const maxTicks = Math.ceil(memoryRows / 10) + 10;
    for (let i = 0; i < maxTicks && rows < memoryRows; i++) {
      await sleepUntil(t0 + (rows / memoryRate) * 1000);
      const elapsedS = (now() - t0) / 1000;
      if (outage === 'before' && elapsedS >= outageAtS) {
        outage = 'on';
        env.bench.down = true;
        log(`    backend down at ${round(elapsedS, 0)} s`);
      } else if (outage === 'on' && elapsedS >= outageAtS + outageSeconds) {
        outage = 'after';
        env.bench.down = false;
        log(`    backend up at ${round(elapsedS, 0)} s`);
      }
      const tiempo = tiempoOf(env.baseMs, i, 10);
      const committed = await Promise.all(
        env.pumps.map((pump, k) => {
          const v = memoryVariant(pump, i);
          groups += 1;
          if (v.kind !== 'full') incomplete += 1;
          if (v.kind !== 'below') vectorsExpected += 1;
          return ins.insert(k, { pump, tiempo, fields: v.fields });
        }),
      );
      for (const c of committed) rows += c.rows;
      if (now() >= nextStatus) {
        nextStatus += 10_000;
        const s = await engineStatus(run);
        if (s) statusTimeline.push(summarizeStatus((now() - t0) / 1000, s));
      }
    }
    if (outage === 'on') env.bench.down = false;
    await ins.close();
    const insertS = (now() - t0) / 1000;
    log(`    ${rows} rows inserted in ${round(insertS, 0)} s; draining`);
    // Drained: every expected vector arrived and every reading was posted (or given up as a dead letter);
    // or the engine went quiet without them: nothing queued, no open group, no pending outbox row, and no
    // new vector for 10 s. What never arrived then is lost, and reported as such.
    let deadLetters = 0;
    const drainStart = now();
    let lastCount = -1;
    let lastChange = now();
    const drained = await waitUntil(
      async () => {
        const { rows: r } = await admin.query<{ n: string; p: string }>(
          `SELECT (SELECT count(*) FROM ${ENGINE_SCHEMA}.dead_letters WHERE kind = 'sensor_post') AS n,
                  (SELECT count(*) FROM ${ENGINE_SCHEMA}.outbox WHERE status = 'pending') AS p`,
        );
        deadLetters = Number(r[0]?.n ?? 0);
        const postsDone = env.bench.sensorKeys.size + deadLetters >= rows;
        if (postsDone && env.bench.unified.size >= vectorsExpected) return 'complete';
        const count = env.bench.unified.size + env.bench.sensorKeys.size;
        if (count !== lastCount) {
          lastCount = count;
          lastChange = now();
        }
        const s = (await engineProbe(run))?.status;
        const pumps = Object.values((s?.pumps ?? {}) as Record<string, Record<string, number>>);
        const quiet =
          s !== undefined &&
          Number(s.sensor_posts_queued) === 0 &&
          pumps.every((p) => Number(p.open_groups) === 0) &&
          Number(r[0]?.p ?? 1) === 0 &&
          now() - lastChange > 10_000;
        return postsDone && quiet ? 'quiet' : undefined;
      },
      Math.max(60_000, outageSeconds * 2_000),
      1_000,
    );
    const drainS = (now() - drainStart) / 1000;
    const cpu1 = snap(env, run);
    const probe1 = await engineProbe(run);
    if (probe1) statusTimeline.push(summarizeStatus((now() - t0) / 1000, probe1.status));
    const { rows: dl } = await admin.query<{ n: string }>(
      `SELECT count(*) AS n FROM ${ENGINE_SCHEMA}.dead_letters WHERE kind = 'sensor_post'`,
    );
    deadLetters = Number(dl[0]?.n ?? 0);
    const samples = run.samples.filter((x) => x.at >= t0);
    const mid = t0 + ((now() - t0) * 1) / 2;
    const peakOf = (xs: RssSample[]) =>
      xs.length ? megabytes(Math.max(...xs.map((x) => x.rss))) : Number.NaN;
    const firstHalfPeakMb = peakOf(samples.filter((x) => x.at < mid));
    const secondHalfPeakMb = peakOf(samples.filter((x) => x.at >= mid));
    return {
      rows,
      rate: memoryRate,
      achievedRate: round(rows / insertS, 0),
      groups,
      incompleteGroups: incomplete,
      vectorsExpected,
      outageSeconds,
      outageAtS: round(outageAtS, 0),
      insertSeconds: round(insertS, 0),
      drainSeconds: round(drainS, 0),
      complete: drained === 'complete',
      lostVectors: vectorsExpected - env.bench.unified.size,
      deliveredVectors: env.bench.unified.size,
      deliveredPosts: env.bench.sensorKeys.size,
      deadLetters,
      duplicates: env.bench.duplicates,
      refused503: env.bench.refused,
      peakRssMb: rssStats(samples).peakMb,
      firstHalfPeakMb,
      secondHalfPeakMb,
      // Flat: the second half never rose more than 10% (and 5 MB) above the first half's peak.
      flat: secondHalfPeakMb <= Math.max(firstHalfPeakMb * 1.1, firstHalfPeakMb + 5),
      peakHeapMb: samples.length ? megabytes(Math.max(...samples.map((x) => x.heapUsed))) : Number.NaN,
      cpu: cpuShare(cpu0, cpu1),
      timeline: samples.map((x) => [round((x.at - t0) / 1000, 0), megabytes(x.rss), megabytes(x.heapUsed)]),
      statusTimeline,
    };
  } finally {
    await admin.end().catch(() => {});
    await stopEngine(env, run, 'memory');
    await db.drop();
    env.bench.reset();
  }
}

function summarizeStatus(t: number, s: Record<string, unknown>): Record<string, unknown> {
  const pumps = (s.pumps ?? {}) as Record<string, Record<string, unknown>>;
  const sum = (k: string) => Object.values(pumps).reduce((a, p) => a + Number(p[k] ?? 0), 0);
  return {
    t: round(t, 0),
    overloaded: s.overloaded,
    sensor_posts_queued: s.sensor_posts_queued,
    open_groups: sum('open_groups'),
    outbox_pending: sum('outbox_pending'),
    vectors_sent: sum('vectors_sent'),
    vectors_dropped: sum('vectors_dropped'),
    sensor_posts_ok: sum('sensor_posts_ok'),
    sensor_posts_failed: sum('sensor_posts_failed'),
    catchup_rows: sum('catchup_rows'),
    breakers: Object.values(pumps).map((p) => p.breaker),
  };
}

// ---------------------------------------------------------------- report

interface Row {
  measure: string;
  value: string;
  limit: string;
  ratio: string;
  target: string;
  met: string;
  /** CPU cores used meanwhile: engine (or helper child) / PostgreSQL / bench process / anything else. */
  cores: string;
}

function cores(c: CpuShare | undefined): string {
  if (!c) return '';
  const f = (n: number) => n.toFixed(2);
  const own = c.engineCores > 0 ? f(c.engineCores) : f(c.helperCores);
  return `${own} / ${f(c.postgresCores)} / ${f(c.benchCores)} / ${f(c.otherCores)}`;
}

function fmt(n: number, unit = ''): string {
  if (!Number.isFinite(n)) return 'n/a';
  return `${n.toLocaleString('en-US')}${unit}`;
}

function verdict(ok: boolean | undefined): string {
  return ok === undefined ? '' : ok ? 'yes' : 'NO';
}

function table(rows: Row[]): string {
  const heads: Row = {
    measure: 'measure',
    value: 'measured',
    limit: 'limit',
    ratio: 'ratio',
    target: 'target',
    met: 'met',
    cores: 'cores: engine / pg / bench / other',
  };
  const keys = Object.keys(heads) as (keyof Row)[];
  const width = (k: keyof Row) => Math.max(...[heads, ...rows].map((r) => r[k].length));
  const line = (r: Row) => `| ${keys.map((k) => r[k].padEnd(width(k))).join(' | ')} |`;
  return [line(heads), `|${keys.map((k) => '-'.repeat(width(k) + 2)).join('|')}|`, ...rows.map(line)].join(
    '\n',
  );
}

interface Results {
  listener?: ListenerResult;
  http?: HttpResult;
  engineOff?: EngineResult;
  engineOn?: EngineResult;
  latencyOn?: LatencyResult;
  latencyOff?: LatencyResult;
  catchUp?: CatchUpResult;
  memory?: MemoryResult;
}

function buildTable(r: Results): Row[] {
  const rows: Row[] = [];
  const add = (x: Partial<Row> & { measure: string; value: string }, cpu?: CpuShare) =>
    rows.push({
      limit: '',
      ratio: '',
      target: '',
      met: '',
      ...x,
      // Marked when something else used a quarter core or more meanwhile: the number is disturbed.
      cores: cpu ? `${cores(cpu)}${cpu.otherCores >= 0.25 ? ' *' : ''}` : '',
    });
  const ratioOf = (value: number, limit: number) => {
    const q = value / limit;
    return Number.isFinite(q) ? `${q.toFixed(2)}x` : 'n/a';
  };
  const L = r.listener?.rowsPerS ?? Number.NaN;
  const H = r.http?.requestsPerS ?? Number.NaN;
  if (r.listener) {
    add(
      {
        measure: `limit: bare LISTEN (${fmt(r.listener.rows)} rows)`,
        value: fmt(r.listener.rowsPerS, ' rows/s'),
      },
      r.listener.cpu,
    );
  }
  if (r.http) {
    add(
      {
        measure: `limit: HTTP keep-alive (${r.http.connections} conns)`,
        value: fmt(r.http.requestsPerS, ' req/s'),
      },
      r.http.cpu,
    );
  }
  for (const e of [r.engineOff, r.engineOn]) {
    if (!e) continue;
    const limit = e.sensorPosts ? H : L;
    const ratio = e.readingsPerS / limit;
    add(
      {
        measure: `engine, SENSOR_POSTS=${e.sensorPosts} (${fmt(e.rows)} rows)`,
        value: e.complete ? fmt(e.readingsPerS, ' readings/s') : 'incomplete',
        limit: e.sensorPosts ? `HTTP ${fmt(H)}` : `LISTEN ${fmt(L)}`,
        ratio: ratioOf(e.readingsPerS, limit),
        target: '>= 0.8x',
        met: verdict(Number.isFinite(ratio) ? ratio >= 0.8 : undefined),
      },
      e.cpu,
    );
  }
  for (const l of [r.latencyOn, r.latencyOff]) {
    if (!l) continue;
    add(
      {
        measure: `latency @${fmt(l.rate)}/s, posts ${l.sensorPosts ? 'on' : 'off'} (p50 / p99 / max)`,
        value: `${fmt(l.p50Ms)} / ${fmt(l.p99Ms)} / ${fmt(l.maxMs)} ms`,
        target: 'p99 < 20 ms',
        met: verdict(Number.isFinite(l.p99Ms) && l.missing === 0 ? l.p99Ms < 20 : false),
      },
      l.cpu,
    );
  }
  if (r.catchUp) {
    const c = r.catchUp;
    add(
      {
        measure: `catch-up ${fmt(c.rows)} rows -> ${fmt(c.vectors)} vectors${c.gaps ? ' (25% gaps)' : ''}`,
        value:
          c.deliveredVectors < c.vectors
            ? `incomplete: ${fmt(c.deliveredVectors)} of ${fmt(c.vectors)} vectors`
            : `${fmt(c.rowsPerS, ' rows/s')} (${fmt(c.vectorsMs)} ms)`,
        limit: `LISTEN ${fmt(L)}`,
        ratio: ratioOf(c.rowsPerS, L),
      },
      c.cpu,
    );
    add({
      measure: 'catch-up incl. all per-sensor posts',
      value: `${fmt(c.rowsPerSWithPosts, ' rows/s')} (${fmt(c.postsMs)} ms)`,
      limit: `HTTP ${fmt(H)}`,
      ratio: ratioOf(c.rowsPerSWithPosts, H),
    });
  }
  if (r.memory) {
    const m = r.memory;
    add(
      {
        measure: `memory: ${fmt(m.rows)} readings, ${m.outageSeconds} s outage (peak RSS)`,
        value: `${fmt(m.peakRssMb)} MB`,
        target: '< 150 MB',
        met: verdict(m.peakRssMb < 150),
      },
      m.cpu,
    );
    add({
      measure: 'memory run: vectors delivered / expected; duplicate POSTs',
      value: `${fmt(m.deliveredVectors)} / ${fmt(m.vectorsExpected)}; ${fmt(m.duplicates)} dup`,
      target: 'all; 0 dup',
      met: verdict(m.lostVectors === 0 && m.duplicates === 0),
    });
    add({
      measure: 'memory: peak RSS 1st half / 2nd half',
      value: `${fmt(m.firstHalfPeakMb)} / ${fmt(m.secondHalfPeakMb)} MB`,
      target: 'flat',
      met: verdict(m.flat),
    });
  }
  return rows;
}

// ---------------------------------------------------------------- main

function log(line: string): void {
  process.stdout.write(`${line}\n`);
}

function indent(text: string, n: number): string {
  const pad = ' '.repeat(n);
  return text
    .split('\n')
    .map((l) => pad + l)
    .join('\n');
}

/** A generous bound for a phase of `n` items at no less than `minPerS` items per second. */
function timeoutFor(n: number, minPerS: number): number {
  return Math.min(15 * 60_000, Math.max(60_000, (n / minPerS) * 1000));
}

/** The commit measured, and whether src/ had uncommitted changes (the engine is built from the working tree). */
function gitState(): { commit: string; srcDirty: boolean } {
  const git = (args: string[]) => {
    try {
      return execFileSync('git', args, { cwd: path.join(here, '..'), encoding: 'utf8' }).trim();
    } catch {
      return '';
    }
  };
  return {
    commit: git(['rev-parse', 'HEAD']) || 'unknown',
    srcDirty: git(['status', '--porcelain', 'src']) !== '',
  };
}

async function postmasterPid(dataDir: string): Promise<number | undefined> {
  try {
    const pid = Number((await readFile(path.join(dataDir, 'postmaster.pid'), 'utf8')).split('\n')[0]);
    return Number.isInteger(pid) && pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}

function today(): string {
  const d = new Date();
  const two = (x: number) => String(x).padStart(2, '0');
  return `${d.getFullYear()}-${two(d.getMonth() + 1)}-${two(d.getDate())}`;
}

async function main(): Promise<void> {
  const opts = parseOptions(normalizeArgv(process.argv.slice(2)));
  const began = Date.now();
  const source = gitState();
  const root = await mkdtemp(path.join(os.tmpdir(), 'pump-monitor-bench-'));
  // As root, PostgreSQL runs as the `postgres` user, which must be able to enter this directory.
  await chmod(root, 0o755);
  if (opts.cpuProf) await mkdir(opts.cpuProf, { recursive: true });
  const children = new Set<{ proc: ChildProcess }>();
  let server: EmbeddedPostgres | undefined;
  let bench: BenchServer | undefined;
  let interrupted = false;
  const cleanup = async () => {
    for (const c of children) c.proc.kill('SIGKILL');
    await bench?.stop().catch(() => {});
    await server?.stop().catch(() => {});
    await rm(root, { recursive: true, force: true }).catch(() => {});
  };
  const onSignal = () => {
    if (interrupted) process.exit(130);
    interrupted = true;
    log('\ninterrupted; cleaning up');
    void cleanup().finally(() => process.exit(130));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    log(
      `pump-monitor bench, ${opts.mode} mode: ${os.cpus().length} CPUs, Node ${process.version}, ` +
        `commit ${source.commit.slice(0, 10)}${source.srcDirty ? ' + uncommitted src/ changes' : ''}, ` +
        `engine node flags: ${opts.engineNodeFlags.join(' ') || 'none'}`,
    );
    const scripts = await buildForChildren(path.join(root, 'build'));
    server = await startEmbeddedPostgres({ dataDir: path.join(root, 'data') });
    const version = await withClient(server.database('postgres'), 'bench-setup', async (c) => {
      const { rows } = await c.query<{ server_version: string }>('SHOW server_version');
      return rows[0]?.server_version ?? 'unknown';
    });
    log(`PostgreSQL ${version} (embedded, default settings) on 127.0.0.1:${server.port}`);
    const pumps = loadConfig({}).pumps;
    bench = new BenchServer(pumps);
    await bench.start();
    const env: Env = {
      opts,
      server,
      pumps,
      bench,
      sensorsPerTick: pumps.reduce((n, p) => n + p.sensors.length, 0),
      serial: 0,
      baseMs: Date.UTC(2030, 0, 1),
      children,
      scripts,
      postmaster: await postmasterPid(path.join(root, 'data')),
      profiles: {},
    };
    const results: Results = {};
    const phase = async <T>(name: string, fn: () => Promise<T>): Promise<T> => {
      log(`\n> ${name}`);
      if (opts.quietWaitSeconds > 0) await waitQuiet(env);
      const t = Date.now();
      const r = await fn();
      log(
        indent(
          JSON.stringify(r, (k, v) =>
            k === 'timeline' || k === 'statusTimeline' ? `[${(v as unknown[]).length} samples]` : v,
          ),
          4,
        ),
      );
      log(`  (${round((Date.now() - t) / 1000, 1)} s)`);
      return r;
    };
    if (opts.phases.has('listener'))
      results.listener = await phase('limit: bare LISTEN client', () => phaseListener(env));
    if (opts.phases.has('http')) results.http = await phase('limit: HTTP server', () => phaseHttp(env));
    if (opts.phases.has('engine')) {
      results.engineOff = await phase('engine throughput, SENSOR_POSTS=false', () => phaseEngine(env, false));
      results.engineOn = await phase('engine throughput, SENSOR_POSTS=true', () => phaseEngine(env, true));
    }
    if (opts.phases.has('latency')) {
      results.latencyOn = await phase('latency, SENSOR_POSTS=true (default)', () => phaseLatency(env, true));
      results.latencyOff = await phase('latency, SENSOR_POSTS=false', () => phaseLatency(env, false));
    }
    if (opts.phases.has('catchup'))
      results.catchUp = await phase('catch-up after an outage', () => phaseCatchUp(env));
    if (opts.phases.has('memory') && opts.memoryRows > 0) {
      results.memory = await phase('memory: long run with a backend outage', () => phaseMemory(env));
    } else if (opts.phases.has('memory')) {
      log('\n> memory: skipped (quick mode; --memory-rows N runs it)');
    }
    const rows = buildTable(results);
    log(`\n${table(rows)}`);
    log("cores: CPU cores used during the measurement by the engine (or the limit's helper process),");
    log('PostgreSQL, this bench process, and anything else; * = other load >= 0.25 cores (disturbed)\n');
    const report = {
      date: today(),
      mode: opts.mode,
      machine: {
        cpus: os.cpus().length,
        cpuModel: os.cpus()[0]?.model ?? 'unknown',
        memoryGiB: round(os.totalmem() / 1024 ** 3, 1),
        platform: `${os.platform()} ${os.release()}`,
        node: process.version,
        postgres: version,
      },
      source,
      options: { ...opts, phases: [...opts.phases] },
      durationS: round((Date.now() - began) / 1000, 0),
      table: rows,
      results,
      profiles: env.profiles,
    };
    await mkdir(opts.out, { recursive: true });
    const file = path.join(opts.out, `${report.date}${opts.mode === 'quick' ? '-quick' : ''}.json`);
    await writeFile(`${file}.tmp`, `${JSON.stringify(report, null, 2)}\n`);
    await rename(`${file}.tmp`, file);
    log(`written to ${path.relative(process.cwd(), file)} (${report.durationS} s)`);
    if (opts.cpuProf) log(`CPU profiles in ${opts.cpuProf}`);
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    if (!interrupted) await cleanup();
  }
}

main().then(
  () => process.exit(0),
  (err: Error) => {
    process.stderr.write(`bench failed: ${err.stack ?? err.message}\n`);
    process.exit(1);
  },
);
