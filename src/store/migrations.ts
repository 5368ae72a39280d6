import type pg from 'pg';

/** The engine's own schema: checkpoints, outbox, dead letters, ledgers. Sensor tables are never altered by it. */
export const ENGINE_SCHEMA = 'pump_monitor';
const S = ENGINE_SCHEMA;

/**
 * Version 1: the schema as it was before migrations were numbered. Every statement is IF NOT EXISTS, so an
 * installation that has it already (and no version table) simply records version 1.
 */
const V1 = `
CREATE SCHEMA IF NOT EXISTS ${S};
CREATE TABLE IF NOT EXISTS ${S}.checkpoints (
  table_name text PRIMARY KEY,
  last_id bigint NOT NULL,
  updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS ${S}.outbox (
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
CREATE INDEX IF NOT EXISTS outbox_pending_idx ON ${S}.outbox (pump, id) WHERE status = 'pending';
CREATE TABLE IF NOT EXISTS ${S}.deferred_posts (
  id bigserial PRIMARY KEY,
  pump text NOT NULL,
  channel text NOT NULL,
  payload text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS ${S}.leases (
  pump text PRIMARY KEY,
  owner text NOT NULL,
  acquired_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS ${S}.dead_letters (
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
CREATE INDEX IF NOT EXISTS dead_letters_created_idx ON ${S}.dead_letters (created_at);
CREATE OR REPLACE FUNCTION ${S}.notify_reading() RETURNS trigger LANGUAGE plpgsql AS $fn$
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

/**
 * Version 2: a vector's identity is its rows, not its key text.
 * - `tiempo_sensor` repeats (HH:MM keys every day, clock resets), so (pump, tiempo_sensor) is no longer
 *   unique. Each outbox row keeps its members, the rows it was built from (`table_no << 40 | id`); a group
 *   rebuilt from any of them is the same vector. The Idempotency-Key is unique instead.
 * - Each sensor table gets a small number, so that members fit in one bigint.
 * - `sensor_posts` records per-sensor posts that are taken care of (answered, deferred or dead-lettered),
 *   so that rows read again after a crash are not posted again.
 */
const V2 = `
ALTER TABLE ${S}.outbox DROP CONSTRAINT IF EXISTS outbox_pump_tiempo_sensor_key;
ALTER TABLE ${S}.outbox ADD COLUMN IF NOT EXISTS members bigint[] NOT NULL DEFAULT '{}';
CREATE UNIQUE INDEX IF NOT EXISTS outbox_key_idx ON ${S}.outbox (idempotency_key);
CREATE INDEX IF NOT EXISTS outbox_tiempo_idx ON ${S}.outbox (pump, tiempo_sensor);
CREATE INDEX IF NOT EXISTS outbox_closed_idx ON ${S}.outbox (created_at) WHERE status <> 'pending';
ALTER TABLE ${S}.checkpoints ADD COLUMN IF NOT EXISTS table_no serial;
CREATE UNIQUE INDEX IF NOT EXISTS checkpoints_no_idx ON ${S}.checkpoints (table_no);
CREATE TABLE IF NOT EXISTS ${S}.sensor_posts (
  table_name text NOT NULL,
  row_id bigint NOT NULL,
  pump text NOT NULL,
  settled_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (table_name, row_id, pump)
);
`;

/**
 * Version 3: what operators do with what went wrong (pump-monitor dead-letters, pump-monitor replay).
 * - A dead letter has a status: `open`, `retried` or `discarded`, with who handled it, when and how. A
 *   vector's dead letter names its outbox row, and a post's its Idempotency-Key, so a retry finds both.
 * - A deferred post may carry its own Idempotency-Key (a replay's); unique, so an insert retried after a
 *   lost answer is not queued twice. Without one the post uses the reading's key, as before.
 * - `replays` audits each replay: who ran it, when, for which pump and range, with which options and what
 *   it rebuilt. An outbox row a replay inserted names its run.
 */
const V3 = `
ALTER TABLE ${S}.dead_letters
  ADD COLUMN IF NOT EXISTS status text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'retried', 'discarded')),
  ADD COLUMN IF NOT EXISTS handled_at timestamptz,
  ADD COLUMN IF NOT EXISTS handled_by text,
  ADD COLUMN IF NOT EXISTS handled_note text,
  ADD COLUMN IF NOT EXISTS outbox_id bigint,
  ADD COLUMN IF NOT EXISTS idempotency_key text;
