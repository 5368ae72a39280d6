/**
 * A fleet run itself: every pump inserts one timestamp a second, spread evenly over the second, while the
 * bench server's observer times every vector and post that arrives; then the wait until what was
 * committed has arrived.
 */
import { setTimeout as delay } from 'node:timers/promises';
import type { PumpConfig } from '../../src/config/env.js';
import { engineProbe, log, type PhaseContext } from '../harness.js';
import { tiempoOf } from '../inserter.js';
import { now, round, waitUntil } from '../stats.js';
import { SENSORS } from './fleet-model.js';
import type { RunPlan } from './fleet-setup.js';
import { summarizeStatus } from './memory.js';

/**
 * Every arrival of a run, by pump timestamp i = second * n + pump: its commit, its vector's first arrival
 * and how many came, its posts and the last of them.
 */
export class Arrivals {
  readonly total: number;
  readonly commitAt: Float64Array;
  readonly vectorAt: Float64Array;
  readonly vectorCount: Uint16Array;
  readonly postCount: Uint16Array;
  readonly postLastAt: Float64Array;
  readonly postAt: number[] = [];
  readonly postOf: number[] = [];
  /** First arrivals that belong to no timestamp of this run (left over from an earlier step). */
  stale = 0;

  constructor(
    readonly n: number,
    readonly ticks: number,
  ) {
    this.total = n * ticks;
    this.commitAt = new Float64Array(this.total).fill(Number.NaN);
    this.vectorAt = new Float64Array(this.total).fill(Number.NaN);
    this.vectorCount = new Uint16Array(this.total);
    this.postCount = new Uint16Array(this.total);
    this.postLastAt = new Float64Array(this.total).fill(Number.NaN);
  }

  /** The bench server's observer: every reading of second s carries firstTick + s; the path names the pump. */
  observer(pumps: PumpConfig[], firstTick: number) {
    const prefixes = new Map(pumps.map((p, k) => [p.pathPrefix, k]));
    const fields = (pumps[0] as PumpConfig).sensors.map((s) => s.field);
    return (route: string, urlPath: string, body: Record<string, unknown>, at: number) => {
      const slash = urlPath.indexOf('/', 1);
      const k = prefixes.get(slash > 0 ? urlPath.slice(0, slash) : urlPath);
      const value =
        route === 'sensor'
          ? Number(body.valor)
          : Math.max(...fields.map((f) => Number(body[f] ?? Number.NaN)));
      const s = value - firstTick;
      if (k === undefined || !Number.isInteger(s) || s < 0 || s >= this.ticks) {
        this.stale += 1;
        return;
      }
      const i = s * this.n + k;
      if (route === 'unified') {
        this.vectorCount[i] = (this.vectorCount[i] as number) + 1;
        if (this.vectorCount[i] === 1) this.vectorAt[i] = at;
      } else {
        this.postCount[i] = (this.postCount[i] as number) + 1;
        if (!(at <= (this.postLastAt[i] as number))) this.postLastAt[i] = at;
        this.postAt.push(at);
        this.postOf.push(i);
      }
    };
  }

  /** Pump timestamps whose insert committed. */
  committed(): number {
    return this.commitAt.reduce((a, b) => a + (Number.isNaN(b) ? 0 : 1), 0);
  }

  lastCommit(): number {
    return this.commitAt.reduce((a, b) => (Number.isNaN(b) ? a : Math.max(a, b)), 0);
  }

  /** Vectors (pump timestamps with one) and posts arrived so far. */
  seen(): { v: number; p: number } {
    let v = 0;
    for (let i = 0; i < this.total; i++) if ((this.vectorCount[i] as number) > 0) v += 1;
    return { v, p: this.postAt.length };
  }
}

/** The engine's status summed over its pumps, with the breakers counted rather than listed. */
export function statusOf(t: number, status: Record<string, unknown>): Record<string, unknown> {
  const { breakers, ...rest } = summarizeStatus(t, status);
  return { ...rest, breakers_not_closed: (breakers as string[]).filter((b) => b !== 'closed').length };
}

/** How the inserts went. */
export interface Schedule {
  t0: number;
  /** When pump timestamp i was due. */
  dueOf: (i: number) => number;
  /** How late each INSERT started. */
  startLate: Float64Array;
  rows: number;
  errors: number;
  skipped: number;
  insertEnd: number;
}

type Inserter = Awaited<ReturnType<PhaseContext['inserter']>>;

/**
 * Inserts every pump timestamp when due, pump k on connection k mod `connections`, one statement at a time
 * per connection; records each commit in `arrivals` and the engine's status every 10 s in `timeline`.
 */
