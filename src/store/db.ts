import pg from 'pg';
import type { DatabaseConfig } from '../config/env.js';

/** The pg client options for a database target, with TCP keepalive so a dead peer is noticed. */
export function clientConfig(db: DatabaseConfig, applicationName = 'pump-monitor'): pg.ClientConfig {
  return {
    host: db.host,
    port: db.port,
    database: db.database,
    user: db.user,
    password: db.password,
    ssl: db.ssl === false ? false : db.ssl,
    application_name: applicationName,
    keepAlive: true,
    keepAliveInitialDelayMillis: 5_000,
    connectionTimeoutMillis: 10_000,
  };
}

/** A small pool for state writes (checkpoints, outbox, dead letters) and catch-up reads. */
export function createPool(
  db: DatabaseConfig,
  applicationName = 'pump-monitor',
  max = 4,
  /** A query on a silently dead connection would otherwise wait forever. */
  queryTimeoutMs = 15_000,
  /** An idle connection is closed after this long; 0 keeps it open. */
  idleTimeoutMs = 30_000,
): pg.Pool {
  const pool = new pg.Pool({
    ...clientConfig(db, applicationName),
    max,
    idleTimeoutMillis: idleTimeoutMs,
    query_timeout: queryTimeoutMs,
  });
  // An idle client that loses its server emits 'error' on the pool; the next query reconnects.
  pool.on('error', () => {});
  return pool;
}

/** Runs `fn` on one short-lived connection and closes it, whatever happens. */
export async function withClient<T>(
  db: DatabaseConfig,
  applicationName: string,
  fn: (client: pg.ClientBase) => Promise<T>,
): Promise<T> {
  const client = new pg.Client(clientConfig(db, applicationName));
  client.on('error', () => {});
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end().catch(() => {});
  }
}

/** Runs `fn` in one transaction on a client of the pool: committed if it returns, rolled back if it throws. */
export async function inTransaction<T>(pool: pg.Pool, fn: (tx: pg.ClientBase) => Promise<T>): Promise<T> {
  const tx = await pool.connect();
  try {
    await tx.query('BEGIN');
    const out = await fn(tx);
    await tx.query('COMMIT');
    return out;
  } catch (err) {
    await tx.query('ROLLBACK').catch(() => {});
    throw err;
  } finally {
    tx.release();
  }
}

/**
 * PostgreSQL array literals for `$n::text[]` and `$n::bigint[]` parameters, built in one pass. pg turns a
 * JavaScript array into the same literal with two regular expressions per element; the per-sensor post
 * ledger writes three arrays for every 50 posts.
 */
export function textArray(values: readonly string[]): string {
  let s = '{';
  for (let i = 0; i < values.length; i++) {
    const v = values[i] as string;
    const escaped = v.includes('"') || v.includes('\\') ? v.replace(/["\\]/g, '\\$&') : v;
    s += i === 0 ? `"${escaped}"` : `,"${escaped}"`;
  }
  return `${s}}`;
}

export function bigintArray(values: readonly number[]): string {
  return `{${values.join(',')}}`;
}

/** Quotes a PostgreSQL identifier (channel or table name). */
export function quoteIdent(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}

/** Turns pg's terse errors into a line that says what failed, without connection secrets. */
export function describePgError(err: unknown): string {
  const e = err as { code?: string; message?: string };
  const msg = e?.message ?? String(err);
  return e?.code ? `${msg} (SQLSTATE ${e.code})` : msg;
}
