import { Writable } from 'node:stream';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LeaseKeeper } from '../../src/engine/leases.js';
import { type Harness, harness } from '../helpers/engine.js';
import { TcpProxy } from '../helpers/tcp-proxy.js';
import { waitFor } from '../helpers/wait.js';

/**
 * The lease keeper's stop: a lease session lost while the engine stops (a fatal reconnection limit takes the
 * network, and the lease session with it) must not report pumps lost after close() has returned, since the
 * process's last line says why it exited (cli/runtime.ts).
 */

let h: Harness;
beforeAll(async () => {
  h = await harness('leases');
});
afterAll(async () => {
  await h?.close();
});

function capture(): { logger: pino.Logger; lines: () => Array<{ msg: string; pump?: string }> } {
  const out: string[] = [];
  const sink = new Writable({
    write(chunk, _enc, done) {
      out.push(...String(chunk).split('\n').filter(Boolean));
      done();
    },
  });
  return { logger: pino({ level: 'info' }, sink), lines: () => out.map((l) => JSON.parse(l)) };
}

describe('lease keeper', () => {
  it('a session lost during close: no pump is reported lost after close() returns', async () => {
    const { logger, lines } = capture();
    let releaseHook: () => void = () => {};
    const hookDone = new Promise<void>((r) => {
      releaseHook = r;
    });
    const lostCalls: string[] = [];
    const keeper = new LeaseKeeper({
      db: h.config.database,
      pumps: ['A', 'B'],
      logger,
      replicaId: 'lease-test',
      queryTimeoutMs: 2_000,
      intervalMs: 60_000,
      hooks: {
        acquired: async () => {},
        releasing: async () => {},
        // The first lost pump's work outlives close()'s wait, as a lane's halt grace can.
        lost: async (pump) => {
          lostCalls.push(pump);
          await hookDone;
        },
      },
    });
    await keeper.start();
    expect(lines().filter((l) => l.msg === 'lease acquired')).toHaveLength(2);
    await h.admin.query(
      "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND application_name LIKE 'pm-lease:%' || $1",
      [':lease-test'],
    );
    await waitFor('the first pump reported lost', () => lostCalls.length === 1);
    await keeper.close();
    const atClose = lines().length;
    releaseHook();
    // Let the drop go on as it would have: the second pump is next in its loop.
    await new Promise((r) => setTimeout(r, 200));
    expect(lines().slice(atClose)).toEqual([]);
    expect(lostCalls).toHaveLength(1);
  });

  it('a session still opening when close() gives up on its round is ended, and takes no lock', async () => {
    const proxy = await new TcpProxy(h.config.database.port, h.config.database.host).start();
    try {
      const acquired: string[] = [];
      const keeper = new LeaseKeeper({
        db: { ...h.config.database, host: '127.0.0.1', port: proxy.port },
        pumps: ['A', 'B'],
        logger: pino({ level: 'silent' }),
        replicaId: 'lease-test-opening',
        queryTimeoutMs: 30_000,
        intervalMs: 60_000,
        exclusive: 'replication-slot:lease-test',
        hooks: {
          acquired: async (pump) => void acquired.push(pump),
          releasing: async () => {},
          lost: async () => {},
        },
      });
      // The lease session logs in, and its first statement's answer is held: the round cannot finish.
      proxy.holdAfterReady();
      const started = keeper.start().catch(() => {});
      const sessions = async () =>
        (
          await h.admin.query(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND application_name LIKE 'pm-lease:%:lease-test-opening'",
          )
        ).rowCount ?? 0;
      await waitFor('the lease session logged in', async () => (await sessions()) === 1);
      // close() waits 2 s for the round, then ends what session it has: none yet.
      await keeper.close();
      proxy.releaseReplies();
      await started;
      await waitFor('no lease session left at the server', async () => (await sessions()) === 0, 10_000);
      const { rows } = await h.admin.query(
        "SELECT count(*)::int AS n FROM pg_locks WHERE locktype = 'advisory' AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
      );
      expect(rows[0]?.n).toBe(0);
      expect(acquired).toEqual([]);
    } finally {
      await proxy.stop();
    }
  });
});
