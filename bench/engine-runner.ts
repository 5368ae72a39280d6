/**
 * The engine in a process of its own, so that its RSS and CPU are its own. Started by bench/run.ts with
 * an IPC channel; configured by the environment exactly like `pump-monitor start` (DATABASE_URL,
 * BASE_URL, BASE_URL_B, API_KEY, SENSOR_POSTS, ...), with logging off.
 *
 * Parent → child: {type:'start'} | {type:'status'} | {type:'mark'} | {type:'catchup'} | {type:'stop'}
 * Child → parent: ready, started, sample (every BENCH_SAMPLE_MS), status, mark, catchup, stopped, error
 *
 * `mark` answers with running totals of this process (heap allocated, collections, event-loop time), so
 * that the parent can difference two marks around a measurement (see docs/performance.md). `catchup`
 * answers whether a catch-up is running, from the engine's own gauge (`pump_monitor_catchup_running`).
 */
import v8 from 'node:v8';
import pino from 'pino';
import { type DatabaseConfig, loadConfig } from '../src/config/env.js';
import { Monitor } from '../src/engine/monitor.js';
import { now } from './stats.js';

export type EngineCommand =
  | { type: 'start' }
  | { type: 'status' }
  | { type: 'mark' }
  | { type: 'catchup' }
  | { type: 'stop' };

export interface RssSample {
  at: number;
  rss: number;
  heapUsed: number;
  external: number;
}

/** Running totals since the runner started; a measurement is the difference of two marks. */
export interface EngineMark {
  at: number;
  /**
   * Bytes allocated on the JS heap: the heap used now plus everything the collections freed (heap used
   * before each collection minus after it), less what the accounting itself allocated.
   */
  allocatedBytes: number;
  collections: number;
  /** Time spent in those collections (GCProfiler's cost), ms. */
  gcMs: number;
  /** performance.eventLoopUtilization(): time the event loop was idle / active so far, ms. */
  eluIdleMs: number;
  eluActiveMs: number;
}

export type EngineMessage =
  | { type: 'ready' }
  | { type: 'started'; at: number; startMs: number }
  | ({ type: 'sample' } & RssSample)
  | { type: 'status'; status: ReturnType<Monitor['status']>; cpuMs: number }
  | ({ type: 'mark' } & EngineMark)
  /** `running` is undefined when the engine has no such gauge. */
  | { type: 'catchup'; running: boolean | undefined }
  | { type: 'stopped' }
  | { type: 'error'; message: string };

const sampleMs = Number(process.env.BENCH_SAMPLE_MS ?? 1_000);
// A leftover child must never outlive the bench: it exits on its own after this long.
const maxLifetimeMs = Number(process.env.BENCH_MAX_LIFETIME_MS ?? 30 * 60_000);

function send(m: EngineMessage): void {
  if (process.connected) process.send?.(m);
}

// Diagnostic: under --expose-gc every sample follows a full collection, so it shows retained memory.
const gc = (globalThis as { gc?: () => void }).gc;

function sample(): RssSample {
  gc?.();
  const m = process.memoryUsage();
  return { at: now(), rss: m.rss, heapUsed: m.heapUsed, external: m.external };
}

/**
 * Heap accounting. A GCProfiler records the heap before and after every collection; it is replaced by a
 * fresh one at every sample and mark, so its records (about 3 KB per collection, kept outside the heap
 * until stop()) stay few. The next profiler starts before the previous one stops, so no collection falls
 * between the two; what parsing the previous one's records allocates is counted apart and left out.
 */
const heap = { freed: 0, collections: 0, gcUs: 0, overhead: 0 };
let profiler = new v8.GCProfiler();
profiler.start();

function foldCollections(): void {
  const before = v8.getHeapStatistics().used_heap_size;
  const next = new v8.GCProfiler();
  next.start();
  const done = profiler.stop();
  profiler = next;
  const after = v8.getHeapStatistics().used_heap_size;
  // A collection during stop() would show as a drop; then the parse's allocations are not known.
  if (after >= before) heap.overhead += after - before;
  for (const s of done?.statistics ?? []) {
    heap.freed += s.beforeGC.heapStatistics.usedHeapSize - s.afterGC.heapStatistics.usedHeapSize;
    heap.collections += 1;
    heap.gcUs += s.cost;
  }
}

