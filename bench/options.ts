import { readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

export const benchDir = path.dirname(fileURLToPath(import.meta.url));
/** The heap flags `npm start` runs the engine with; the container image sets the same in NODE_OPTIONS. */
const PRODUCTION_NODE_FLAGS = (
  (
    JSON.parse(readFileSync(path.join(benchDir, '..', 'package.json'), 'utf8')) as {
      scripts: { start: string };
    }
  ).scripts.start.match(/--max-[a-z-]+=\d+/g) ?? []
).join(' ');
export const PHASES = [
  'listener',
  'http',
  'engine',
  'latency',
  'burst',
  'catchup',
  'memory',
  'fleet',
  'sources',
] as const;
export type Phase = (typeof PHASES)[number];

/** A named set of engine settings, laid over `--engine-env` (and under each phase's own). */
export interface EngineVariant {
  name: string;
  env: Record<string, string>;
}

export interface Options {
  mode: 'quick' | 'full';
  rows: number;
  /** Readings sent through each throughput engine, and delivered, before its measurement starts. */
  warmupRows: number;
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
  /** Synthetic pumps (20 sensors each) of the fleet run, and its measured seconds after the warm-up. */
  fleetPumps: number;
  fleetSeconds: number;
  fleetWarmupSeconds: number;
  /** The step-up's largest pump count (0: no step-up), and each step's measured seconds. */
  fleetMax: number;
  fleetStepSeconds: number;
  /** Readings of each burst (posts on, then off). */
  burstRows: number;
  /**
   * Engine settings the engine, latency and burst phases each run under, in turn, in one bench run (the
   * before and after of a lever); empty: one run under `engineEnv` alone.
   */
  engineVariants: EngineVariant[];
  /**
   * The bench server's think time per request, ms; 0: the reference server (answers at once, requests of
   * one connection handled side by side). Above 0 it answers one request per connection at a time, as
   * uvicorn does, each after this long.
   */
  backendSerialMs: number;
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
  --warmup-rows N         readings through each throughput engine before it is measured (default
                          7000 quick, 20000 full; 0: measure a cold engine)
  --inserters N           inserting connections (default 2)
  --http-requests N       requests for the HTTP limit (default 20000 quick, 150000 full)
  --latency-seconds S     measured seconds of the latency phase (default 5 quick, 30 full)
  --catchup-timestamps N  timestamps per pump inserted during the outage (default 60 quick, 300 full)
  --catchup-gaps          catch up the memory run's mix (25% of the groups incomplete), not full vectors
  --memory-rows N         readings of the memory run (default 0 quick = skipped, 1000000 full)
  --memory-rate R         readings per second of the memory run (default 3000)
  --outage-seconds S      backend outage in the middle of the memory run (default 120)
  --fleet-pumps N         synthetic pumps of 20 sensors in the fleet run, one timestamp a second each
                          (default 20 quick, 200 full)
  --fleet-seconds S       measured seconds of the fleet run (default 5 quick, 180 full)
  --fleet-warmup S        seconds before each fleet window whose lag is not counted (default 2
                          quick, 10 full)
  --fleet-max N           then step the pump count up from --fleet-pumps (250, 300, 350, 400, 500,
                          600, 800, 1000, ...) to at most N, stopping at the first count that fails
                          (p99 lag 1 s or more, or behind, incomplete, not started); if the run
                          itself failed, down (150, 100, 75, 50, 25) to the first that passes;
                          0 = neither (default 0 quick, 1000 full)
  --fleet-step-seconds S  measured seconds of each step (default 30)
  --burst-rows N          readings of each burst, as fast as the inserters go, posts on and off
                          (default 3500 quick, 70000 full)
  --engine-variants V     run the engine, latency and burst phases once per variant, in turn, and
                          show them side by side: "name:K=V,K=V;name2:K=V" (each laid over
                          --engine-env), e.g. "p1:BACKEND_PIPELINING=1;p8:BACKEND_PIPELINING=8"
  --backend-serial-ms MS  the bench server answers one request per connection at a time, each after
                          MS ms (a uvicorn-style server); default 0: the reference server
  --cpu-prof[=DIR]        run the engine children under node --cpu-prof and summarize the profiles
  --engine-env K=V,...    extra engine environment, e.g. SENSOR_POST_CONCURRENCY=32 (the throughput
                          and fleet phases still set SENSOR_POSTS themselves)
  --engine-node-flags F   node flags for the engine children, space-separated (default: the heap
                          cap that npm start and the container image use; '--engine-node-flags=' for
                          none; add "--expose-gc" to make each RSS sample follow a full GC)
  --quiet-wait S          before each phase, wait up to S s for other load on the machine to
                          drop below 0.25 cores (default 0 quick, 60 full)
  --only a,b              phases: ${PHASES.join(', ')}
  --out DIR               where the JSON goes (default bench/results)`;

/** Parses the command line (process.argv.slice(2)); prints the help and exits on --help. */
export function parseOptions(rawArgv: string[]): Options {
  const { values } = parseArgs({
    args: normalizeArgv(rawArgv),
    options: {
      quick: { type: 'boolean', default: false },
      rows: { type: 'string' },
      'warmup-rows': { type: 'string' },
      inserters: { type: 'string' },
      'http-requests': { type: 'string' },
      'latency-seconds': { type: 'string' },
      'catchup-timestamps': { type: 'string' },
      'catchup-gaps': { type: 'boolean', default: false },
      'memory-rows': { type: 'string' },
      'memory-rate': { type: 'string' },
      'outage-seconds': { type: 'string' },
      'fleet-pumps': { type: 'string' },
      'fleet-seconds': { type: 'string' },
      'fleet-warmup': { type: 'string' },
      'fleet-max': { type: 'string' },
      'fleet-step-seconds': { type: 'string' },
      'burst-rows': { type: 'string' },
      'engine-variants': { type: 'string' },
      'backend-serial-ms': { type: 'string' },
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
    warmupRows: int('warmup-rows', values['warmup-rows'], quick ? 7_000 : 20_000),
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
    fleetPumps: int('fleet-pumps', values['fleet-pumps'], quick ? 20 : 200, 1),
    fleetSeconds: int('fleet-seconds', values['fleet-seconds'], quick ? 5 : 180, 1),
    fleetWarmupSeconds: int('fleet-warmup', values['fleet-warmup'], quick ? 2 : 10),
    fleetMax: int('fleet-max', values['fleet-max'], quick ? 0 : 1_000),
    fleetStepSeconds: int('fleet-step-seconds', values['fleet-step-seconds'], 30, 1),
    burstRows: int('burst-rows', values['burst-rows'], quick ? 3_500 : 70_000, 35),
    engineVariants: parseEngineVariants(values['engine-variants']),
    backendSerialMs: int('backend-serial-ms', values['backend-serial-ms'], 0),
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
    out: path.resolve(values.out ?? path.join(benchDir, 'results')),
  };
}

function parseEngineEnv(raw: string | undefined, flag = '--engine-env'): Record<string, string> {
  const out: Record<string, string> = {};
  for (const pair of (raw ?? '').split(',').filter(Boolean)) {
    const eq = pair.indexOf('=');
    if (eq <= 0) throw new Error(`${flag}: got "${pair}", expected KEY=VALUE`);
    out[pair.slice(0, eq).trim()] = pair.slice(eq + 1).trim();
  }
  return out;
}

/** "name:K=V,K=V;name2:K=V" → variants; names are letters, digits, '-' and '_', each once. */
export function parseEngineVariants(raw: string | undefined): EngineVariant[] {
  const out: EngineVariant[] = [];
  for (const part of (raw ?? '')
    .split(';')
    .map((p) => p.trim())
    .filter(Boolean)) {
    const colon = part.indexOf(':');
    const name = (colon < 0 ? part : part.slice(0, colon)).trim();
    if (!/^[A-Za-z0-9_-]{1,24}$/.test(name))
      throw new Error(`--engine-variants: got name "${name}", expected 1-24 letters, digits, - or _`);
    if (out.some((v) => v.name === name)) throw new Error(`--engine-variants: "${name}" given twice`);
    out.push({ name, env: colon < 0 ? {} : parseEngineEnv(part.slice(colon + 1), '--engine-variants') });
  }
  return out;
}

// The node parser treats "--cpu-prof" without a value as an error for a string option; accept both forms.
function normalizeArgv(argv: string[]): string[] {
  return argv.map((a) => (a === '--cpu-prof' ? '--cpu-prof=' : a));
}
