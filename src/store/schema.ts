import type pg from 'pg';
import type { PumpDefinition } from '../config/pumps.js';
import { quoteIdent } from './db.js';
import { ENGINE_SCHEMA, runMigrations } from './migrations.js';

export { ENGINE_SCHEMA } from './migrations.js';

/** Explains a missing privilege in one line that names it. */
export class PrivilegeError extends Error {
  override name = 'PrivilegeError';
}

async function inLockedTransaction(client: pg.ClientBase, fn: () => Promise<void>): Promise<void> {
  await client.query('BEGIN');
  try {
    // Replicas starting together would race on CREATE ... IF NOT EXISTS; serialize them.
    await client.query(`SELECT pg_advisory_xact_lock(hashtext('${ENGINE_SCHEMA}.schema'))`);
    await fn();
    await client.query('COMMIT');
  } catch (err) {
    await client.query('ROLLBACK').catch(() => {});
    throw err;
  }
}

/**
 * Creates the engine's schema when it is missing and upgrades it in place when it is older (numbered
 * migrations). Safe to run concurrently and repeatedly; refuses a schema newer than this program knows.
 */
export async function ensureEngineSchema(client: pg.ClientBase): Promise<number[]> {
  try {
    return await runMigrations(client);
  } catch (err) {
    if ((err as { code?: string }).code === '42501') {
      const { rows: who } = await client.query<{ u: string; d: string }>(
        'SELECT current_user AS u, current_database() AS d',
      );
      const u = who[0]?.u ?? 'this user';
      const d = who[0]?.d ?? 'this database';
      throw new PrivilegeError(
        `database user "${u}" lacks the CREATE privilege on database "${d}", needed to create or upgrade schema ` +
          `${ENGINE_SCHEMA}; run GRANT CREATE ON DATABASE ${quoteIdent(d)} TO ${quoteIdent(u)}, or have an owner run pump-monitor migrate`,
      );
    }
    throw err;
  }
}

/** The DDL of one sensor table as the original system created it. */
export function sensorTableDdl(table: string): string {
  return `CREATE TABLE IF NOT EXISTS ${quoteIdent(table)} (
    id serial PRIMARY KEY,
    tiempo_ejecucion timestamp DEFAULT now(),
    tiempo_sensor text,
    valor_sensor double precision,
    clasificacion integer,
    contador_anomalias integer DEFAULT 0
  )`;
}

export const TRIGGER_NAME = 'pump_monitor_notify';

export type MigrateProgress = (done: number, total: number, table: string) => void;

/**
 * Creates missing sensor tables and installs the notifying trigger on each one.
 * Running it twice is harmless: tables are kept, triggers are replaced.
 */
export async function migrate(client: pg.ClientBase, pumps: PumpDefinition[], progress?: MigrateProgress) {
  await ensureEngineSchema(client);
  return installSensorTables(client, pumps, progress);
}

/** The sensor-table half of migrate: missing tables and the notifying triggers, nothing of the engine schema's. */
export async function installSensorTables(
  client: pg.ClientBase,
  pumps: PumpDefinition[],
  progress?: MigrateProgress,
): Promise<{ tables: number }> {
  const sensors = pumps.flatMap((p) => p.sensors);
  let done = 0;
  await inLockedTransaction(client, async () => {
    for (const s of sensors) {
      const t = quoteIdent(s.table);
      await client.query(sensorTableDdl(s.table));
      await client.query(`DROP TRIGGER IF EXISTS ${TRIGGER_NAME} ON ${t}`);
      await client.query(
        `CREATE TRIGGER ${TRIGGER_NAME} AFTER INSERT OR UPDATE OF valor_sensor, tiempo_sensor ON ${t}
         FOR EACH ROW EXECUTE FUNCTION ${ENGINE_SCHEMA}.notify_reading(${quoteLiteral(s.channel)})`,
      );
      done += 1;
      progress?.(done, sensors.length, s.table);
    }
  });
  return { tables: sensors.length };
}

function quoteLiteral(s: string): string {
  return `'${s.replace(/'/g, "''")}'`;
}
