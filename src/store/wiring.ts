import type pg from 'pg';
import type { Wiring } from '../config/wiring.js';
import { ENGINE_SCHEMA } from './migrations.js';

const T = `${ENGINE_SCHEMA}.wiring`;

/** A wiring as `listen` recorded it. */
export interface RecordedWiring {
  digest: string;
  profile: string | undefined;
  folder: string | undefined;
  /** The definitions as stored: to be checked again before use. */
  definitions: unknown[];
  /** The ids (pumps and logbooks) of every process that served this wiring. */
  served: string[];
  firstRecordedAt: Date;
  recordedAt: Date;
}

/**
 * Records the wiring this process serves, at its start: one row per digest, its `served` ids the union of
 * every process's that served it, `recorded_at` the latest start.
 */
export async function recordWiring(
  db: pg.ClientBase | pg.Pool,
  wiring: Wiring,
  served: string[],
): Promise<void> {
  await db.query(
    `INSERT INTO ${T} (digest, profile, folder, definitions, served) VALUES ($1, $2, $3, $4, $5)
     ON CONFLICT (digest) DO UPDATE SET profile = EXCLUDED.profile, folder = EXCLUDED.folder,
       served = ARRAY(SELECT DISTINCT x FROM unnest(${T}.served || EXCLUDED.served) AS x ORDER BY x),
       recorded_at = now()`,
    [
      wiring.digest,
      wiring.profile ?? null,
      wiring.folder ?? null,
      JSON.stringify([...wiring.definitions.pumps, ...wiring.definitions.logbooks]),
      served,
    ],
  );
}

/**
 * The recorded wirings, the latest start first; none when the table does not exist yet (a schema older
 * than version 5) or nothing was recorded.
 */
export async function recordedWirings(db: pg.ClientBase | pg.Pool, limit = 5): Promise<RecordedWiring[]> {
  const { rows: exists } = await db.query<{ ok: boolean }>(`SELECT to_regclass('${T}') IS NOT NULL AS ok`);
  if (!exists[0]?.ok) return [];
  const { rows } = await db.query<{
    digest: string;
    profile: string | null;
    folder: string | null;
    definitions: unknown;
    served: string[];
    first_recorded_at: Date;
    recorded_at: Date;
  }>(
    `SELECT digest, profile, folder, definitions, served, first_recorded_at, recorded_at
       FROM ${T} ORDER BY recorded_at DESC, digest LIMIT $1`,
    [limit],
  );
  return rows.map((r) => ({
    digest: r.digest,
    profile: r.profile ?? undefined,
    folder: r.folder ?? undefined,
    definitions: Array.isArray(r.definitions) ? r.definitions : [],
    served: r.served,
    firstRecordedAt: r.first_recorded_at,
    recordedAt: r.recorded_at,
  }));
}
