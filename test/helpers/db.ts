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

/** Runs one statement on the admin database of the test server (or of `server`, an admin URL). */
async function runAsAdmin(sql: string, server: string = inject('databaseUrl')): Promise<void> {
  const client = new pg.Client({ connectionString: server });
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

/**
 * A fresh, empty database on the test server, so test files never see each other's data; on `server` (an
 * admin URL, e.g. a file's private server) when given.
 */
export async function createTestDatabase(
  prefix = 't',
  server: string = inject('databaseUrl'),
): Promise<TestDatabase> {
  const name = uniqueName(prefix);
  await runAsAdmin(`CREATE DATABASE ${quoteIdent(name)}`, server);
  const url = new URL(server);
  url.pathname = `/${encodeURIComponent(name)}`;
  return {
    name,
    url: url.toString(),
    config: databaseConfigFromUrl(url.toString()),
    drop: async () => {
      // A replication slot of the database (SOURCE=replication) would refuse the drop: end this database's
      // replication sessions (a monitor not stopped), then drop its slots.
      const own = new pg.Client({ connectionString: url.toString() });
      own.on('error', () => {});
      await own.connect().catch(() => {});
      await own
        .query(
          `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
            WHERE datname = current_database() AND application_name LIKE 'pm-repl:%' || $1 AND backend_type = 'walsender'`,
          [''],
        )
        .catch(() => {});
      await own.end().catch(() => {});
      // The ended session lets go of its slot a moment later: a few tries, bounded.
      for (let attempt = 1; ; attempt++) {
        try {
          await runAsAdmin(
            `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = '${name}'`,
            server,
          );
          break;
        } catch (err) {
          if (attempt >= 20) throw err;
          await new Promise((r) => setTimeout(r, 100));
        }
      }
      await runAsAdmin(`DROP DATABASE IF EXISTS ${quoteIdent(name)} WITH (FORCE)`, server);
    },
  };
}
