/**
 * What PostgreSQL did over a fleet run, read from its statistics views and its backends' /proc times: cores
 * by session (inserts, the engine, its LISTEN, the rest), WAL written, checkpoints and autovacuums.
 */
import type pg from 'pg';
import { ENGINE_SCHEMA } from '../../src/store/schema.js';
import { processCpuMs } from '../cpu.js';
import { round } from '../stats.js';
import type { FleetRun } from './fleet-model.js';

type SessionRole = 'inserts' | 'engine' | 'listen';

/** Each of the database's backends (by pid): its role, from its application_name, and its CPU ms so far. */
export async function backendCpu(
  admin: pg.Client,
): Promise<Map<number, { role: SessionRole | 'rest'; ms: number }>> {
  const { rows } = await admin.query<{ pid: number; a: string }>(
    'SELECT pid, application_name AS a FROM pg_stat_activity WHERE datname = current_database()',
  );
  const out = new Map<number, { role: SessionRole | 'rest'; ms: number }>();
  for (const r of rows) {
    const ms = processCpuMs(r.pid);
    if (ms === undefined) continue;
    const role =
      r.a === 'bench-inserter'
        ? 'inserts'
        : r.a.startsWith('pm-listen:')
          ? 'listen'
          : r.a === 'pump-monitor' || r.a.startsWith('pm-lease:')
            ? 'engine'
            : 'rest';
    out.set(r.pid, { role, ms });
  }
  return out;
}

export interface PgCounters {
  walBytes: number;
  checkpoints: number;
  autovacuums: number;
}

/** PostgreSQL's running totals: WAL position, checkpoints begun, autovacuums of the engine's tables. */
export async function pgCounters(admin: pg.Client): Promise<PgCounters | undefined> {
  try {
    const { rows } = await admin.query<{ wal: string; cp: string | null; av: string | null }>(
      `SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::text AS wal,
              (SELECT (num_timed + num_requested)::text FROM pg_stat_checkpointer) AS cp,
              (SELECT sum(autovacuum_count)::text FROM pg_stat_all_tables WHERE schemaname = $1) AS av`,
      [ENGINE_SCHEMA],
    );
    const r = rows[0];
    return r
      ? { walBytes: Number(r.wal), checkpoints: Number(r.cp), autovacuums: Number(r.av ?? 0) }
      : undefined;
  } catch {
    return undefined; // pg_stat_checkpointer is PostgreSQL 17's; older servers have no such view
  }
}

export function pgWork(
  a: PgCounters | undefined,
  b: PgCounters | undefined,
  wallMs: number,
): FleetRun['postgresWork'] {
  if (!a || !b) return { walMbPerS: Number.NaN, checkpoints: Number.NaN, engineAutovacuums: Number.NaN };
  return {
    walMbPerS: round((b.walBytes - a.walBytes) / 1024 ** 2 / (Math.max(1, wallMs) / 1000), 2),
    checkpoints: b.checkpoints - a.checkpoints,
    engineAutovacuums: b.autovacuums - a.autovacuums,
  };
}

/** Cores by role between two backendCpu() readings (a backend that began in between counts from 0). */
export function bySession(
  a: Map<number, { role: string; ms: number }>,
  b: Map<number, { role: string; ms: number }>,
  postgresCores: number,
  wallMs: number,
): FleetRun['postgresBySession'] {
  const sum: Record<string, number> = { inserts: 0, engine: 0, listen: 0 };
  for (const [pid, x] of b) {
    if (x.role in sum) sum[x.role] = (sum[x.role] as number) + x.ms - (a.get(pid)?.ms ?? 0);
  }
  const cores = (ms: number) => round(Math.max(0, ms) / Math.max(1, wallMs), 2);
  const inserts = cores(sum.inserts as number);
  const engine = cores(sum.engine as number);
  const listen = cores(sum.listen as number);
  return { inserts, engine, listen, rest: round(Math.max(0, postgresCores - inserts - engine - listen), 2) };
}