function mark(): EngineMark {
  foldCollections();
  const elu = performance.eventLoopUtilization();
  return {
    at: now(),
    allocatedBytes: heap.freed + v8.getHeapStatistics().used_heap_size - heap.overhead,
    collections: heap.collections,
    gcMs: heap.gcUs / 1000,
    eluIdleMs: elu.idle,
    eluActiveMs: elu.active,
  };
}

/**
 * With BENCH_ALLOC_PROFILE=<file> (`%p` in it becomes the process id): V8's sampling heap profiler runs from the start and keeps the samples of
 * objects already collected too, so the profile written at the stop shows where the heap was allocated,
 * not only what was still alive (summarised by bench/profile-summary.ts). With BENCH_LIVE_PROFILE=<file>
 * instead, it keeps only the samples of objects still alive when the stop begins: what the heap retains,
 * by the stack that allocated it.
 */
async function allocationProfiler(): Promise<(() => Promise<void>) | undefined> {
  const live = process.env.BENCH_LIVE_PROFILE;
  const file = live ?? process.env.BENCH_ALLOC_PROFILE;
  if (!file) return undefined;
  const { Session } = await import('node:inspector/promises');
  const { writeFile } = await import('node:fs/promises');
  const session = new Session();
  session.connect();
  await session.post('HeapProfiler.startSampling', {
    samplingInterval: 4096,
    includeObjectsCollectedByMajorGC: !live,
    includeObjectsCollectedByMinorGC: !live,
  });
  return async () => {
    const { profile } = await session.post('HeapProfiler.stopSampling');
    await writeFile(file.replaceAll('%p', String(process.pid)), JSON.stringify(profile));
    session.disconnect();
  };
}

async function main(): Promise<void> {
  const writeAllocations = await allocationProfiler();
  const config = loadConfig(process.env, { requireDatabase: true, requireBackend: true });
  const monitor = new Monitor({
    config: config as typeof config & { database: DatabaseConfig },
    logger: pino({ level: 'silent' }),
  });
  let stopping: Promise<void> | undefined;
  const stop = (code: number) => {
    stopping ??= (async () => {
      clearInterval(sampler);
      clearTimeout(lifetime);
      // Written before the stop drains what the engine holds.
      await writeAllocations?.().catch(() => {});
      await monitor.stop(5_000).catch(() => {});
      send({ type: 'stopped' });
      // Exiting through process.exit lets --cpu-prof write its profile.
      setTimeout(() => process.exit(code), 50);
    })();
    return stopping;
  };
  const sampler = setInterval(() => {
    foldCollections();
    send({ type: 'sample', ...sample() });
  }, sampleMs);
  const lifetime = setTimeout(() => void stop(3), maxLifetimeMs);
  monitor.on('fatal', (err) => {
    send({ type: 'error', message: err.message });
    void stop(1);
  });
  process.on('disconnect', () => void stop(0));
  process.on('SIGTERM', () => void stop(0));
  process.on('message', (m: EngineCommand) => {
    if (m.type === 'start') {
      const t0 = now();
      monitor.start().then(
        () => send({ type: 'started', at: now(), startMs: now() - t0 }),
        (err: Error) => {
          send({ type: 'error', message: `start failed: ${err.message}` });
          void stop(1);
        },
      );
    } else if (m.type === 'status') {
      const cpu = process.cpuUsage();
      send({ type: 'status', status: monitor.status(), cpuMs: (cpu.user + cpu.system) / 1000 });
    } else if (m.type === 'mark') {
      send({ type: 'mark', ...mark() });
    } else if (m.type === 'catchup') {
      const gauge = monitor.units.telemetry.registry.getSingleMetric('pump_monitor_catchup_running');
      Promise.resolve(gauge?.get()).then(
        (g) => {
          const v = g?.values[0]?.value;
          send({ type: 'catchup', running: v === undefined ? undefined : v > 0 });
        },
        () => send({ type: 'catchup', running: undefined }),
      );
    } else if (m.type === 'stop') {
      void stop(0);
    }
  });
  send({ type: 'sample', ...sample() });
  send({ type: 'ready' });
}

main().catch((err: Error) => {
  send({ type: 'error', message: err.message });
  setTimeout(() => process.exit(1), 50);
});
