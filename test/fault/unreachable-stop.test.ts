import { Writable } from 'node:stream';
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { AFTER_DEADLINE_MS } from '../../src/engine/monitor.js';
import { quoteIdent } from '../../src/store/db.js';
import { crashReplayBound } from '../helpers/bounds.js';
import { type Cleanup, runCleanups } from '../helpers/cleanup.js';
import { harness } from '../helpers/engine.js';
import { expectWithinBound } from '../helpers/ledger.js';
import { TcpProxy } from '../helpers/tcp-proxy.js';
import { waitFor } from '../helpers/wait.js';

/**
 * The database's host vanishes (every packet dropped: open sessions go silent, new ones hang) while the
 * engine has work in hand, and then it is told to stop. Each statement of the stop would wait for its own
 * timeout, and the drain's wait for the deadline used to listen for an abort that had already fired (the
 * sources took longer to close than the deadline): the stop never returned, and `listen` exited 1 at its
 * outer bound. The stop now ends by the deadline plus AFTER_DEADLINE_MS, names what it let go, and the
 * next start, with the database back, loses nothing and resends no more than after a crash.
 */

const cleanups: Cleanup[] = [];
afterEach(() => runCleanups(cleanups));

const DEADLINE_MS = 1_000;
/** Far above the stop's own bound, and finite: the old code's stop never returned. */
const WAIT_MS = DEADLINE_MS + AFTER_DEADLINE_MS + 20_000;

describe.each([
  ['the default wiring', { PUMPS: 'A,B' }],
  ['plant-2026-03', { PUMPS_PROFILE: 'plant-2026-03', PUMPS: 'A,B' }],
])('a stop with the database gone, on %s', (_name, env) => {
  it('returns by the deadline plus AFTER_DEADLINE_MS, says what it let go, and the next start loses nothing', async () => {
    const h = await harness('unreachable_stop', env);
    cleanups.push(() => h.close());
    const proxy = await new TcpProxy(h.db.config.port).start();
    cleanups.push(() => proxy.stop());
    const via = new URL(h.db.url);
    via.port = String(proxy.port);
    const lines: Record<string, unknown>[] = [];
    const sink = new Writable({
      write(chunk, _enc, done) {
        lines.push(JSON.parse(String(chunk)));
        done();
      },
    });
    const m = await h.startMonitor(
      { DATABASE_URL: via.toString(), SHUTDOWN_TIMEOUT_MS: String(DEADLINE_MS) },
      { logger: pino({ level: 'warn' }, sink) },
    );
    // Every table once a timestamp: on plant-2026-03 both pumps read the shared ones.
    const tables = [...new Set([...h.pumps.A.sensors, ...h.pumps.B.sensors].map((s) => s.table))];
    for (let i = 0; i < 30; i++) {
      const tiempo = `2026-12-07 10:${String(i).padStart(2, '0')}:00`;
      const values = tables.map(
        (t, j) =>
          `INSERT INTO ${quoteIdent(t)} (tiempo_sensor, valor_sensor) VALUES ('${tiempo}', ${100 + j})`,
      );
      await h.admin.query(`BEGIN; ${values.join('; ')}; COMMIT`);
    }
    // Work in hand: some answers in, the rest read, posting or waiting for their records.
    await waitFor('the first answers', () => h.backend.requests.some((r) => r.status === 200), 20_000);
    proxy.vanish();
    const outcome = await Promise.race([
      m.stop().then(() => 'stopped'),
      new Promise<string>((r) => setTimeout(() => r(`still stopping at: ${m.stopStage}`), WAIT_MS)),
    ]);
    expect(outcome).toBe('stopped');
    const letGo = lines.find((l) => Array.isArray(l.let_go));
    expect(letGo?.msg, JSON.stringify(lines.map((l) => l.msg))).toMatch(
      /^the stop let go of what did not finish in time \(.+\)/,
    );
    expect((letGo?.let_go as string[] | undefined)?.length).toBeGreaterThan(0);

    // The server sees the dead sessions go (their locks with them), and the database is back: a new
    // start delivers everything, resending at most what a crash would.
    await proxy.refuse();
    const m2 = await h.startMonitor({ SHUTDOWN_TIMEOUT_MS: String(DEADLINE_MS) });
    const c = await h.ledger().settle({ admin: h.admin, monitors: [m2] });
    expectWithinBound(c, crashReplayBound({ sensorPostConcurrency: 16, pumps: 2, vectorWindow: 8 }));
  }, 120_000);
});
