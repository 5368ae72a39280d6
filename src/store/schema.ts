import type pg from 'pg';
import { distinctSensorTables, type LogbookDefinition, type PumpDefinition } from '../config/pumps.js';
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
      const { rows: who } = await client.query<{ u: string; d: string; exists: boolean }>(
        'SELECT current_user AS u, current_database() AS d, EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1) AS exists',
        [ENGINE_SCHEMA],
      );
      const u = who[0]?.u ?? 'this user';
      const d = who[0]?.d ?? 'this database';
      if (who[0]?.exists) {
        // Another user (an owner running migrate) created it, and granted this one nothing.
        throw new PrivilegeError(
          `database user "${u}" may not use schema ${ENGINE_SCHEMA}, which another user created; have its owner run ` +
            `pump-monitor migrate --grant-to ${u}, or run ${engineGrants(u).slice(0, 3).join('; ')}`,
        );
      }
      throw new PrivilegeError(
        `database user "${u}" lacks the CREATE privilege on database "${d}", needed to create or upgrade schema ` +
          `${ENGINE_SCHEMA}; run GRANT CREATE ON DATABASE ${quoteIdent(d)} TO ${quoteIdent(u)}, or have an owner run pump-monitor migrate`,
      );
    }
    throw err;
  }
}

/**
 * What a database user that did not create the engine schema needs to run `listen`: the schema, its
 * tables and sequences (also those a later migration adds), and reading the sensor and logbook tables.
 */
export function engineGrants(role: string, tables: string[] = []): string[] {
  const r = quoteIdent(role);
  return [
    `GRANT USAGE ON SCHEMA ${ENGINE_SCHEMA} TO ${r}`,
    `GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA ${ENGINE_SCHEMA} TO ${r}`,
    `GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA ${ENGINE_SCHEMA} TO ${r}`,
    `ALTER DEFAULT PRIVILEGES IN SCHEMA ${ENGINE_SCHEMA} GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO ${r}`,
    `ALTER DEFAULT PRIVILEGES IN SCHEMA ${ENGINE_SCHEMA} GRANT USAGE, SELECT ON SEQUENCES TO ${r}`,
    ...tables.map((t) => `GRANT SELECT ON ${quoteIdent(t)} TO ${r}`),
  ];
}