CREATE INDEX IF NOT EXISTS dead_letters_open_idx ON ${S}.dead_letters (id) WHERE status = 'open';
ALTER TABLE ${S}.deferred_posts ADD COLUMN IF NOT EXISTS idempotency_key text;
CREATE UNIQUE INDEX IF NOT EXISTS deferred_posts_key_idx ON ${S}.deferred_posts (idempotency_key);
CREATE TABLE IF NOT EXISTS ${S}.replays (
  id bigserial PRIMARY KEY,
  run_by text NOT NULL,
  started_at timestamptz NOT NULL DEFAULT now(),
  finished_at timestamptz,
  pump text NOT NULL,
  from_ts timestamp NOT NULL,
  to_ts timestamp NOT NULL,
  options jsonb NOT NULL DEFAULT '{}',
  status text NOT NULL DEFAULT 'running' CHECK (status IN ('running', 'done', 'failed')),
  rows_read integer NOT NULL DEFAULT 0,
  vectors integer NOT NULL DEFAULT 0,
  vectors_filled integer NOT NULL DEFAULT 0,
  dropped integer NOT NULL DEFAULT 0,
  late integer NOT NULL DEFAULT 0,
  invalid integer NOT NULL DEFAULT 0,
  posts integer NOT NULL DEFAULT 0,
  unsettled integer NOT NULL DEFAULT 0,
  error text
);
ALTER TABLE ${S}.outbox ADD COLUMN IF NOT EXISTS replay_id bigint;
CREATE INDEX IF NOT EXISTS outbox_replay_idx ON ${S}.outbox (replay_id) WHERE replay_id IS NOT NULL;
`;

/**
 * Version 4: a table's progress is kept per reader. Several pumps (and logbook streams) may read one
 * table, each settling its rows on its own, possibly in different replicas; so a checkpoint row is a
 * reader's, (table_name, pump), with its own number for members. Existing rows keep their table as its
 * single reader, pump '': the first reader to start takes such a row over (see initCheckpoints).
 */
const V4 = `
ALTER TABLE ${S}.checkpoints ADD COLUMN IF NOT EXISTS pump text NOT NULL DEFAULT '';
ALTER TABLE ${S}.checkpoints DROP CONSTRAINT IF EXISTS checkpoints_pkey;
ALTER TABLE ${S}.checkpoints ADD PRIMARY KEY (table_name, pump);
`;

/**
 * Version 5: the wiring `listen` serves, recorded at its start, so that the operator commands run
 * elsewhere (diagnose, dead-letters, replay) know it without being told: where the definitions came from
 * (a profile or a folder), every definition of that source, and which of them were served. One row per
 * digest of the definitions; `served` collects the ids of every process that served them.
 */
const V5 = `
CREATE TABLE IF NOT EXISTS ${S}.wiring (
  digest text PRIMARY KEY,
  profile text,
  folder text,
  definitions jsonb NOT NULL,
  served text[] NOT NULL DEFAULT '{}',
  first_recorded_at timestamptz NOT NULL DEFAULT now(),
  recorded_at timestamptz NOT NULL DEFAULT now()
);
`;

/**
 * Version 6: the history of verdicts. Each row is one transition of a pump's health (subject
 * 'pump') or of one of its channels (subject: the channel), with the value that caused it. The latest row
 * of each subject is the state a restart resumes; rows older than 30 days are deleted, except each
 * subject's latest.
 */
const V6 = `
CREATE TABLE IF NOT EXISTS ${S}.health_transitions (
  id bigserial PRIMARY KEY,
  pump text NOT NULL,
  subject text NOT NULL,
  from_state text NOT NULL,
  to_state text NOT NULL,
  value double precision,
  at timestamptz NOT NULL,
  recorded_by text
);
CREATE INDEX IF NOT EXISTS health_transitions_subject_idx ON ${S}.health_transitions (pump, subject, at DESC, id DESC);
CREATE INDEX IF NOT EXISTS health_transitions_at_idx ON ${S}.health_transitions (at);
`;

export interface Migration {
  version: number;
  name: string;
  sql: string;
}

/** Every migration, in order. Append only: a released migration is never edited. */
export const MIGRATIONS: readonly Migration[] = [
  { version: 1, name: 'engine schema: checkpoints, outbox, deferred posts, leases, dead letters', sql: V1 },
  { version: 2, name: 'vector identity by member rows, table numbers, per-sensor post ledger', sql: V2 },
  { version: 3, name: 'dead-letter handling, keyed deferred posts, replay audit', sql: V3 },
  { version: 4, name: 'checkpoints per reader (table, pump)', sql: V4 },
  { version: 5, name: 'the wiring listen serves', sql: V5 },
  { version: 6, name: 'health transitions of pumps and channels', sql: V6 },
];

export const SCHEMA_VERSION = MIGRATIONS[MIGRATIONS.length - 1]?.version ?? 0;

/** The database holds a newer engine schema than this program knows: it must not write to it. */
export class SchemaVersionError extends Error {
  override name = 'SchemaVersionError';
}

const VERSIONS = `${S}.schema_migrations`;

/** The version recorded in the database; 0 when the version table does not exist yet. */
export async function schemaVersion(client: pg.ClientBase): Promise<number> {
  const { rows: exists } = await client.query<{ ok: boolean }>(
    `SELECT to_regclass('${VERSIONS}') IS NOT NULL AS ok`,
  );
  if (!exists[0]?.ok) return 0;
  const { rows } = await client.query<{ v: number | null }>(`SELECT max(version) AS v FROM ${VERSIONS}`);
  return Number(rows[0]?.v ?? 0);
}

function refuseNewer(found: number): void {
  if (found > SCHEMA_VERSION) {
    throw new SchemaVersionError(
      `the database's ${S} schema is at version ${found}, but this pump-monitor knows versions up to ${SCHEMA_VERSION}; ` +
        'run the newer pump-monitor that upgraded it, or restore a backup',
    );
  }
}

