import { createServer, type Server, type Socket } from 'node:net';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ReplicationSource } from '../../src/source/replication/source.js';
import { createPool } from '../../src/store/db.js';
import { createTestDatabase, type TestDatabase } from '../helpers/db.js';
import { waitFor } from '../helpers/wait.js';

/**
 * The replication source alone, on a real PostgreSQL for its pool, with its replication connection sent
 * to a server of the test's own that accepts connections and never answers: the session stays in its
 * opening, as it does behind a network that drops packets or a server that hangs in authentication.
 */
describe('ReplicationSource while its session opens', () => {
  let db: TestDatabase;
  let mute: Server;
  const accepted: Socket[] = [];
  beforeAll(async () => {
    db = await createTestDatabase('repl_source');
    mute = createServer((socket) => {
      socket.on('error', () => {});
      // Reads and drops what the client sends (its startup message): a closed connection is then seen.
      socket.on('end', () => socket.destroy());
      socket.resume();
      accepted.push(socket);
    });
    await new Promise<void>((resolve) => mute.listen(0, '127.0.0.1', resolve));
  });
  afterAll(async () => {
    for (const s of accepted) s.destroy();
    await new Promise((resolve) => mute.close(resolve));
    await db?.drop();
  });

  it('stops while its connection is still opening, and leaves no connection behind', async () => {
    const pool = createPool(db.config, 'test-repl-source', 2);
    const port = (mute.address() as { port: number }).port;
    const source = new ReplicationSource({
      db: { ...db.config, host: '127.0.0.1', port },
      pool,
      names: {
        plugin: 'pgoutput',
        slot: 'pump_monitor_never_read',
        publication: 'none',
        ownPublication: false,
      },
      routes: new Map(),
      sensor: () => {},
      replay: () => {},
      logbook: () => {},
      logbookOnRecord: () => {},
      passed: () => false,
      settled: () => true,
      active: () => true,
      replicaId: 'test',
      reconnect: { baseDelayMs: 50, maxDelayMs: 100 },
      heartbeat: { intervalMs: 200, timeoutMs: 200 },
      logger: pino({ level: 'silent' }),
    });
    try {
      source.start();
      await waitFor('the replication connection accepted, and unanswered', () => accepted.length >= 1);
      const open = () => accepted.filter((s) => !s.destroyed).length;
      expect(open()).toBe(1);
      // The bound only tells a hang from a stop: the stop itself takes milliseconds.
      let timer: NodeJS.Timeout | undefined;
      const outcome = await Promise.race([
        source.stop().then(() => 'stopped'),
        new Promise<string>((resolve) => {
          timer = setTimeout(() => resolve('still stopping after 30 s'), 30_000);
        }),
      ]);
      clearTimeout(timer);
      expect(outcome).toBe('stopped');
      // The connection it was opening is closed, not left to the server to notice.
      await waitFor('the opening connection closed', () => open() === 0);
      expect(source.isStreaming).toBe(false);
    } finally {
      await pool.end();
    }
  });
});
