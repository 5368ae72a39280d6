import type pg from 'pg';
import { quoteIdent } from './db.js';
import { SENSOR_POSTS } from './sensor-posts.js';

/**
 * The SQL of the replication source (SOURCE=replication): the publication, the slot, and what diagnose and
 * the status page ask of them. Names are checked identifiers (config/env.ts), quoted all the same.
 */

export interface SlotInfo {
  plugin: string;
  database: string | null;
  active: boolean;
  /** WAL the slot holds back for its reader: from confirmed_flush_lsn to the server's current position. */
  lagBytes: number;
  confirmed: string | null;
}

/** The slot, or undefined when the server has none of that name. */
export async function readSlot(db: pg.Pool | pg.ClientBase, slot: string): Promise<SlotInfo | undefined> {
  const { rows } = await db.query<{
    plugin: string;
    database: string | null;
    active: boolean;
    lag: string | null;
    confirmed: string | null;
  }>(
    `SELECT plugin, database::text AS database, active, confirmed_flush_lsn::text AS confirmed,
            pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::text AS lag
       FROM pg_replication_slots WHERE slot_name = $1`,
    [slot],
  );
  const r = rows[0];
  if (!r) return undefined;
  return {
    plugin: r.plugin,
    database: r.database,
    active: r.active,
    lagBytes: r.lag === null ? 0 : Math.max(0, Number(r.lag)),
    confirmed: r.confirmed,
  };
}

/** Creates a logical slot with the plug-in; the caller has checked that none of that name exists. */
export async function createSlot(db: pg.ClientBase, slot: string, plugin: string): Promise<void> {
  await db.query('SELECT pg_create_logical_replication_slot($1, $2)', [slot, plugin]);
}

/** The tables a publication holds (schema-qualified names as `schema.table`), or undefined when it does not exist. */
export async function publicationTables(
  db: pg.Pool | pg.ClientBase,
  publication: string,
): Promise<{ all: boolean; inserts: boolean; tables: string[] } | undefined> {
  const { rows } = await db.query<{ all: boolean; inserts: boolean }>(
    'SELECT puballtables AS all, pubinsert AS inserts FROM pg_publication WHERE pubname = $1',
    [publication],
  );
  const p = rows[0];
  if (!p) return undefined;
  const { rows: t } = await db.query<{ name: string }>(
    `SELECT schemaname || '.' || tablename AS name FROM pg_publication_tables WHERE pubname = $1 ORDER BY 1`,
    [publication],
  );
  return { all: p.all, inserts: p.inserts, tables: t.map((x) => x.name) };
}

/** Makes the publication hold exactly `tables` (in the search path's first schema), inserts only. */
export async function ensurePublication(
  db: pg.ClientBase,
  publication: string,
  tables: string[],
): Promise<void> {
  const list = tables.map(quoteIdent).join(', ');
  const exists = await publicationTables(db, publication);
  if (!exists) {
    await db.query(
      `CREATE PUBLICATION ${quoteIdent(publication)} FOR TABLE ${list} WITH (publish = 'insert')`,
    );
    return;
  }
  await db.query(`ALTER PUBLICATION ${quoteIdent(publication)} SET TABLE ${list}`);
  await db.query(`ALTER PUBLICATION ${quoteIdent(publication)} SET (publish = 'insert')`);
}

/** The server's wal_level. */
export async function walLevel(db: pg.Pool | pg.ClientBase): Promise<string> {
  const { rows } = await db.query<{ v: string }>('SELECT current_setting($1) AS v', ['wal_level']);
  return rows[0]?.v ?? 'unknown';
}

/** Whether the current user may stream from a slot: a superuser or a role with REPLICATION. */
export async function canReplicate(db: pg.Pool | pg.ClientBase): Promise<boolean> {
  const { rows } = await db.query<{ ok: boolean }>(
    'SELECT (rolsuper OR rolreplication) AS ok FROM pg_roles WHERE rolname = current_user',
  );
  return rows[0]?.ok === true;
}

