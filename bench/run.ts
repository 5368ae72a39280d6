/**
 * npm run bench [-- --quick] [--rows N] [--cpu-prof[=dir]] [--only listener,http,engine,latency,burst,catchup,memory,fleet,sources]
 *
 * Measures the engine against the physical limits of this machine in one run: a bare LISTEN client
 * (the source's limit), the benchmark HTTP server (the delivery side's limit), then the engine itself:
 * throughput with and without per-sensor posts, commit-to-delivery latency at a steady rate, a burst, catch-up
 * after an outage, (full mode) memory over a long run with a backend outage, and a fleet of synthetic
 * pumps with its lag, stepped up to the largest count one replica serves. Prints a table and writes
 * it as JSON to bench/results/. It reports; it does not fail on timings.
 *
 * This file starts what the whole run shares (the compiled children, PostgreSQL, the bench server), runs
 * the selected phases (bench/phases/, each through withPhase in bench/harness.ts) and writes the report
 * (bench/report.ts). Options are in bench/options.ts.
 */
import { type ChildProcess, execFileSync } from 'node:child_process';
import { chmod, mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { loadConfig } from '../src/config/env.js';
import { withClient } from '../src/store/db.js';
import { type EmbeddedPostgres, startEmbeddedPostgres } from '../src/tools/postgres/embedded.js';
import { BenchServer } from './bench-server.js';
import { buildForChildren } from './build.js';
import { type Env, indent, log, waitQuiet } from './harness.js';
import { benchDir, type Options, type Phase, parseOptions } from './options.js';
import { phaseBurst } from './phases/burst.js';
import { phaseCatchUp } from './phases/catchup.js';
import { phaseEngine } from './phases/engine.js';
import { phaseFleet } from './phases/fleet.js';
import { phaseHttp } from './phases/http.js';
import { phaseLatency } from './phases/latency.js';
import { phaseListener } from './phases/listener.js';
import { phaseMemory } from './phases/memory.js';
import { phaseSources } from './phases/sources.js';
import { buildTable, LEGEND, type Results, table, writeReport } from './report.js';
import { round } from './stats.js';

interface Step<K extends keyof Results> {
  phase: Phase;
  title: string;
  key: K;
  run: (env: Env) => Promise<NonNullable<Results[K]>>;
  /** Why the step does not run with these options, if it does not. */
  skip?: (opts: Options) => string | undefined;
  /** Runs once per --engine-variants variant, in turn (the engine's throughput, latency, burst). */
  perVariant?: boolean;
}

const step = <K extends keyof Results>(s: Step<K>) => s as unknown as Step<keyof Results>;

/** The phases in the order they run; `--only engine` runs both engine steps, and so on. */
const STEPS = [
  step({ phase: 'listener', title: 'limit: bare LISTEN client', key: 'listener', run: phaseListener }),
  step({ phase: 'http', title: 'limit: HTTP server', key: 'http', run: phaseHttp }),
  step({
    phase: 'engine',
    title: 'engine throughput, SENSOR_POSTS=false',
    key: 'engineOff',
    perVariant: true,
    run: (env) => phaseEngine(env, false),
  }),
  step({
    phase: 'engine',
    title: 'engine throughput, SENSOR_POSTS=true',
    key: 'engineOn',
    perVariant: true,
    run: (env) => phaseEngine(env, true),
  }),
  step({
    phase: 'latency',
    title: 'latency, SENSOR_POSTS=true (default)',
    key: 'latencyOn',
    perVariant: true,
    run: (env) => phaseLatency(env, true),
  }),
  step({
    phase: 'latency',
    title: 'latency, SENSOR_POSTS=false',
    key: 'latencyOff',
    perVariant: true,
    run: (env) => phaseLatency(env, false),
  }),
  step({
    phase: 'burst',
    title: 'burst, SENSOR_POSTS=true',
    key: 'burstOn',
    perVariant: true,
    run: (env) => phaseBurst(env, true),
  }),
  step({
    phase: 'burst',
    title: 'burst, SENSOR_POSTS=false',
    key: 'burstOff',
    perVariant: true,
    run: (env) => phaseBurst(env, false),
  }),
  step({ phase: 'catchup', title: 'catch-up after an outage', key: 'catchUp', run: phaseCatchUp }),
  step({
    phase: 'memory',
    title: 'memory: long run with a backend outage',
    key: 'memory',
    run: phaseMemory,
    skip: (o) => (o.memoryRows > 0 ? undefined : 'quick mode; --memory-rows N runs it'),
  }),
  step({
    phase: 'fleet',
    title: 'fleet: synthetic pumps, one timestamp a second each, SENSOR_POSTS=true',
    key: 'fleet',
    run: phaseFleet,
  }),
  step({
    phase: 'sources',
    title: 'sources: notify and replication on the same inserts, 2 and 8 writers',
    key: 'sources',
    run: phaseSources,
  }),
];

/** The commit measured, and whether src/ had uncommitted changes (the engine is built from the working tree). */
function gitState(): { commit: string; srcDirty: boolean } {
  const git = (args: string[]) => {
    try {
      return execFileSync('git', args, { cwd: path.join(benchDir, '..'), encoding: 'utf8' }).trim();
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

/** Prints a phase's result as one JSON line (timelines shortened to their length) and its duration. */
function printResult(r: unknown, seconds: number): void {
  const short = (k: string, v: unknown) =>
    k === 'timeline' || k === 'statusTimeline' ? `[${(v as unknown[]).length} samples]` : v;
  log(indent(JSON.stringify(r, short), 4));
  log(`  (${round(seconds, 1)} s)`);
}

async function main(): Promise<void> {
  const opts = parseOptions(process.argv.slice(2));
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
    // wal_level=logical for the sources phase's replication slot (the notify phases do not use it).
    server = await startEmbeddedPostgres({
      dataDir: path.join(root, 'data'),
      postgresFlags: ['-c', 'wal_level=logical'],
    });
    const version = await withClient(server.database('postgres'), 'bench-setup', async (c) => {
      const { rows } = await c.query<{ server_version: string }>('SHOW server_version');
      return rows[0]?.server_version ?? 'unknown';
    });
    log(`PostgreSQL ${version} (embedded, default settings) on 127.0.0.1:${server.port}`);
    const pumps = loadConfig({}).pumps;
    bench = new BenchServer(pumps);
    await bench.start();
    bench.serialMs = opts.backendSerialMs;
    if (opts.backendSerialMs > 0)
      log(
        `bench server: one request per connection at a time, ${opts.backendSerialMs} ms each (uvicorn-style)`,
      );
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
    const variants = opts.engineVariants;
    if (variants.length > 0) results.variants = variants.map((v) => ({ ...v, results: {} }));
    for (const s of STEPS) {
      if (!opts.phases.has(s.phase)) continue;
      const skipped = s.skip?.(opts);
      if (skipped) {
        log(`\n> ${s.title.split(':')[0]}: skipped (${skipped})`);
        continue;
      }
      // Each variant in turn for this step, so that a drift of the machine touches every variant alike.
      for (const [i, v] of (s.perVariant && variants.length > 0 ? variants : [undefined]).entries()) {
        env.variant = v;
        log(`\n> ${s.title}${v ? ` [${v.name}: ${JSON.stringify(v.env)}]` : ''}`);
        if (opts.quietWaitSeconds > 0) await waitQuiet(env);
        const t = Date.now();
        const r = await s.run(env);
        const into = v ? results.variants?.[i]?.results : results;
        (into as Record<string, unknown>)[s.key] = r;
        printResult(r, (Date.now() - t) / 1000);
      }
      env.variant = undefined;
    }
    const rows = buildTable(results);
    log(`\n${table(rows)}`);
    for (const line of LEGEND) log(line);
    log('');
    const { file, durationS } = await writeReport({
      opts,
      postgres: version,
      source,
      began,
      rows,
      results,
      profiles: env.profiles,
    });
    log(`written to ${path.relative(process.cwd(), file)} (${durationS} s)`);
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
