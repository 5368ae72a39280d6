import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { inject } from 'vitest';
import { type DatabaseConfig, loadConfig } from '../../src/config/env.js';
import { quoteIdent } from '../../src/store/db.js';

export interface TestDatabase {
  name: string;
  url: string;
  config: DatabaseConfig;
  /** Drops the database, ending any sessions still connected to it. */
  drop(): Promise<void>;
}

export function databaseConfigFromUrl(url: string): DatabaseConfig {
  const database = loadConfig({ DATABASE_URL: url }).database;
  if (!database) throw new Error('the database URL did not produce a database configuration');
  return database;
}

/** Runs one statement on the admin database of the test server. */
async function runAsAdmin(sql: string): Promise<void> {
  const client = new pg.Client({ connectionString: inject('databaseUrl') });
  client.on('error', () => {});
  await client.connect();
  try {
    await client.query(sql);
  } finally {
    await client.end();
  }
}

function uniqueName(prefix: string): string {
  const safePrefix = prefix
    .toLowerCase()
    .replace(/[^a-z0-9_]/g, '_')
    .slice(0, 40);
  return `${safePrefix}_${randomBytes(6).toString('hex')}`;
}

/** A fresh, empty database on the test server, so test files never see each other's data. */
export async function createTestDatabase(prefix = 't'): Promise<TestDatabase> {
  const name = uniqueName(prefix);
  await runAsAdmin(`CREATE DATABASE ${quoteIdent(name)}`);
  const url = new URL(inject('databaseUrl'));
  url.pathname = `/${encodeURIComponent(name)}`;
  return {
    name,
    url: url.toString(),
    config: databaseConfigFromUrl(url.toString()),
    drop: () => runAsAdmin(`DROP DATABASE IF EXISTS ${quoteIdent(name)} WITH (FORCE)`),
  };
}
