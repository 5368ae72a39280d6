import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { round } from './stats.js';

/** The processes whose CPU time is accounted separately. */
export interface Tracked {
  /** The bench's own PostgreSQL: the postmaster and its children (backends, walwriter, ...). */
  postmaster?: number | undefined;
  engine?: number | undefined;
  /** Other bench children (bare listener, HTTP load generator). */
  helpers?: (number | undefined)[];
}

/** CPU time so far, in ms. */
export interface CpuSnapshot {
  wallMs: number;
  benchMs: number;
  engineMs: number;
  /** The engine's stime alone. */
  engineSysMs: number;
  postgresMs: number;
  helpersMs: number;
  machineBusyMs: number;
  machineTotalMs: number;
}

/**
 * Where a phase's CPU went, in cores (CPU ms per wall ms). `otherCores` is whatever else ran on the machine
 * meanwhile (another workload disturbs the measurement). Linux only; zeros elsewhere.
 */
export interface CpuShare {
  wallMs: number;
  engineCores: number;
  postgresCores: number;
  benchCores: number;
  helperCores: number;
  otherCores: number;
  machineBusyCores: number;
  machineCores: number;
}

let ticksPerSecond: number | undefined;

function clockTicks(): number {
  if (ticksPerSecond === undefined) {
    try {
      ticksPerSecond = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
    } catch {
      ticksPerSecond = 100;
    }
  }
  return ticksPerSecond;
}

interface Stat {
  ppid: number;
  /** utime + stime, in ticks */
  own: number;
  /** stime alone (time in the kernel on the process's behalf), in ticks */
  sys: number;
  /** cutime + cstime (children already reaped), in ticks */
  reaped: number;
}

function readStat(pid: number | string): Stat | undefined {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined; // gone, or not Linux
  }
  // proc(5): "pid (comm) state ppid ..."; comm may hold spaces, so split after the last ')'.
  const f = text.slice(text.lastIndexOf(')') + 2).split(' ');
  // f[0] is field 3 (state): ppid is field 4, utime..cstime are fields 14-17.
  return {
    ppid: Number(f[1]),
    own: Number(f[11]) + Number(f[12]),
    sys: Number(f[12]),
    reaped: Number(f[13]) + Number(f[14]),
  };
}

function ms(ticks: number): number {
  return (ticks * 1000) / clockTicks();
}

/** The postmaster's own and reaped time plus that of its live children. */
function postgresTicks(postmaster: number | undefined): number {
  if (postmaster === undefined) return 0;
  const pm = readStat(postmaster);
  if (!pm) return 0;
  let ticks = pm.own + pm.reaped;
  let entries: string[] = [];
  try {
    entries = readdirSync('/proc');
  } catch {
    return ticks;
  }
  for (const e of entries) {
    if (!/^\d+$/.test(e)) continue;
    const s = readStat(e);
    if (s && s.ppid === postmaster) ticks += s.own;
  }
  return ticks;
}

function machineTicks(): { busy: number; total: number } {
  try {
    const line = readFileSync('/proc/stat', 'utf8').split('\n')[0] ?? '';
    const v = line.trim().split(/\s+/).slice(1).map(Number);
    // user nice system idle iowait irq softirq steal guest guest_nice; guest time is already in user.
    const total = v.slice(0, 8).reduce((a, b) => a + b, 0);
    const idle = (v[3] ?? 0) + (v[4] ?? 0);
    return { busy: total - idle, total };
  } catch {
    return { busy: 0, total: 0 };
  }
}

/** A process's own CPU time so far (utime + stime), in ms; undefined when it is gone. */
export function processCpuMs(pid: number): number | undefined {
  const s = readStat(pid);
  return s ? ms(s.own) : undefined;
}

export function cpuSnapshot(t: Tracked = {}): CpuSnapshot {
  const u = process.cpuUsage();
  const m = machineTicks();
  const engine = t.engine === undefined ? undefined : readStat(t.engine);
  let helpers = 0;
  for (const pid of t.helpers ?? []) if (pid !== undefined) helpers += readStat(pid)?.own ?? 0;
  return {
    wallMs: performance.now(),
    benchMs: (u.user + u.system) / 1000,
    engineMs: engine ? ms(engine.own) : 0,
    engineSysMs: engine ? ms(engine.sys) : 0,
    postgresMs: ms(postgresTicks(t.postmaster)),
    helpersMs: ms(helpers),
    machineBusyMs: ms(m.busy),
    machineTotalMs: ms(m.total),
  };
}

export function cpuShare(a: CpuSnapshot, b: CpuSnapshot): CpuShare {
  const wall = Math.max(1, b.wallMs - a.wallMs);
  const cores = (x: number) => round(Math.max(0, x) / wall, 2);
  const engine = b.engineMs - a.engineMs;
  const postgres = b.postgresMs - a.postgresMs;
  const bench = b.benchMs - a.benchMs;
  const helpers = b.helpersMs - a.helpersMs;
  const busy = b.machineBusyMs - a.machineBusyMs;
  return {
    wallMs: round(wall, 0),
    engineCores: cores(engine),
    postgresCores: cores(postgres),
    benchCores: cores(bench),
    helperCores: cores(helpers),
    otherCores: cores(busy - engine - postgres - bench - helpers),
    machineBusyCores: cores(busy),
    machineCores: cores(b.machineTotalMs - a.machineTotalMs),
  };
}
