/**
 * A throwaway PostgreSQL for shell scripts (scripts/image-check.sh), run with the embedded helper:
 *
 *   node --import tsx scripts/test-postgres.ts <data-dir> <url-file> [database]
 *
 * Starts the server on a free loopback port, creates the database (default pump_monitor), then writes
 * its postgres:// URL, password included, to <url-file> with mode 0600, so the caller can read it
 * without the password appearing in any log or command line. Stops the server on SIGTERM or SIGINT,
 * and also when the process that started it goes away, so no server outlives its script.
 */
import { rename, writeFile } from 'node:fs/promises';
import { setTimeout as delay } from 'node:timers/promises';
import { startEmbeddedPostgres } from '../src/tools/postgres/embedded.js';

const PARENT_POLL_MS = 1_000;

const [dataDir, urlFile, database = 'pump_monitor'] = process.argv.slice(2);
if (!dataDir || !urlFile) {
  console.error('usage: node --import tsx scripts/test-postgres.ts <data-dir> <url-file> [database]');
  process.exit(2);
}

const parent = process.ppid;
const server = await startEmbeddedPostgres({ dataDir });
let stopping: Promise<void> | undefined;

function stop(): Promise<void> {
  stopping ??= server.stop().then(
    () => {
      process.exitCode ??= 0;
    },
    (err: unknown) => {
      console.error(`test-postgres: stopping failed: ${(err as Error).message}`);
      process.exitCode = 1;
    },
  );
  return stopping;
}

process.once('SIGTERM', () => void stop());
process.once('SIGINT', () => void stop());

try {
  await server.createDatabase(database);
  const db = server.database(database);
  const url = `postgres://${encodeURIComponent(db.user)}:${encodeURIComponent(db.password ?? '')}@${db.host}:${db.port}/${encodeURIComponent(database)}`;
  // Written whole, then renamed: the caller never reads half a URL.
  await writeFile(`${urlFile}.tmp`, `${url}\n`, { mode: 0o600 });
  await rename(`${urlFile}.tmp`, urlFile);
  console.error(`test-postgres: ready on ${db.host}:${db.port}, database ${database}`);
} catch (err) {
  console.error(`test-postgres: ${(err as Error).message}`);
  process.exitCode = 1;
  await stop();
}

// Re-parented (the starting script died without its trap running): nobody will stop the server, so stop it.
while (!stopping) {
  await delay(PARENT_POLL_MS);
  if (process.ppid !== parent) await stop();
}
await stopping;
