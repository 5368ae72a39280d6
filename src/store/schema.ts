import type pg from 'pg';
import type { PumpDefinition } from '../config/pumps.js';
import { quoteIdent } from './db.js';

/** The engine's own schema: checkpoints, outbox and dead letters. Sensor tables are never altered by it. */
export const ENGINE_SCHEMA = 'pump_monitor';

const ENGINE_DDL = `
CREATE SCHEMA IF NOT EXISTS ${ENGINE_SCHEMA};
CREATE TABLE IF NOT EXISTS ${ENGINE_SCHEMA}.checkpoints (
  table_name text PRIMARY KEY,
  last_id bigint NOT NULL,
  updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS ${ENGINE_SCHEMA}.outbox (
  id bigserial PRIMARY KEY,
  pump text NOT NULL,
  tiempo_sensor text NOT NULL,
  idempotency_key text NOT NULL,
  body jsonb NOT NULL,
  filled text[] NOT NULL DEFAULT '{}',
  missing text[] NOT NULL DEFAULT '{}',
  status text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'sent', 'dead', 'dropped')),
  attempts integer NOT NULL DEFAULT 0,
  created_at timestamptz NOT NULL DEFAULT now(),
  sent_at timestamptz,
  response_status integer,
  response_body text,
  UNIQUE (pump, tiempo_sensor)
);
CREATE INDEX IF NOT EXISTS outbox_pending_idx ON ${ENGINE_SCHEMA}.outbox (pump, id) WHERE status = 'pending';
CREATE TABLE IF NOT EXISTS ${ENGINE_SCHEMA}.deferred_posts (
  id bigserial PRIMARY KEY,
  pump text NOT NULL,
  channel text NOT NULL,
  payload text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS ${ENGINE_SCHEMA}.leases (
  pump text PRIMARY KEY,
  owner text NOT NULL,
  acquired_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS ${ENGINE_SCHEMA}.dead_letters (
  id bigserial PRIMARY KEY,
  kind text NOT NULL,
  pump text,
  channel text,
  payload text,
  reason text NOT NULL,
  response_status integer,
  response_body text,
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS dead_letters_created_idx ON ${ENGINE_SCHEMA}.dead_letters (created_at);
CREATE OR REPLACE FUNCTION ${ENGINE_SCHEMA}.notify_reading() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
  -- The backend writes clasificacion and contador_anomalias back into the row: that must not notify.
  IF TG_OP = 'UPDATE' AND NEW.valor_sensor IS NOT DISTINCT FROM OLD.valor_sensor
     AND NEW.tiempo_sensor IS NOT DISTINCT FROM OLD.tiempo_sensor THEN
    RETURN NEW;
  END IF;
  PERFORM pg_notify(TG_ARGV[0], json_build_object(
    'id_sensor', NEW.id, 'valor', NEW.valor_sensor, 'tiempo_sensor', NEW.tiempo_sensor)::text);
  RETURN NEW;
END
$fn$;
`;

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

/** Creates the engine's schema when it is missing. Safe to run concurrently and repeatedly. */
export async function ensureEngineSchema(client: pg.ClientBase): Promise<void> {
  const { rows } = await client.query<{ ok: boolean }>(
    `SELECT to_regclass('${ENGINE_SCHEMA}.dead_letters') IS NOT NULL
        AND to_regclass('${ENGINE_SCHEMA}.outbox') IS NOT NULL
        AND to_regclass('${ENGINE_SCHEMA}.checkpoints') IS NOT NULL
        AND to_regclass('${ENGINE_SCHEMA}.leases') IS NOT NULL
        AND to_regclass('${ENGINE_SCHEMA}.deferred_posts') IS NOT NULL AS ok`,
  );
  if (rows[0]?.ok) return;
  try {
    await inLockedTransaction(client, async () => {
      await client.query(ENGINE_DDL);
    });
  } catch (err) {
    if ((err as { code?: string }).code === '42501') {
      const { rows: who } = await client.query<{ u: string; d: string }>(
        'SELECT current_user AS u, current_database() AS d',
      );
      const u = who[0]?.u ?? 'this user';
      const d = who[0]?.d ?? 'this database';
      throw new PrivilegeError(
        `database user "${u}" lacks the CREATE privilege on database "${d}", needed once to create schema ` +
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
