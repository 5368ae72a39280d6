import { createHash } from 'node:crypto';
import type pg from 'pg';
import { ENGINE_SCHEMA } from './migrations.js';

/** Lock key namespace: the first int of the two-int advisory lock form. */
const NAMESPACE = 0x70756d70; // 'pump'

export function pumpLockKey(pump: string): number {
  return createHash('sha256').update(pump).digest().readInt32BE(0);
}

/** Sessions in this database whose name starts with `prefix`: the replicas serving the same pumps. */
export async function countSessions(c: pg.ClientBase, prefix: string): Promise<number> {
  const { rows } = await c.query<{ n: number }>(
    `SELECT count(*)::int AS n FROM pg_stat_activity
      WHERE starts_with(application_name, $1) AND datname = current_database()`,
    [prefix],
  );
  return rows[0]?.n ?? 0;
}

/**
 * Takes the pump's advisory lock on this session if it is free, and records this replica as its owner.
 * Returns undefined when another session holds it, else the owner recorded before (to tell a resume).
 */
export async function tryLockPump(
  c: pg.ClientBase,
  pump: string,
  replica: string,
): Promise<{ previousOwner: string | undefined } | undefined> {
  const { rows } = await c.query<{ ok: boolean }>('SELECT pg_try_advisory_lock($1, $2) AS ok', [
    NAMESPACE,
    pumpLockKey(pump),
  ]);
  if (!rows[0]?.ok) return undefined;
  const { rows: prev } = await c.query<{ owner: string }>(
    `INSERT INTO ${ENGINE_SCHEMA}.leases AS l (pump, owner) VALUES ($1, $2)
     ON CONFLICT (pump) DO UPDATE SET owner = EXCLUDED.owner, acquired_at = now()
     RETURNING (SELECT owner FROM ${ENGINE_SCHEMA}.leases WHERE pump = $1) AS owner`,
    [pump, replica],
  );
  return { previousOwner: prev[0]?.owner };
}

export async function unlockPump(c: pg.ClientBase, pump: string): Promise<void> {
  await c.query('SELECT pg_advisory_unlock($1, $2)', [NAMESPACE, pumpLockKey(pump)]);
}
