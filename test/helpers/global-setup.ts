import { rmSync } from 'node:fs';
import { chmod, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { TestProject } from 'vitest/node';
import { startEmbeddedPostgres } from '../../src/tools/postgres/embedded.js';
import { removeWhenGone } from '../../src/tools/postgres/processes.js';

declare module 'vitest' {
  export interface ProvidedContext {
    /** An admin (superuser) URL of the server the tests may create databases on. */
    databaseUrl: string;
  }
}

/** Uses TEST_DATABASE_URL when set; otherwise runs a throwaway embedded PostgreSQL for the whole run. */
export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const external = process.env.TEST_DATABASE_URL?.trim();
  if (external) {
    project.provide('databaseUrl', external);
    return async () => {};
  }
  const root = await mkdtemp(path.join(tmpdir(), 'pump-monitor-test-pg-'));
  // As root the server runs as the `postgres` user, which must be able to enter this directory.
  await chmod(root, 0o755);
  try {
    const server = await startEmbeddedPostgres({
      dataDir: path.join(root, 'data'),
      // SOURCE=replication reads a logical slot per test database.
      postgresFlags: [
        '-c',
        'wal_level=logical',
        '-c',
        'max_replication_slots=100',
        '-c',
        'max_wal_senders=100',
      ],
    });
    project.provide('databaseUrl', server.url);
    // Ctrl-C: vitest exits at once (process.exit) and the teardown below never runs. The cluster, with its
    // password file, must not stay behind in the temporary directory: on exit the server is told to stop
    // (SIGINT, fast shutdown) and a detached shell removes the directory once it has.
    const onExit = () => {
      const pid = server.pid;
      if (pid) {
        try {
          process.kill(pid, 'SIGINT');
        } catch {
          // Already gone.
        }
        removeWhenGone(root, pid);
      } else {
        rmSync(root, { recursive: true, force: true });
      }
    };
    // vitest handles SIGINT and SIGTERM by exiting; a hang-up would kill it without an 'exit' event.
    const onHangUp = () => process.exit(129);
    process.once('exit', onExit);
    process.once('SIGHUP', onHangUp);
    return async () => {
      process.off('exit', onExit);
      process.off('SIGHUP', onHangUp);
      try {
        await server.stop();
      } finally {
        await rm(root, { recursive: true, force: true });
      }
    };
  } catch (err) {
    await rm(root, { recursive: true, force: true });
    throw err;
  }
}