/**
 * Brings the engine schema up to SCHEMA_VERSION in one transaction, under an advisory lock, so replicas
 * that start together apply each migration once. Returns the versions applied (none when up to date).
 */
export async function runMigrations(client: pg.ClientBase): Promise<number[]> {
  const current = await schemaVersion(client);
  refuseNewer(current);
  if (current === SCHEMA_VERSION) return [];
  await client.query('BEGIN');
  try {
    await client.query(`SELECT pg_advisory_xact_lock(hashtext('${S}.schema'))`);
    await client.query(`CREATE SCHEMA IF NOT EXISTS ${S}`);
    await client.query(
      `CREATE TABLE IF NOT EXISTS ${VERSIONS} (
         version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`,
    );
    // Another replica may have migrated while this one waited for the lock.
    const locked = await schemaVersion(client);
    refuseNewer(locked);
    const applied: number[] = [];
    for (const m of MIGRATIONS.filter((x) => x.version > locked)) {
      await client.query(m.sql);
      await client.query(`INSERT INTO ${VERSIONS} (version, name) VALUES ($1, $2)`, [m.version, m.name]);
      applied.push(m.version);
    }
    await client.query('COMMIT');
    return applied;
  } catch (err) {
    await client.query('ROLLBACK').catch(() => {});
    throw err;
  }
}
