import pg from 'pg';
import { type DatabaseConfig, describeDatabase } from '../config/env.js';

/** How long opening a session may take (TCP, TLS, authentication). */
export const CONNECT_TIMEOUT_MS = 10_000;

/**
 * The server's own keepalive on the engine's sessions (the startup packet's `options`): an idle session
 * whose process died with its host, or behind a network that is gone, is ended by the server within about
 * 25 s (10 s idle, then three probes 5 s apart), and with it its advisory locks (the pump leases, which a
 * standby then takes). The server's default leaves it to the operating system's, two hours on Linux. A
 * session the server has sent data to that is not acknowledged (a LISTEN session sent notifications) is
 * ended by the retransmission timeout instead, about 15 minutes on Linux. Ignored on a Unix socket. The
 * operator commands leave it out: a PgBouncer refuses the parameter, and `diagnose` must get through to
 * name it.
 */
export const SERVER_KEEPALIVE =
  '-c tcp_keepalives_idle=10 -c tcp_keepalives_interval=5 -c tcp_keepalives_count=3';

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
    connectionTimeoutMillis: CONNECT_TIMEOUT_MS,
  };
}

/** One of the engine's own sessions (LISTEN, leases, replication): `clientConfig` and SERVER_KEEPALIVE. */
export function engineSessionConfig(db: DatabaseConfig, applicationName: string): pg.ClientConfig {
  return { ...clientConfig(db, applicationName), options: SERVER_KEEPALIVE };
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
  /**
   * true: one of the engine's pools. Its sessions ask for the server's keepalive (SERVER_KEEPALIVE) and
   * plan without parallel workers, set as each connects (the startup packet's `options`: no statement of
   * its own). The engine's statements are many small lookups, each a `UNION ALL` of up to a few hundred
   * index scans at 200 pumps; past a cost PostgreSQL plans such a statement as a parallel append, and
   * starting and stopping its workers costs more than the scans (at 200 pumps in the fleet bench, 0.8 of
   * PostgreSQL's cores were parallel workers).
   */
  engine = false,
): pg.Pool {
  const pool = new pg.Pool({
    ...clientConfig(db, applicationName),
    ...(engine ? { options: `${SERVER_KEEPALIVE} -c max_parallel_workers_per_gather=0` } : {}),
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
/**
 * Runs `fn` inside a savepoint of an open transaction: its statements are undone when it throws, and the
 * transaction goes on.
 */
export async function inSavepoint<T>(tx: pg.ClientBase, fn: () => Promise<T>): Promise<T> {
  await tx.query('SAVEPOINT step');
  try {
    const out = await fn();
    await tx.query('RELEASE SAVEPOINT step');
    return out;
  } catch (err) {
    await tx.query('ROLLBACK TO SAVEPOINT step');
    throw err;
  }
}

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

/**
 * The server's certificate does not verify (DB_SSLMODE verify-ca or verify-full): not signed by the CA in
 * DB_SSLROOTCERT, expired, or not naming DB_HOST. Node's TLS codes, not SQLSTATEs.
 */
const CERTIFICATE_FAULTS = new Set([
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'CERT_HAS_EXPIRED',
  'CERT_NOT_YET_VALID',
  'CERT_SIGNATURE_FAILURE',
  'ERR_TLS_CERT_ALTNAME_INVALID',
]);

/**
 * Connection faults that waiting will not fix: the password or user is refused (28P01, 28000), the
 * database does not exist (3D000), or the server's certificate does not verify. A start-up ends on these at
 * once; only the others are retried.
 */
const PERMANENT_CONNECT_FAULTS = new Set(['28P01', '28000', '3D000', ...CERTIFICATE_FAULTS]);

/** Faults of reaching the database at all (socket codes, server starting or shutting down, too many clients). */
const TRANSIENT_CONNECT_FAULTS = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ENOTFOUND',
  'EAI_AGAIN',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'EPIPE',
  '57P01',
  '57P02',
  '57P03',
  '53300',
]);

export function isPermanentConnectFault(err: unknown): boolean {
  const code = (err as { code?: unknown })?.code;
  return typeof code === 'string' && PERMANENT_CONNECT_FAULTS.has(code);
}

/** Whether an error says the database could not be reached or refused the connection (not a query's fault). */
export function isConnectFault(err: unknown): boolean {
  if (err instanceof DatabaseUnavailableError) return true;
  const e = err as { code?: unknown; message?: unknown };
  if (
    typeof e?.code === 'string' &&
    (PERMANENT_CONNECT_FAULTS.has(e.code) || TRANSIENT_CONNECT_FAULTS.has(e.code))
  )
    return true;
  // pg's own words for a connection that closed or never opened in time.
  return typeof e?.message === 'string' && /^(Connection terminated|timeout expired)/.test(e.message);
}

/** The database cannot be reached or refuses the connection: one line, naming the target, never the password. */
export class DatabaseUnavailableError extends Error {
  override name = 'DatabaseUnavailableError';
  /** A refused password or user, a missing database or a certificate that does not verify: retrying will not help. */
  readonly permanent: boolean;
  constructor(db: DatabaseConfig, cause: unknown) {
    super(`cannot connect to ${describeDatabase(db)}: ${oneLine(describePgError(cause))}${hint(cause)}`);
    this.permanent = isPermanentConnectFault(cause);
  }
}

function oneLine(s: string): string {
  return s.replace(/\s*\n\s*/g, ' ').trim();
}

function hint(err: unknown): string {
  const code = (err as { code?: unknown })?.code;
  if (code === '28P01' || code === '28000') return '; check DB_USER and DB_PASSWORD (or DATABASE_URL)';
  if (code === '3D000') return '; check DB_NAME (or DATABASE_URL), or create the database';
  if (code === 'ERR_TLS_CERT_ALTNAME_INVALID')
    return "; DB_HOST must be a name the server's certificate holds (verify-full checks it)";
  if (typeof code === 'string' && CERTIFICATE_FAULTS.has(code))
    return "; check that DB_SSLROOTCERT holds the CA that signed the server's certificate";
  return '; check DB_HOST and DB_PORT (or DATABASE_URL), and that PostgreSQL accepts connections from here';
}

/**
 * Every command's first contact with its database: one connection, `SELECT 1`, closed. A database that is
 * unreachable or refuses the connection becomes a DatabaseUnavailableError, which the CLI prints as one line
 * with a non-zero exit, whatever the command.
 */
export async function ensureReachable(db: DatabaseConfig, applicationName: string): Promise<void> {
  try {
    await withClient(db, applicationName, async (c) => {
      await c.query('SELECT 1');
    });
  } catch (err) {
    throw new DatabaseUnavailableError(db, err);
  }
}
