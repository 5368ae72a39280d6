/** The printed table and the JSON report written to bench/results/. */
import { mkdir, rename, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { EngineCost } from './cost.js';
import type { CpuShare } from './cpu.js';
import type { Options } from './options.js';
import type { BurstResult } from './phases/burst.js';
import type { CatchUpResult } from './phases/catchup.js';
import type { EngineResult } from './phases/engine.js';
import { FLEET_P99_TARGET_MS, type FleetResult, type FleetRun } from './phases/fleet.js';
import type { HttpResult } from './phases/http.js';
import type { LatencyResult } from './phases/latency.js';
import type { ListenerResult } from './phases/listener.js';
import type { MemoryResult } from './phases/memory.js';
import { type SourcesResult, sourcesTable } from './phases/sources.js';
import type { ProfileSummary } from './profile-summary.js';
import { round } from './stats.js';
import { waitsLine } from './waits.js';

export interface Results {
  listener?: ListenerResult;
  http?: HttpResult;
  engineOff?: EngineResult;
  engineOn?: EngineResult;
  latencyOn?: LatencyResult;
  latencyOff?: LatencyResult;
  burstOn?: BurstResult;
  burstOff?: BurstResult;
  catchUp?: CatchUpResult;
  memory?: MemoryResult;
  fleet?: FleetResult;
  sources?: SourcesResult;
  /** With --engine-variants: the engine, latency and burst phases' results of each variant. */
  variants?: { name: string; env: Record<string, string>; results: Results }[];
}

export interface Row {
  measure: string;
  value: string;
  limit: string;
  ratio: string;
  target: string;
  met: string;
  /** CPU cores used meanwhile: engine (or helper child) / PostgreSQL / bench process / anything else. */
  cores: string;
  /** The engine's CPU per reading, µs (from /proc). */
  cpuPerReading: string;
  /** JS heap the engine allocated per reading, KB. */
  allocPerReading: string;
  /** The engine's event-loop utilisation over the measurement. */
  elu: string;
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

export function table(rows: Row[]): string {
  const heads: Row = {
    measure: 'measure',
    value: 'measured',
    limit: 'limit',
    ratio: 'ratio',
    cpuPerReading: 'engine µs/reading (kernel)',
    allocPerReading: 'alloc KB/reading',
    elu: 'ELU',
    target: 'target',
    met: 'met',
    cores: 'cores: engine / pg / bench / other',
  };
  // The printed order; the JSON rows keep the fields of earlier reports first.
  const keys = Object.keys(heads) as (keyof Row)[];
  const width = (k: keyof Row) => Math.max(...[heads, ...rows].map((r) => r[k].length));
  const line = (r: Row) => `| ${keys.map((k) => r[k].padEnd(width(k))).join(' | ')} |`;
  return [line(heads), `|${keys.map((k) => '-'.repeat(width(k) + 2)).join('|')}|`, ...rows.map(line)].join(
    '\n',
  );
}

export function buildTable(r: Results): Row[] {
  const rows: Row[] = [];
  const add = (
    x: Partial<Row> & { measure: string; value: string },
    cpu?: CpuShare,
    cost?: EngineCost | undefined,
  ) =>
    rows.push({
      limit: '',
      ratio: '',
      target: '',
      met: '',
      ...x,
      // Marked when something else used a quarter core or more meanwhile: the number is disturbed.
      cores: cpu ? `${cores(cpu)}${cpu.otherCores >= 0.25 ? ' *' : ''}` : '',
      cpuPerReading: cost
        ? `${fmt(cost.cpuUsPerReading)} (${fmt(round((cost.sysMs * 1000) / cost.readings, 1))})`
        : '',
      allocPerReading: cost ? fmt(cost.allocKbPerReading) : '',
      elu: !cost ? '' : Number.isFinite(cost.elu) ? cost.elu.toFixed(2) : 'n/a',
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
  // The engine's own phases: once, or once per variant, the variants' rows side by side.
  const engineRows = (x: Results, tag: string): Row[] => {
    const from = rows.length;
    addEngineRows(x, tag);
    return rows.splice(from);
  };
  const addEngineRows = (r: Results, tag: string) => {
    for (const e of [r.engineOff, r.engineOn]) {
      if (!e) continue;
      const limit = e.sensorPosts ? H : L;
      const ratio = e.readingsPerS / limit;
      add(
        {
          measure: `${tag}engine, SENSOR_POSTS=${e.sensorPosts} (${fmt(e.rows)} rows)`,
          value: e.complete ? fmt(e.readingsPerS, ' readings/s') : 'incomplete',
          limit: e.sensorPosts ? `HTTP ${fmt(H)}` : `LISTEN ${fmt(L)}`,
          ratio: ratioOf(e.readingsPerS, limit),
          // Posts on: at least half the HTTP limit, at 40 µs of engine CPU per reading or less.
          target: e.sensorPosts ? '>= 0.5x, <= 40 us' : '>= 0.8x',
          met: verdict(
            !Number.isFinite(ratio)
              ? undefined
              : e.sensorPosts
                ? ratio >= 0.5 && (e.engineCost?.cpuUsPerReading ?? Number.POSITIVE_INFINITY) <= 40
                : ratio >= 0.8,
          ),
        },
        e.cpu,
        e.engineCost,
      );
    }
    for (const l of [r.latencyOn, r.latencyOff]) {
      if (!l) continue;
      add(
        {
          measure: `${tag}latency @${fmt(l.rate)}/s, posts ${l.sensorPosts ? 'on' : 'off'} (p50 / p99 / max)`,
          value: `${fmt(l.p50Ms)} / ${fmt(l.p99Ms)} / ${fmt(l.maxMs)} ms`,
          target: 'p99 < 20 ms',
          met: verdict(Number.isFinite(l.p99Ms) && l.missing === 0 ? l.p99Ms < 20 : false),
        },
        l.cpu,
        l.engineCost,
      );
    }
    for (const b of [r.burstOn, r.burstOff]) {
      if (!b) continue;
      const lags = b.sensorPosts
        ? `${fmt(b.lastVectorLagMs)} / ${fmt(b.lastPostLagMs)} ms`
        : `${fmt(b.lastVectorLagMs)} ms`;
      add(
        {
          measure: `${tag}burst ${fmt(b.rows)} readings, posts ${b.sensorPosts ? 'on' : 'off'}: readings/s; last commit -> last ${b.sensorPosts ? 'vector / post' : 'vector'}`,
          value: b.complete ? `${fmt(b.readingsPerS, '/s')}; ${lags}` : 'incomplete',
          target: '< 1 s after the last commit',
          met: verdict(Number.isFinite(b.lastDeliveryLagMs) ? b.lastDeliveryLagMs < 1_000 : false),
        },
        b.cpu,
        b.engineCost,
      );
      add({
        measure: `${tag}burst, posts ${b.sensorPosts ? 'on' : 'off'}: PostgreSQL sessions busy / open (mean; top states)`,
        value: waitsLine(b.waits),
      });
    }
  };
  rows.push(...engineRows(r, ''));
  const perVariant = (r.variants ?? []).map((v) => engineRows(v.results, `[${v.name}] `));
  for (let i = 0; i < Math.max(0, ...perVariant.map((x) => x.length)); i++) {
    for (const x of perVariant) if (x[i]) rows.push(x[i] as Row);
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
      c.engineCost,
    );
    // Catching up with posts at least as fast as the live path with posts (issue 14): a backlog drains no
    // slower than the same readings would arrive in a burst.
    const live = (r.engineOn ?? r.variants?.[0]?.results.engineOn)?.readingsPerS ?? Number.NaN;
    const whole = c.rowsPerSWithPosts; // to the last vector or post, whichever came later
    add({
      measure: 'catch-up incl. all per-sensor posts and vectors',
      value: `${fmt(whole, ' rows/s')} (${fmt(Math.max(c.vectorsMs, c.postsMs))} ms)`,
      limit: `live ${fmt(live)}`,
      ratio: ratioOf(whole, live),
      target: '>= 1x live, posts on',
      met: verdict(Number.isFinite(whole / live) ? whole >= live : undefined),
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
      m.engineCost,
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
  if (r.sources) for (const x of sourcesTable(r.sources)) add(x, x.cpu, x.cost);
  const addWaits = (x: FleetRun, what: string) => {
    add({
      measure: `${what}: binds first; PostgreSQL sessions busy / open (mean; top states)`,
      value: `${bindsFirst(x)}; ${waitsLine(x.waits)}`,
    });
  };
  if (r.fleet) {
    const f = r.fleet;
    const lagValue = (x: FleetRun) =>
      `${fmt(x.lag.vector.p50Ms)} / ${fmt(x.lag.vector.p99Ms)} / ${fmt(x.lag.vector.maxMs)} ms; ` +
      `posts ${fmt(x.lag.post.p50Ms)} / ${fmt(x.lag.post.p99Ms)} / ${fmt(x.lag.post.maxMs)} ms`;
    const passed = (x: FleetRun) => x.verdict === 'pass';
    const outcome = (x: FleetRun) =>
      passed(x)
        ? lagValue(x)
        : x.verdict === 'start-failed'
          ? `start-failed: ${x.reason.slice(0, 100)}`
          : `${x.verdict}: ${lagValue(x)}`;
    const x = f.run;
    const started = (x: FleetRun) => x.verdict !== 'start-failed';
    add(
      {
        measure: `fleet: ${fmt(x.pumps)} pumps x ${x.sensors}, ${x.seconds} s (lag p50 / p99 / max)`,
        value: outcome(x),
        target: `p99 < ${FLEET_P99_TARGET_MS / 1000} s`,
        met: verdict(passed(x)),
      },
      started(x) ? x.cpu : undefined,
      x.engineCost,
    );
    if (started(x))
      add({
        measure: 'fleet run: vectors, posts delivered / expected; duplicates',
        value:
          `${fmt(x.vectorsDelivered)} / ${fmt(x.vectorsExpected)}, ${fmt(x.postsDelivered)} / ` +
          `${fmt(x.postsExpected)}; ${fmt(x.duplicates + x.vectorsExtra)} dup`,
        target: 'all; 0 dup',
        met: verdict(
          x.vectorsDelivered === x.vectorsExpected &&
            x.postsDelivered === x.postsExpected &&
            x.duplicates + x.vectorsExtra === 0,
        ),
      });
    if (started(x)) {
      const ps = x.postgresBySession;
      const w = x.postgresWork;
      add({
        measure: 'fleet run: PostgreSQL cores: inserts / engine / its LISTEN / rest',
        value:
          `${ps.inserts.toFixed(2)} / ${ps.engine.toFixed(2)} / ${ps.listen.toFixed(2)} / ${ps.rest.toFixed(2)}; ` +
          `WAL ${fmt(w.walMbPerS)} MB/s, ${fmt(w.checkpoints)} checkpoints, ` +
          `${fmt(w.engineAutovacuums)} autovacuums of engine tables`,
      });
    }
    if (started(x)) addWaits(x, 'fleet run');
    if (started(x))
      add({
        measure: 'fleet run: peak RSS, 1st / 2nd half; trend',
        value:
          `${fmt(x.rss.peakMb)} MB, ${fmt(x.rss.firstHalfPeakMb)} / ${fmt(x.rss.secondHalfPeakMb)} MB; ` +
          `${fmt(x.rss.slopeMbPerMin)} MB/min`,
        target: 'flat',
        met: verdict(x.rss.flat),
      });
    for (const s of f.steps) {
      add(
        {
          measure: `fleet step: ${fmt(s.pumps)} pumps, ${s.seconds} s (lag p50 / p99 / max)`,
          value: outcome(s),
          target: `p99 < ${FLEET_P99_TARGET_MS / 1000} s`,
          met: verdict(passed(s)),
        },
        started(s) ? s.cpu : undefined,
        s.engineCost,
      );
      if (started(s)) addWaits(s, `fleet step ${fmt(s.pumps)}`);
    }
    if (f.ladder.length > 0) {
      // The smallest count tried above the largest that passed: where one replica stopped.
      const above = [x, ...f.steps]
        .filter((s) => !passed(s) && s.pumps > (f.largestPassing ?? 0))
        .sort((a, b) => a.pumps - b.pumps)[0];
      const next = above ? `; ${fmt(above.pumps)}: ${above.verdict}` : '; every count tried passed';
      add({
        measure: 'fleet: largest pump count, one replica, p99 < 1 s',
        value: `${f.largestPassing === undefined ? 'none' : `${fmt(f.largestPassing)} pumps`}${next}`,
        target: `p99 < ${FLEET_P99_TARGET_MS / 1000} s`,
        met: verdict(f.largestPassing !== undefined),
      });
    }
  }
  return rows;
}

/**
 * What bound a fleet run first, by the rule docs/scaling.md gives: the machine's cores when it was busy
 * at 90% of them or more (PostgreSQL's and the engine's share named; marked disturbed when a quarter core
 * or more of it was other load); otherwise the client sessions'
 * largest wait when at least half a session waited on it on average; otherwise nothing in PostgreSQL.
 */
export function bindsFirst(x: FleetRun): string {
  const c = x.cpu;
  const shares = `PostgreSQL ${c.postgresCores.toFixed(2)}, engine ${c.engineCores.toFixed(2)} of ${c.machineCores.toFixed(0)} cores`;
  if (c.machineBusyCores >= 0.9 * c.machineCores)
    return c.otherCores >= 0.25
      ? `the cores, ${c.otherCores.toFixed(2)} of them other load: disturbed (${shares})`
      : `the cores (${shares})`;
  const top = x.waits?.top[0];
  if (top && top.sessions >= 0.5)
    return `${top.role} waiting on ${top.state} (${top.sessions} sessions; ${shares})`;
  return `not PostgreSQL (${shares})`;
}

/** The legend printed under the table. */
export const LEGEND = [
  "cores: CPU cores used during the measurement by the engine (or the limit's helper process),",
  'PostgreSQL, this bench process, and anything else; * = other load >= 0.25 cores (disturbed)',
  'engine µs/reading: engine CPU (utime + stime) per reading, its kernel part (stime) in brackets;',
  "alloc KB/reading: JS heap allocated per reading; ELU: the engine's event-loop utilisation",
  '(catch-up: with its posts; docs/performance.md)',
  'fleet lag: commit -> first arrival of each vector, then of each per-sensor post; a failed step names',
  'its verdict: lag (p99 >= 1 s), engine-behind, inserter-behind (the inserts fell behind their',
  'schedule: see the cores), not-exactly-once or start-failed',
];

function today(): string {
  const d = new Date();
  const two = (x: number) => String(x).padStart(2, '0');
  return `${d.getFullYear()}-${two(d.getMonth() + 1)}-${two(d.getDate())}`;
}

export interface ReportInput {
  opts: Options;
  postgres: string;
  source: { commit: string; srcDirty: boolean };
  began: number;
  rows: Row[];
  results: Results;
  profiles: Record<string, ProfileSummary>;
}

/**
 * Writes the report to `<out>/<date>.json` (`<date>-quick.json` in quick mode), atomically; returns the
 * file and the run's duration in seconds.
 */
export async function writeReport(x: ReportInput): Promise<{ file: string; durationS: number }> {
  const { opts } = x;
  const report = {
    date: today(),
    mode: opts.mode,
    machine: {
      cpus: os.cpus().length,
      cpuModel: os.cpus()[0]?.model ?? 'unknown',
      memoryGiB: round(os.totalmem() / 1024 ** 3, 1),
      platform: `${os.platform()} ${os.release()}`,
      node: process.version,
      postgres: x.postgres,
    },
    source: x.source,
    options: { ...opts, phases: [...opts.phases] },
    durationS: round((Date.now() - x.began) / 1000, 0),
    table: x.rows,
    results: x.results,
    profiles: x.profiles,
  };
  await mkdir(opts.out, { recursive: true });
  const file = path.join(opts.out, `${report.date}${opts.mode === 'quick' ? '-quick' : ''}.json`);
  await writeFile(`${file}.tmp`, `${JSON.stringify(report, null, 2)}\n`);
  await rename(`${file}.tmp`, file);
  return { file, durationS: report.durationS };
}