export async function insertOnSchedule(
  ctx: PhaseContext,
  plan: RunPlan,
  arrivals: Arrivals,
  ins: Inserter,
  connections: number,
  base: number,
  timeline: Record<string, unknown>[],
): Promise<Schedule> {
  const { pumps, firstTick } = plan;
  const { n, total, ticks } = arrivals;
  const stepMs = 1000 / n;
  const chains: Promise<unknown>[] = Array.from({ length: connections }, () => Promise.resolve());
  const startLate = new Float64Array(total).fill(Number.NaN);
  let rows = 0;
  let inFlight = 0;
  let errors = 0;
  let firstError: Error | undefined;
  const t0 = now() + 50;
  const dueOf = (i: number) => t0 + Math.floor(i / n) * 1000 + (i % n) * stepMs;
  let next = 0;
  let nextStatus = t0 + 10_000;
  // With ten seconds' worth of inserts waiting on the connections the inserter has lost its schedule:
  // what falls due meanwhile is skipped, so that the queue and the run's length stay bounded. A stall of
  // a few seconds (a WAL flush under load) only shows in commitLate.
  const maxInFlight = Math.max(10 * n, 50);
  let skipped = 0;
  let skipping = false;
  const endBy = t0 + ticks * 1000 + 60_000;
  // Bounded by time; the count bound allows a wake-up that found nothing due yet for every insert twice.
  for (let guard = 0; next < total && guard < 3 * total + 10_000 && now() < endBy; guard++) {
    // Always yields to the event loop (commits and arrivals are timed there), and wakes at or past due.
    const wait = dueOf(next) - now();
    await delay(wait > 0 ? Math.ceil(wait) : 0);
    const t = now();
    if (inFlight >= maxInFlight) {
      if (!skipping) {
        log(
          `    ${inFlight} inserts wait on the connections at ${round((t - t0) / 1000, 0)} s: ` +
            'skipping what falls due until fewer wait',
        );
      }
      skipping = true;
      for (let burst = 0; next < total && dueOf(next) <= t && burst < n; burst++) {
        next += 1;
        skipped += 1;
      }
      continue;
    }
    skipping = false;
    for (let burst = 0; next < total && dueOf(next) <= t && burst < n; burst++) {
      const i = next;
      next += 1;
      const k = i % n;
      const s = Math.floor(i / n);
      startLate[i] = t - dueOf(i);
      inFlight += 1;
      // Pump k inserts on connection k mod connections (ins.insert picks the same); one statement at a time.
      const conn = k % connections;
      const done = (chains[conn] as Promise<unknown>).then(() =>
        ins.insert(k, {
          pump: pumps[k] as PumpConfig,
          tiempo: tiempoOf(base, s, 1000),
          valor: firstTick + s,
        }),
      );
      chains[conn] = done.catch(() => {});
      done
        .then(
          (c) => {
            arrivals.commitAt[i] = c.at;
            rows += c.rows;
          },
          (err: Error) => {
            errors += 1;
            firstError ??= err;
          },
        )
        .finally(() => {
          inFlight -= 1;
        });
    }
    if (now() >= nextStatus) {
      nextStatus += 10_000;
      void engineProbe(ctx.engine).then((p) => {
        if (p) timeline.push(statusOf((now() - t0) / 1000, p.status));
      });
    }
  }
  if (next < total) skipped += total - next;
  await waitUntil(() => (inFlight === 0 ? true : undefined), 60_000);
  const insertEnd = now();
  if (firstError) log(`    ${errors} inserts failed; the first: ${firstError.message}`);
  return { t0, dueOf, startLate, rows, errors, skipped, insertEnd };
}

export interface Drained {
  /** When the last new arrival was seen. */
  lastChange: number;
  /** The longest the drain was allowed. */
  drainBound: number;
}

/** Waits until every vector and post of what was committed arrived; or nothing new for 15 s; or the bound. */
export async function drain(arrivals: Arrivals): Promise<Drained> {
  const committed = arrivals.committed();
  let last = -1;
  let lastChange = now();
  const drainBound = Math.min(120_000, Math.max(20_000, arrivals.ticks * 500));
  await waitUntil(
    () => {
      const x = arrivals.seen();
      if (x.v >= committed && x.p >= committed * SENSORS) return true;
      if (x.v + x.p !== last) {
        last = x.v + x.p;
        lastChange = now();
      }
      return now() - lastChange > 15_000 ? false : undefined;
    },
    drainBound,
    100,
  );
  return { lastChange, drainBound };
}