/** The tables' schema-qualified names as pg_publication_tables and wal2json spell them (`schema.table`). */
export async function qualifiedNames(
  db: pg.Pool | pg.ClientBase,
  tables: string[],
): Promise<Map<string, string>> {
  const { rows } = await db.query<{ t: string; q: string }>(
    `SELECT t, n.nspname || '.' || c.relname AS q
       FROM unnest($1::text[]) AS t
       JOIN pg_class c ON c.oid = to_regclass(quote_ident(t))
       JOIN pg_namespace n ON n.oid = c.relnamespace`,
    [tables],
  );
  return new Map(rows.map((r) => [r.t, r.q]));
}

/**
 * A snapshot's horizon with the WAL position it was taken at: every transaction older than `xmin` has
 * finished, and its commit record lies below `lsn` (the insert position, past every record written).
 */
export async function horizonAt(db: pg.Pool | pg.ClientBase): Promise<{ xmin: number; lsn: string }> {
  const { rows } = await db.query<{ x: string; l: string }>(
    `SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint % 4294967296 AS x,
            pg_current_wal_insert_lsn()::text AS l`,
  );
  return { xmin: Number(rows[0]?.x), lsn: rows[0]?.l as string };
}

/**
 * Of these transactions (32-bit ids, as the slot gives them), the ones a new snapshot does not see yet.
 * A commit reaches the WAL, and so the slot, a moment before other sessions see it; a row handed on in
 * that moment is not yet there for whoever reads it by its id (the backend writes its class back).
 * Each id is widened to 64 bits with the epoch of the snapshot's xmax (the one before, past a wrap).
 */
export async function notYetVisible(db: pg.Pool | pg.ClientBase, xids: number[]): Promise<number[]> {
  const { rows } = await db.query<{ x: string }>(
    `WITH s AS (SELECT pg_current_snapshot() AS snap,
                       pg_snapshot_xmax(pg_current_snapshot())::text::bigint AS xmax)
     SELECT x::text AS x FROM s, unnest($1::bigint[]) AS x
      WHERE NOT pg_visible_in_snapshot(
              ((GREATEST((s.xmax >> 32) - CASE WHEN x > s.xmax % 4294967296 THEN 1 ELSE 0 END, 0) << 32) | x)
                ::text::xid8,
              s.snap)`,
    [xids],
  );
  return rows.map((r) => Number(r.x));
}

/**
 * Ends the engine's sessions that still read the slot (`sessions`: their application_name, a LIKE
 * pattern): one this replica left half-open, which holds the slot until the server's
 * `wal_sender_timeout` (for ever at 0), or one of a replica that lost the slot's lease and has not
 * noticed. Only the lease's holder calls it. Returns how many it ended.
 */
export async function endStaleReaders(
  db: pg.Pool | pg.ClientBase,
  slot: string,
  sessions: string,
): Promise<number> {
  const { rows } = await db.query<{ n: number }>(
    `SELECT count(*) FILTER (WHERE pg_terminate_backend(a.pid))::int AS n
       FROM pg_replication_slots s JOIN pg_stat_activity a ON a.pid = s.active_pid
      WHERE s.slot_name = $1 AND a.application_name LIKE $2`,
    [slot, sessions],
  );
  return rows[0]?.n ?? 0;
}

/** The WAL insert position now: transactions committed before the call end below it. */
export async function currentWal(db: pg.Pool | pg.ClientBase): Promise<string> {
  const { rows } = await db.query<{ l: string }>('SELECT pg_current_wal_insert_lsn()::text AS l');
  return rows[0]?.l as string;
}

/** Of these rows, the ones whose post is on record for a reader (pump or logbook): `reader\0table\0id`. */
export async function postsOnRecord(
  db: pg.Pool | pg.ClientBase,
  rows: { table: string; id: number }[],
): Promise<Set<string>> {
  if (rows.length === 0) return new Set();
  const { rows: found } = await db.query<{ t: string; p: string; id: string }>(
    `SELECT table_name AS t, pump AS p, row_id::text AS id FROM ${SENSOR_POSTS}
      WHERE (table_name, row_id) IN (SELECT * FROM unnest($1::text[], $2::bigint[]))`,
    [rows.map((r) => r.table), rows.map((r) => r.id)],
  );
  return new Set(found.map((r) => `${r.p}\0${r.t}\0${r.id}`));
}
