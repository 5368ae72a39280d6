import type pg from 'pg';
import { quoteIdent } from './db.js';

/**
 * What `diagnose` reads from PostgreSQL's catalog and sends through it: the server, the notification queue,
 * a table's triggers, LISTEN and NOTIFY. Reads only; a NOTIFY writes no row.
 */

export interface ServerFacts {
  version: string;
  tls: { on: boolean; version: string | null };
  user: string;
  /** pg_is_in_recovery(): a read replica, where LISTEN/NOTIFY does not work. */
  replica: boolean;
  /** pg_notification_queue_usage(): the share of the notification queue in use, 0..1. */
  queueUsage: number;
}

export async function serverFacts(client: pg.ClientBase): Promise<ServerFacts> {
  const { rows } = await client.query<{
    version: string;
    ssl: boolean | null;
    tls_version: string | null;
    u: string;
    replica: boolean;
    usage: number;
  }>(
    `SELECT current_setting('server_version') AS version,
            (SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()) AS ssl,
            (SELECT version FROM pg_stat_ssl WHERE pid = pg_backend_pid()) AS tls_version,
            current_user AS u, pg_is_in_recovery() AS replica,
            pg_notification_queue_usage()::float8 AS usage`,
  );
  const r = rows[0];
  return {
    version: r?.version ?? '?',
    tls: { on: r?.ssl === true, version: r?.tls_version ?? null },
    user: r?.u ?? '?',
    replica: r?.replica === true,
    queueUsage: Number(r?.usage ?? 0),
  };
}

/** A table by its name as the definitions spell it: its oid and its name as PostgreSQL shows it. */
export async function findTable(
  client: pg.ClientBase,
  table: string,
): Promise<{ oid: number; shown: string } | undefined> {
  const { rows } = await client.query<{ oid: number | null; shown: string | null }>(
    'SELECT to_regclass($1)::oid AS oid, to_regclass($1)::text AS shown',
    [quoteIdent(table)],
  );
  const oid = rows[0]?.oid ?? null;
  return oid === null ? undefined : { oid, shown: rows[0]?.shown ?? table };
}

/** A user trigger of a table, with its function's source and arguments (to find the channel it notifies). */
export interface TriggerRow {
  name: string;
  /** The function, as regproc text. */
  fn: string;
  /** pg_trigger.tgenabled: 'O' and 'A' fire in normal sessions, 'D' is disabled, 'R' fires on replicas only. */
  enabled: string;
  /** pg_trigger.tgtype: bit 1 FOR EACH ROW, bit 4 INSERT. */
  type: number;
  src: string | null;
  args: Buffer | string | null;
  nargs: number;
}

export async function triggersOf(client: pg.ClientBase, oid: number): Promise<TriggerRow[]> {
  const { rows } = await client.query<TriggerRow>(
    `SELECT t.tgname AS name, t.tgfoid::regproc::text AS fn, t.tgenabled AS enabled, t.tgtype::int AS type,
            p.prosrc AS src, t.tgargs AS args, t.tgnargs::int AS nargs
       FROM pg_trigger t JOIN pg_proc p ON p.oid = t.tgfoid
      WHERE t.tgrelid = $1 AND NOT t.tgisinternal
      ORDER BY t.tgname`,
    [oid],
  );
  return rows;
}

/** Whether a relation (`schema.table`) exists. */
export async function relationExists(client: pg.ClientBase, name: string): Promise<boolean> {
  const { rows } = await client.query<{ ok: boolean }>('SELECT to_regclass($1) IS NOT NULL AS ok', [name]);
  return rows[0]?.ok === true;
}

export async function listenOn(client: pg.ClientBase, channel: string): Promise<void> {
  await client.query(`LISTEN ${quoteIdent(channel)}`);
}

export async function notify(client: pg.ClientBase, channel: string, payload: string): Promise<void> {
  await client.query('SELECT pg_notify($1, $2)', [channel, payload]);
}
