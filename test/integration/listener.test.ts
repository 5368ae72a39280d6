import { randomBytes } from 'node:crypto';
import pg from 'pg';
import pino from 'pino';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { DatabaseConfig } from '../../src/config/env.js';
import { Listener, type ListenerOptions } from '../../src/source/listener.js';
import { sleep } from '../../src/util/clock.js';
import { createTestDatabase, type TestDatabase } from '../helpers/db.js';
import { TcpProxy } from '../helpers/tcp-proxy.js';
import { waitFor } from '../helpers/wait.js';

/**
 * The Listener on its own, against the suite's PostgreSQL: its session is killed at the server, its network
 * is cut or goes silent, and each time it must say so, count it, wait as the original's schedule says,
 * listen again, or give up with `fatal` when its limits are spent.
 */

const CHANNELS = ['lsn_a', 'Lsn Mixed']; // the second needs quoting
const quiet = pino({ level: 'silent' });

let db: TestDatabase;
let admin: pg.Client;
beforeAll(async () => {
  db = await createTestDatabase('listener');
  admin = new pg.Client({ connectionString: db.url });
  await admin.connect();
});
afterAll(async () => {
  await admin?.end();
  await db?.drop();
});

const open: Listener[] = [];
const proxies: TcpProxy[] = [];
afterEach(async () => {
  for (const l of open.splice(0)) await l.close();
  for (const p of proxies.splice(0)) await p.stop();
});

async function proxy(): Promise<TcpProxy> {
  const p = await new TcpProxy(db.config.port, db.config.host).start();
  proxies.push(p);
  return p;
}

function via(p: TcpProxy): DatabaseConfig {
  return { ...db.config, host: '127.0.0.1', port: p.port };
}

/** A listener with events recorded; `delays` holds every backoff wait it asked for. */
function listener(o: Partial<ListenerOptions> & { waitMs?: number } = {}) {
  const sessionName = `pm-test-${randomBytes(4).toString('hex')}`;
  const delays: number[] = [];
  const got: { channel: string; payload: string }[] = [];
  const listening: boolean[] = [];
  const disconnects: string[] = [];
  /** heartbeatsSent at each disconnect. */
  const sentAtDisconnect: number[] = [];
  const fatals: Error[] = [];
  const beats: number[] = [];
  const l = new Listener({
    db: db.config,
    channels: CHANNELS,
    reconnect: { maxInitialAttempts: 5, maxReconnects: 50, baseDelayMs: 40, maxDelayMs: 60 },
    heartbeat: { intervalMs: 60_000, timeoutMs: 5_000 },
    logger: quiet,
    sessionName,
    // The waits are recorded, and kept short (or long, with waitMs) but abortable, as the real one is.
    sleep: (ms, signal) => {
      delays.push(ms);
      return sleep(o.waitMs ?? 5, signal);
    },
    ...o,
  });
  l.on('notification', (channel, payload) => got.push({ channel, payload }));
  l.on('listening', ({ reconnect }) => listening.push(reconnect));
  l.on('disconnected', (reason) => {
    disconnects.push(reason);
    sentAtDisconnect.push(l.counters().heartbeatsSent);
  });
  l.on('fatal', (err) => fatals.push(err));
  l.on('heartbeat', (ms) => beats.push(ms));
  open.push(l);
  return { l, sessionName, delays, got, listening, disconnects, sentAtDisconnect, fatals, beats };
}

async function notify(channel: string, payload: string): Promise<void> {
  await admin.query('SELECT pg_notify($1, $2)', [channel, payload]);
}

/** The listener's backend pid(s) at the server, by its session name. */
async function backends(sessionName: string): Promise<number[]> {
  const { rows } = await admin.query<{ pid: number }>(
    'SELECT pid FROM pg_stat_activity WHERE application_name = $1',
    [sessionName],
  );
  return rows.map((r) => r.pid);
}