/** Grants `role` what `engineGrants` lists, in one transaction. */
export async function grantEngineSchema(
  client: pg.ClientBase,
  role: string,
  tables: string[],
): Promise<void> {
  await inLockedTransaction(client, async () => {
    for (const sql of engineGrants(role, tables)) await client.query(sql);
  });
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

/**
 * The DDL of one logbook table, with the columns the plant's tables have (facts: plant-2026-03.json,
 * logbooks.table.columns), the quoted capitalised ones included. The backend writes clasificacion and
 * alerta_aviso back into the row.
 */
export function logbookTableDdl(table: string): string {
  return `CREATE TABLE IF NOT EXISTS ${quoteIdent(table)} (
    id serial PRIMARY KEY,
    tiempo_ejecucion timestamp,
    bitacora text,
    clasificacion text,
    alerta_aviso text,
    bomba_activa text,
    "Fecha" date,
    "Hora" text,
    "Observaciones" text,
    categoria varchar(100),
    prioridad varchar(20) DEFAULT 'MEDIA',
    procesado_llm boolean DEFAULT false,
    fecha_procesado timestamp,
    resumen_llm text
  )`;
}

/** PostgreSQL refuses a NOTIFY payload of this many bytes or more. */
export const NOTIFY_PAYLOAD_LIMIT = 8000;

/**
 * The logbook trigger's function: notifies {"id", "bitacora"} on INSERT and when the entry's text
 * changes, never on the backend's write-back of clasificacion or alerta_aviso. An entry too long for a
 * NOTIFY payload is announced by its id alone; the reader then takes the text from the row.
 */
const NOTIFY_LOGBOOK_FUNCTION = `
CREATE OR REPLACE FUNCTION ${ENGINE_SCHEMA}.notify_logbook() RETURNS trigger LANGUAGE plpgsql AS $fn$
DECLARE
  payload text;
BEGIN
  IF TG_OP = 'UPDATE' AND NEW.bitacora IS NOT DISTINCT FROM OLD.bitacora THEN
    RETURN NEW;
  END IF;
  payload := json_build_object('id', NEW.id, 'bitacora', NEW.bitacora)::text;
  IF octet_length(payload) >= ${NOTIFY_PAYLOAD_LIMIT} THEN
    payload := json_build_object('id', NEW.id)::text;
  END IF;
  PERFORM pg_notify(TG_ARGV[0], payload);
  RETURN NEW;
END
$fn$`;

export const TRIGGER_NAME = 'pump_monitor_notify';

/** Takes the engine's trigger off a table (SOURCE=replication reads the table's inserts from the slot). */
export async function dropNotifyTrigger(client: pg.ClientBase, table: string): Promise<void> {
  await client.query(`DROP TRIGGER IF EXISTS ${TRIGGER_NAME} ON ${quoteIdent(table)}`);
}

export type MigrateProgress = (done: number, total: number, table: string) => void;

/** What migrate installs: the pumps' sensor tables and, when given, logbook tables. A Config will do. */
export interface Wiring {
  pumps: PumpDefinition[];
  logbooks?: LogbookDefinition[];
}

function wiringOf(w: PumpDefinition[] | Wiring): Required<Wiring> {
  return Array.isArray(w) ? { pumps: w, logbooks: [] } : { pumps: w.pumps, logbooks: w.logbooks ?? [] };
}

export interface InstallResult {
  /** Tables created or checked, with one trigger each: sensorTables + logbookTables. */
  tables: number;
  /** Distinct sensor tables: a table several pumps read is counted, and triggered, once. */
  sensorTables: number;
  logbookTables: number;
}

/**
 * Creates missing sensor and logbook tables and installs the notifying trigger on each one.
 * Running it twice is harmless: tables are kept, triggers are replaced.
 */
export async function migrate(
  client: pg.ClientBase,
  wiring: PumpDefinition[] | Wiring,
  progress?: MigrateProgress,
): Promise<InstallResult> {
  await ensureEngineSchema(client);
  return installSensorTables(client, wiring, progress);
}

/**
 * The table half of migrate: missing tables and the notifying triggers, nothing of the engine schema's
 * but the logbook trigger's function. A table listed by several pumps gets one trigger.
 */
export async function installSensorTables(
  client: pg.ClientBase,
  wiring: PumpDefinition[] | Wiring,
  progress?: MigrateProgress,
): Promise<InstallResult> {
  const { pumps, logbooks } = wiringOf(wiring);
  const sensorTables = distinctSensorTables(pumps);
  const logbookTables = distinctLogbookTables(logbooks);
  const total = sensorTables.length + logbookTables.length;
  let done = 0;
  await inLockedTransaction(client, async () => {
    for (const { table, channel } of sensorTables) {
      const t = quoteIdent(table);
      await client.query(sensorTableDdl(table));
      await client.query(`DROP TRIGGER IF EXISTS ${TRIGGER_NAME} ON ${t}`);
      await client.query(
        `CREATE TRIGGER ${TRIGGER_NAME} AFTER INSERT OR UPDATE OF valor_sensor, tiempo_sensor ON ${t}
         FOR EACH ROW EXECUTE FUNCTION ${ENGINE_SCHEMA}.notify_reading(${quoteLiteral(channel)})`,
      );
      done += 1;
      progress?.(done, total, table);
    }
    if (logbookTables.length > 0) await client.query(NOTIFY_LOGBOOK_FUNCTION);
    for (const { table, channel } of logbookTables) {
      const t = quoteIdent(table);
      await client.query(logbookTableDdl(table));
      await client.query(`DROP TRIGGER IF EXISTS ${TRIGGER_NAME} ON ${t}`);
      await client.query(
        `CREATE TRIGGER ${TRIGGER_NAME} AFTER INSERT OR UPDATE OF bitacora ON ${t}
         FOR EACH ROW EXECUTE FUNCTION ${ENGINE_SCHEMA}.notify_logbook(${quoteLiteral(channel)})`,
      );
      done += 1;
      progress?.(done, total, table);
    }
  });
  return { tables: total, sensorTables: sensorTables.length, logbookTables: logbookTables.length };
}

function distinctLogbookTables(logbooks: LogbookDefinition[]): { table: string; channel: string }[] {
  const seen = new Map<string, string>();
  for (const l of logbooks) for (const s of l.streams) if (!seen.has(s.table)) seen.set(s.table, s.channel);
  return [...seen].map(([table, channel]) => ({ table, channel }));
}

function quoteLiteral(s: string): string {
  return `'${s.replace(/'/g, "''")}'`;
}
