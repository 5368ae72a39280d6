import { readFileSync } from 'node:fs';
import type { ConnectionOptions } from 'node:tls';
import { z } from 'zod';
import { type Env, fail, port, read } from './read.js';

/**
 * The database to watch: DATABASE_URL, or DB_HOST with DB_PORT, DB_NAME, DB_USER and DB_PASSWORD, and the
 * TLS settings (DB_SSLMODE, DB_SSLROOTCERT) either way.
 */

export interface DatabaseConfig {
  host: string;
  port: number;
  database: string;
  user: string;
  password: string | undefined;
  ssl: false | ConnectionOptions;
  sslMode: SslMode;
}

export type SslMode = 'disable' | 'require' | 'verify-ca' | 'verify-full';

const sslModes = z.enum(['disable', 'require', 'verify-ca', 'verify-full']);

function sslOptions(env: Env, mode: SslMode): false | ConnectionOptions {
  if (mode === 'disable') return false;
  const rootCert = read(env, 'DB_SSLROOTCERT');
  let ca: string | undefined;
  if (rootCert !== undefined) {
    if (rootCert.includes('-----BEGIN')) ca = rootCert.replace(/\\n/g, '\n');
    else {
      // A directory or a file this user may not read (a secret mounted for root) is a config error too.
      try {
        ca = readFileSync(rootCert, 'utf8');
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        fail('DB_SSLROOTCERT', rootCert, `a readable CA certificate file, or the PEM text itself (${code})`);
      }
    }
  }
  if (mode === 'require') return { rejectUnauthorized: false };
  if (ca === undefined) fail('DB_SSLROOTCERT', undefined, `a CA certificate when DB_SSLMODE=${mode}`);
  // verify-ca checks the chain but not the host name; verify-full checks both.
  return mode === 'verify-ca'
    ? { ca, rejectUnauthorized: true, checkServerIdentity: () => undefined }
    : { ca };
}

export function databaseConfig(env: Env): DatabaseConfig | undefined {
  const url = read(env, 'DATABASE_URL');
  const modeRaw = read(env, 'DB_SSLMODE');
  let mode: SslMode = 'disable';
  if (modeRaw !== undefined) {
    const parsed = sslModes.safeParse(modeRaw);
    if (!parsed.success) fail('DB_SSLMODE', modeRaw, 'disable, require, verify-ca or verify-full');
    mode = parsed.data;
  }
  if (url !== undefined) {
    let u: URL;
    try {
      u = new URL(url);
    } catch {
      return fail('DATABASE_URL', url, 'postgres://user:password@host:port/database');
    }
    if (u.protocol !== 'postgres:' && u.protocol !== 'postgresql:') {
      fail('DATABASE_URL', url, 'a postgres:// or postgresql:// URL');
    }
    const urlMode = u.searchParams.get('sslmode');
    if (modeRaw === undefined && urlMode !== null) {
      const parsed = sslModes.safeParse(urlMode === 'prefer' || urlMode === 'allow' ? 'require' : urlMode);
      if (!parsed.success) fail('DATABASE_URL', url, 'sslmode=disable, require, verify-ca or verify-full');
      mode = parsed.data;
    }
    // The URL parser refuses ports above 65535; 0 is left to refuse here.
    const urlPort = u.port ? Number(u.port) : 5432;
    if (urlPort < 1)
      fail('DATABASE_URL', url, 'a port 1..65535 in postgres://user:password@host:port/database');
    return {
      host: decodeURIComponent(u.hostname) || 'localhost',
      port: urlPort,
      database:
        decodeURIComponent(u.pathname.replace(/^\//, '')) || decodeURIComponent(u.username) || 'postgres',
      user: decodeURIComponent(u.username) || 'postgres',
      password: u.password ? decodeURIComponent(u.password) : read(env, 'DB_PASSWORD'),
      ssl: sslOptions(env, mode),
      sslMode: mode,
    };
  }
  const host = read(env, 'DB_HOST');
  if (host === undefined) return undefined;
  return {
    host,
    port: port(env, 'DB_PORT', 5432),
    database: read(env, 'DB_NAME') ?? fail('DB_NAME', undefined, 'the database name when DB_HOST is set'),
    user: read(env, 'DB_USER') ?? fail('DB_USER', undefined, 'the database user when DB_HOST is set'),
    password: env.DB_PASSWORD,
    ssl: sslOptions(env, mode),
    sslMode: mode,
  };
}

/** A database target for messages: host, port, database and user, never the password. */
export function describeDatabase(db: DatabaseConfig): string {
  return `${db.user}@${db.host}:${db.port}/${db.database}${db.sslMode === 'disable' ? '' : ` (ssl ${db.sslMode})`}`;
}