describe('Listener', () => {
  it('listens on every channel, a quoted one included, and reports it in its counters', async () => {
    const t = listener();
    expect(t.l.state).toBe('idle');
    await t.l.start();
    expect(t.l.state).toBe('listening');
    expect(t.l.listening).toBe(true);
    expect(t.l.channelCount).toBe(2);
    expect(t.l.counters().connectedSince).toBeTypeOf('number');
    expect([
      t.l.counters().reconnects,
      t.l.counters().intentosConexion,
      t.l.counters().reconexionesConsecutivas,
    ]).toEqual([0, 0, 0]);
    expect(t.listening).toEqual([false]);
    await notify('lsn_a', '{"id_sensor":1}');
    await notify('Lsn Mixed', 'two');
    await notify('lsn_other', 'not ours');
    await waitFor('both notifications', () => t.got.length >= 2);
    // The server delivers a session's notifications in commit order: a third would have come by now.
    await notify('lsn_a', 'fence');
    await waitFor('the fence', () => t.got.some((g) => g.payload === 'fence'));
    expect(t.got).toEqual([
      { channel: 'lsn_a', payload: '{"id_sensor":1}' },
      { channel: 'Lsn Mixed', payload: 'two' },
      { channel: 'lsn_a', payload: 'fence' },
    ]);
    expect(await backends(t.sessionName)).toHaveLength(1);
    expect(await t.l.horizon()).toBeTypeOf('number');
    await t.l.close();
    expect(t.l.state).toBe('closed');
    expect(await t.l.horizon()).toBeUndefined();
    expect(await backends(t.sessionName)).toEqual([]);
  });

  it('its counters are read-only from outside', async () => {
    const t = listener();
    await t.l.start();
    // A copy: writing to it changes nothing in the listener.
    (t.l.counters() as { reconnects: number }).reconnects = 7;
    expect(t.l.counters().reconnects).toBe(0);
  });

  it('ends a stale session of its own name that still LISTENs', async () => {
    const t = listener();
    const stale = new pg.Client({ connectionString: db.url, application_name: t.sessionName });
    let ended = false;
    stale.on('error', () => {
      ended = true;
    });
    stale.on('end', () => {
      ended = true;
    });
    await stale.connect();
    await stale.query('LISTEN lsn_a');
    await t.l.start();
    await waitFor('the stale session ended', () => ended);
    // The ended backend leaves pg_stat_activity a moment after its socket closes.
    await waitFor(
      'only the listener under its name',
      async () => (await backends(t.sessionName)).length === 1,
    );
    expect(t.l.listening).toBe(true);
  });

  it('a backend terminated at the server: disconnected, counted, listening again, nothing lost after', async () => {
    const t = listener();
    await t.l.start();
    const [pid] = await backends(t.sessionName);
    const ended = await admin.query(
      `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
        WHERE datname = current_database() AND application_name = $1`,
      [t.sessionName],
    );
    expect(ended.rowCount).toBe(1);
    await waitFor('listening again', () => t.listening.length === 2 && t.l.listening);
    expect(t.listening).toEqual([false, true]);
    expect(t.disconnects).toHaveLength(1);
    expect(t.disconnects[0]).toMatch(/terminat|ended|connection/i);
    expect(t.l.counters().reconnects).toBe(1);
    expect([t.l.counters().intentosConexion, t.l.counters().reconexionesConsecutivas]).toEqual([0, 0]);
    const [again] = await backends(t.sessionName);
    expect(again).not.toBe(pid);
    await notify('Lsn Mixed', 'after');
    await waitFor('the notification after the reconnect', () => t.got.some((g) => g.payload === 'after'));
    expect(t.fatals).toEqual([]);
  });

  it('at start-up, backs off on the schedule and gives up with MAX_INTENTOS_INICIAL', async () => {
    const p = await proxy();
    await p.refuse();
    const t = listener({
      db: via(p),
      reconnect: { maxInitialAttempts: 4, maxReconnects: 50, baseDelayMs: 100, maxDelayMs: 250 },
    });
    const err = await t.l.start().then(
      () => undefined,
      (e: Error) => e,
    );
    expect(err?.message).toMatch(/after 4 consecutive failures \(MAX_INTENTOS_INICIAL=4\)/);
    expect(t.fatals).toEqual([err]);
    expect(t.l.state).toBe('failed');
    expect(t.l.counters().intentosConexion).toBe(4);
    expect(t.l.counters().reconexionesConsecutivas).toBe(0);
    expect(t.l.counters().lastError).toMatch(/ECONNREFUSED|connect/i);
    // Doubling from the base, capped: a wait after each failure but the last.
    expect(t.delays).toEqual([100, 200, 250]);
    await t.l.close();
    expect(t.l.state).toBe('failed');
  });

  it('after a good connection, counts consecutive failures and recovers when the server is back', async () => {
    const p = await proxy();
    const t = listener({ db: via(p) });
    await t.l.start();
    await p.refuse();
    await waitFor('two failed reconnections', () => t.l.counters().reconexionesConsecutivas >= 2);
    expect(t.l.listening).toBe(false);
    expect(t.disconnects).toHaveLength(1);
    await p.restore();
    await waitFor('listening again', () => t.l.listening);
    expect(t.listening).toEqual([false, true]);
    expect([t.l.counters().intentosConexion, t.l.counters().reconexionesConsecutivas]).toEqual([0, 0]);
    expect(t.l.counters().reconnects).toBe(1);
    expect(t.fatals).toEqual([]);
    await notify('lsn_a', 'back');
    await waitFor('a notification after recovery', () => t.got.some((g) => g.payload === 'back'));
  });

  it('after a good connection, gives up with MAX_RECONEXIONES', async () => {
    const p = await proxy();
    const t = listener({
      db: via(p),
      reconnect: { maxInitialAttempts: 1, maxReconnects: 3, baseDelayMs: 30, maxDelayMs: 1_000 },
    });
    await t.l.start();
    await p.refuse();
    await waitFor('fatal', () => t.fatals.length > 0);
    expect(t.fatals[0]?.message).toMatch(/after 3 consecutive failures \(MAX_RECONEXIONES=3\)/);
    expect(t.l.state).toBe('failed');
    expect(t.l.counters().reconexionesConsecutivas).toBe(3);
    expect(t.delays).toEqual([30, 60]);
  });

  it('a silent network: the heartbeat times out, tears the session down, and the listener reconnects', async () => {
    const p = await proxy();
    const t = listener({ db: via(p), heartbeat: { intervalMs: 150, timeoutMs: 2_000 } });
    await t.l.start();
    await waitFor('two heartbeats answered', () => t.beats.length >= 2);
    expect(t.l.counters().heartbeatsSent).toBeGreaterThanOrEqual(2);
    expect(t.l.counters().lastHeartbeatAt).toBeTypeOf('number');
    expect(t.l.counters().lastHeartbeatMs).toBeGreaterThanOrEqual(0);
    const sent = t.l.counters().heartbeatsSent;
    p.blackhole();
    await waitFor('the heartbeat to notice', () => t.disconnects.length >= 1, 30_000);
    expect(t.disconnects[0]).toMatch(/heartbeat got no answer within 2000 ms/);
    // One unanswered heartbeat at a time: the 150 ms ticks during its 2 s wait send nothing more.
    expect(t.sentAtDisconnect[0]).toBeGreaterThanOrEqual(sent);
    expect(t.sentAtDisconnect[0]).toBeLessThanOrEqual(sent + 1);
    await waitFor('listening again', () => t.l.listening && t.listening.length === 2, 30_000);
    expect(t.l.counters().reconnects).toBe(1);
    await notify('lsn_a', 'heard');
    await waitFor('a notification on the new session', () => t.got.some((g) => g.payload === 'heard'));
  });

  it('a session logged in whose LISTEN is never answered: torn down at its opening bound, then listening', async () => {
    const p = await proxy();
    p.holdAfterReady();
    // Long enough for a real opening on a loaded machine, which the second attempt must be.
    const t = listener({ db: via(p), openTimeoutMs: 3_000 });
    // Without a bound the opening waits for ever (until TCP gives up, behind a real network).
    const started = await Promise.race([t.l.start().then(() => true), sleep(15_000).then(() => false)]);
    expect(started).toBe(true);
    expect(t.l.counters().lastError).toMatch(/the LISTEN session did not open within 3000 ms/);
    // One failed attempt, one wait on the schedule, then the next session listens.
    expect(t.delays).toEqual([40]);
    expect(t.listening).toEqual([false]);
    // The first session's backend goes once the server sees its socket closed.
    await waitFor('one session at the server', async () => (await backends(t.sessionName)).length === 1);
    await notify('lsn_a', 'opened');
    await waitFor('a notification on the second session', () => t.got.some((g) => g.payload === 'opened'));
  });

  it('close() while its session opens returns at once and leaves no session at the server', async () => {
    const p = await proxy();
    p.holdAfterReady();
    // The opening bound at its default (10 s to connect, plus the heartbeat's 5 s): close() must not wait for it.
    const t = listener({ db: via(p) });
    const start = t.l.start().catch((e: Error) => e);
    await waitFor(
      'logged in, its first query unanswered',
      async () => (await backends(t.sessionName)).length === 1,
    );
    const closed = await Promise.race([t.l.close().then(() => true), sleep(8_000).then(() => false)]);
    expect(closed).toBe(true);
    expect(t.l.state).toBe('closed');
    await waitFor('no session left at the server', async () => (await backends(t.sessionName)).length === 0);
    expect(t.fatals).toEqual([]);
    expect(t.listening).toEqual([]);
    // start() never settles once closed before listening: it neither resolved nor failed.
    expect(await Promise.race([start.then(() => 'settled'), sleep(100).then(() => 'pending')])).toBe(
      'pending',
    );
  });

  it('close() during a backoff ends the wait at once', async () => {
    const p = await proxy();
    const t = listener({
      db: via(p),
      waitMs: 600_000,
      reconnect: { maxInitialAttempts: 1, maxReconnects: 50, baseDelayMs: 600_000, maxDelayMs: 600_000 },
    });
    await t.l.start();
    await p.refuse();
    await waitFor('backing off', () => t.l.state === 'backoff');
    // Against a ten-minute wait: close() must abort it, not sit it out.
    const closed = await Promise.race([t.l.close().then(() => true), sleep(20_000).then(() => false)]);
    expect(closed).toBe(true);
    expect(t.l.state).toBe('closed');
    expect(t.fatals).toEqual([]);
  });
});
