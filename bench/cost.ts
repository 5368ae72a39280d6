/**
 * What the engine spends per reading over a measurement window: CPU from /proc, JS heap allocated, and
 * the event loop's utilisation, from two marks of the engine runner (bench/engine-runner.ts) around it.
 */
import type { Child } from './children.js';
import type { EngineCommand, EngineMark, EngineMessage } from './engine-runner.js';
import { round } from './stats.js';

export interface EngineCost {
  /** The readings the window covers (inserted, or caught up). */
  readings: number;
  /** The engine process's utime + stime over the window (/proc/<pid>/stat, all its threads), ms. */
  cpuMs: number;
  cpuUsPerReading: number;
  /** The kernel's part of cpuMs (stime): system calls such as socket writes and reads. */
  sysMs: number;
  /** JS heap allocated by the engine over the window: heap growth plus what the collections freed. */
  allocatedMb: number;
  allocKbPerReading: number;
  /** Collections in the window and the time they took (GCProfiler). */
  collections: number;
  gcMs: number;
  /** Event-loop utilisation of the engine's main thread over the window: active / (active + idle). */
  elu: number;
}

/** Asks the engine for its running totals; undefined when it does not answer within 5 s. */
export async function engineMark(
  engine: Child<EngineMessage, EngineCommand>,
): Promise<EngineMark | undefined> {
  try {
    const reply = engine.next('mark', 5_000);
    engine.send({ type: 'mark' });
    return await reply;
  } catch {
    return undefined;
  }
}

/** The cost between two marks, with the engine's CPU time and its kernel part (ms, from /proc) over the window. */
export function costOf(
  a: EngineMark | undefined,
  b: EngineMark | undefined,
  cpuMs: number,
  sysMs: number,
  readings: number,
): EngineCost {
  const perReading = (x: number) => (readings > 0 ? x / readings : Number.NaN);
  const allocated = a && b ? b.allocatedBytes - a.allocatedBytes : Number.NaN;
  const active = a && b ? b.eluActiveMs - a.eluActiveMs : Number.NaN;
  const idle = a && b ? b.eluIdleMs - a.eluIdleMs : Number.NaN;
  return {
    readings,
    cpuMs: round(cpuMs, 0),
    cpuUsPerReading: round(perReading(cpuMs * 1000), 1),
    sysMs: round(sysMs, 0),
    allocatedMb: round(allocated / 1024 ** 2, 1),
    allocKbPerReading: round(perReading(allocated / 1024), 2),
    collections: a && b ? b.collections - a.collections : Number.NaN,
    gcMs: a && b ? round(b.gcMs - a.gcMs, 0) : Number.NaN,
    elu: round(active / (active + idle), 2),
  };
}
