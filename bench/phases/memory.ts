/** Memory over a long run at a steady rate, with a backend outage in the middle and a mix of gaps. */
import pg from 'pg';
import type { PumpConfig } from '../../src/config/env.js';
import { clientConfig } from '../../src/store/db.js';
import { ENGINE_SCHEMA } from '../../src/store/schema.js';
import type { EngineCost } from '../cost.js';
import type { CpuShare } from '../cpu.js';
import type { RssSample } from '../engine-runner.js';
import { type Env, engineProbe, log, rssStats, withPhase } from '../harness.js';
import { tiempoOf } from '../inserter.js';
import { megabytes, now, round, sleepUntil, waitUntil } from '../stats.js';

export interface MemoryResult {
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
  /** Engine CPU, heap allocated and event-loop utilisation over the measurement, per reading. */
  engineCost: EngineCost | undefined;
  /** [seconds since start, RSS MB, heap MB], one per second. */
  timeline: [number, number, number][];
  statusTimeline: Record<string, unknown>[];
}

/**
 * Which sensors report in a group: 75% of the groups are full; 25% are incomplete, half of them below
 * the pump's threshold (dropped at expiry) and half above it with gaps (sent after the settle time with
 * fills). Pump B's threshold is all of its sensors, so all of its incomplete groups are below it.
 */
export function memoryVariant(
  pump: PumpConfig,
  i: number,
): { fields?: string[]; kind: 'full' | 'gaps' | 'below' } {
  if (i % 4 !== 1) return { kind: 'full' };
  const fields = pump.sensors.map((s) => s.field);
  const below = Math.floor(i / 4) % 2 === 0 || pump.minFields >= fields.length;
  if (below) return { kind: 'below', fields: fields.slice(0, Math.min(10, pump.minFields - 1)) };
  return { kind: 'gaps', fields: fields.slice(0, Math.max(pump.minFields, fields.length - 3)) };
}

/** The engine's status summed over its pumps (the memory and fleet phases' timelines). */
export function summarizeStatus(t: number, s: Record<string, unknown>): Record<string, unknown> {
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

export function phaseMemory(env: Env): Promise<MemoryResult> {
  return withPhase(env, { label: 'memory', engine: { env: {} } }, async (ctx) => {
    const run = ctx.engine;
    const admin = new pg.Client(clientConfig(ctx.db.config, 'bench-admin'));
    admin.on('error', () => {});
    ctx.defer(() => admin.end().catch(() => {}));
    await admin.connect();
    const statusTimeline: Record<string, unknown>[] = [];
    const { memoryRows, memoryRate, outageSeconds } = env.opts;
    const plannedS = memoryRows / memoryRate;
    const outageAtS = Math.max(0, plannedS / 2 - outageSeconds / 2);
    env.baseMs += 86_400_000;
    const ins = await ctx.inserter(env.pumps.length);
    const meter = await ctx.meter();
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
        const s = (await engineProbe(run))?.status;
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
    const { cpu, cost } = await meter.stop(rows);
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
      cpu,
      engineCost: cost,
      timeline: samples.map((x) => [round((x.at - t0) / 1000, 0), megabytes(x.rss), megabytes(x.heapUsed)]),
      statusTimeline,
    };
  });
}
