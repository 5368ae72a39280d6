import { chmod, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { startEmbeddedPostgres } from '../../src/tools/postgres/embedded.js';

/**
 * A PostgreSQL server of one test file's own, for tests whose outcome depends on cluster-wide state:
 * the oldest running transaction (the horizon every checkpoint is held below) and the sessions of the
 * whole server. On the shared server another file's open transaction or session would decide them.
 * Start it in beforeAll, stop it in afterAll.
 */
export interface PrivateServer {
  /** An admin (superuser) URL of this server's `postgres` database, on 127.0.0.1. */
  readonly url: string;
  stop(): Promise<void>;
}

export async function startPrivateServer(): Promise<PrivateServer> {
  const root = await mkdtemp(path.join(tmpdir(), 'pump-monitor-test-own-pg-'));
  // As root the server runs as the `postgres` user, which must be able to enter this directory.
  await chmod(root, 0o755);
  try {
    const server = await startEmbeddedPostgres({
      dataDir: path.join(root, 'data'),
      // Autovacuum's own transactions would be the only ones besides the test's: none, so the horizon the
      // tests read is theirs or the engine's.
      postgresFlags: ['-c', 'autovacuum=off', '-c', 'wal_level=logical'],
    });
    let stopped = false;
    return {
      url: server.url,
      async stop() {
        if (stopped) return;
        stopped = true;
        try {
          await server.stop();
        } finally {
          await rm(root, { recursive: true, force: true });
        }
      },
    };
  } catch (err) {
    await rm(root, { recursive: true, force: true });
    throw err;
  }
}
