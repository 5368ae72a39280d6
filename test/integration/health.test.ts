import { rmSync } from 'node:fs';
import type { FastifyInstance } from 'fastify';
import pg from 'pg';
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import type { Monitor } from '../../src/engine/monitor.js';
import { HealthUnit } from '../../src/health/health-unit.js';
import { buildServer } from '../../src/http/server.js';
import { createPool, quoteIdent } from '../../src/store/db.js';
import { deleteOldTransitions, insertTransitions, latestTransitions } from '../../src/store/health.js';
import { ENGINE_SCHEMA } from '../../src/store/migrations.js';
import { runSimulator } from '../../src/tools/simulator.js';
import { ManualClock } from '../../src/util/clock.js';
import { type Harness, harness, insertTimestamp } from '../helpers/engine.js';
import { wiringWithShortSilence } from '../helpers/health-wiring.js';
import { waitFor } from '../helpers/wait.js';

/**
 * Health against a real PostgreSQL: a table whose trigger is dropped while readings flow turns its
 * channel silent in /status and in /metrics within its silentAfter, stays silent across a restart, and
 * clears when the trigger is back; a pump's alarm is stored and resumed; old transitions are deleted.
 */

/** Loaded machines: wait generously, assert no timing. */
const WAIT = 60_000;
const SILENT_AFTER_S = 2;

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c().catch(() => {});
});

async function start(h: Harness): Promise<{ monitor: Monitor; app: FastifyInstance }> {
  const monitor = await h.startMonitor();
  const app = await buildServer(monitor);
  cleanups.push(() => app.close());
  return { monitor, app };
}

interface ChannelView {
  state: string;
  since: string;
  last_reading_at: string | null;
}

async function channelOf(
  app: FastifyInstance,
  pump: string,
  channel: string,
): Promise<ChannelView | undefined> {
  const r = await app.inject({ method: 'GET', url: '/status' });
  const status = r.json() as { pumps: Record<string, { health: { channels: Record<string, ChannelView> } }> };
  return status.pumps[pump]?.health.channels[channel];
}

async function silentMetric(
  app: FastifyInstance,
  pump: string,
  channel: string,
): Promise<string | undefined> {
  const text = (await app.inject({ method: 'GET', url: '/metrics' })).body;
  const line = text
    .split('\n')
    .find((l) => l.startsWith(`pump_monitor_channel_silent{pump="${pump}",channel="${channel}"}`));
  return line?.split(' ').pop();
}

/** The table's own triggers, as statements that create them again. */
async function triggersOf(admin: pg.Pool, table: string): Promise<{ name: string; def: string }[]> {
  const { rows } = await admin.query<{ name: string; def: string }>(
    `SELECT tgname AS name, pg_get_triggerdef(oid) AS def FROM pg_trigger
      WHERE tgrelid = $1::regclass AND NOT tgisinternal`,
    [quoteIdent(table)],
  );
  return rows;
}

for (const profile of ['default', 'plant-2026-03'] as const) {
  describe(`health on the ${profile} wiring`, () => {
    it('a dropped trigger turns the channel silent in /status and the metric, across a restart, and it clears when the trigger is back', async () => {
      // The built-in wiring, with the short silence on the table the trigger is dropped from.
      const { dir, table } = wiringWithShortSilence(profile, SILENT_AFTER_S);
      cleanups.push(async () => rmSync(dir, { recursive: true, force: true }));
      const h = await harness(`health_${profile.replace(/-/g, '_')}`, { PUMPS_DIR: dir, PUMPS: 'A,B' });
      cleanups.push(() => h.close());
      const readers = h.config.pumps.filter((p) => p.sensors.some((s) => s.table === table));
      const channel = readers[0]?.sensors.find((s) => s.table === table)?.channel as string;
      // On the March-2026 wiring the table is shared: both pumps read it.
      expect(readers.map((p) => p.id)).toEqual(profile === 'default' ? ['A'] : ['A', 'B']);

      let { app } = await start(h);
      const pool = createPool(h.config.database, 'health-test-simulator', 2);
      pool.on('error', () => {});
      cleanups.push(() => pool.end());
      const simulation = new AbortController();
      const simulated = runSimulator({
        pool,
        pumps: h.config.pumps,
        rate: 4,
        signal: simulation.signal,
        onError: () => {},
      });
      cleanups.push(async () => {
        simulation.abort();
        await simulated;
      });

      // Readings flow: the channel is ok on every pump that reads it, and not silent in the metric.
      for (const p of readers) {
        await waitFor(
          `${p.id} ${channel} ok`,
          async () => (await channelOf(app, p.id, channel))?.state === 'ok',
          WAIT,
        );
        expect(await silentMetric(app, p.id, channel)).toBe('0');
      }

      const triggers = await triggersOf(h.admin, table);
      expect(triggers.length).toBeGreaterThan(0);
      for (const t of triggers)
        await h.admin.query(`DROP TRIGGER ${quoteIdent(t.name)} ON ${quoteIdent(table)}`);
      const droppedAt = Date.now();

      for (const p of readers) {
        await waitFor(
          `${p.id} ${channel} silent in /status and the metric`,
          async () =>
            (await channelOf(app, p.id, channel))?.state === 'silent' &&
            (await silentMetric(app, p.id, channel)) === '1',
          WAIT,
        );
        const view = await channelOf(app, p.id, channel);
        // Silent from its last reading's time plus silentAfter, not before.
        expect(Date.parse(view?.since ?? '')).toBeGreaterThanOrEqual(
          Date.parse(view?.last_reading_at ?? '') + SILENT_AFTER_S * 1000,
        );
        expect(Date.parse(view?.since ?? '')).toBeGreaterThan(droppedAt);
      }
      // Rows keep arriving in the table, and the other channels keep speaking.
      const other = readers[0]?.sensors.find((s) => s.table !== table)?.channel as string;
      expect((await channelOf(app, readers[0]?.id as string, other))?.state).toBe('ok');
      await waitFor(
        'the transitions stored',
        async () =>
          (
            await h.admin.query(`SELECT 1 FROM ${ENGINE_SCHEMA}.health_transitions WHERE subject = $1`, [
              `channel:${channel}`,
            ])
          ).rowCount === readers.length,
        WAIT,
      );

      // A restart resumes the silent state with its time, before any reading could say otherwise.
      const before = await channelOf(app, readers[0]?.id as string, channel);
      await h.monitor.stop(2_000);
      await app.close();
      ({ app } = await start(h));
      const resumed = await channelOf(app, readers[0]?.id as string, channel);
      expect(resumed?.state).toBe('silent');
      expect(resumed?.since).toBe(before?.since);

      // The trigger comes back: the channel clears on every pump.
      for (const t of triggers) await h.admin.query(t.def);
      for (const p of readers) {
        await waitFor(
          `${p.id} ${channel} ok again`,
          async () =>
            (await channelOf(app, p.id, channel))?.state === 'ok' &&
            (await silentMetric(app, p.id, channel)) === '0',
          WAIT,
        );
      }
      // Seen in memory; stored by the unit's writer, which this waits for.
      await h.monitor.units.health.flush();
      const { rows } = await h.admin.query<{ pump: string; from_state: string; to_state: string }>(
        `SELECT pump, from_state, to_state FROM ${ENGINE_SCHEMA}.health_transitions WHERE subject = $1 ORDER BY id`,
        [`channel:${channel}`],
      );
      for (const p of readers) {
        expect(rows.filter((r) => r.pump === p.id).map((r) => `${r.from_state}>${r.to_state}`)).toEqual([
          'ok>silent',
          'silent>ok',
        ]);
      }
    }, 240_000);
  });
}

describe('pump verdict, stored and resumed', () => {
  it('high answers take pump A into alarm after its on-delay; a restart resumes the alarm and its time', async () => {
    const h = await harness('health_alarm');
    cleanups.push(() => h.close());
    h.backend.prediction = 93;
    let { app } = await start(h);
    const view = async () =>
      (
        (await app.inject({ method: 'GET', url: '/status' })).json() as {
          pumps: Record<
            string,
            { health: { state: string; since: string; value: number; transitions: unknown[] } }
          >;
        }
      ).pumps.A?.health;
    // One answer is not enough (on-delay 3 vectors).
    await insertTimestamp(h.admin, h.pumps.A, '2026-01-01T00:00:01');
    await waitFor(
      'the first answer',
      () => h.backend.answered('/sensores/predecir-bomba').length === 1,
      WAIT,
    );
    await waitFor('the answer judged', async () => (await view())?.value === 93, WAIT);
    expect((await view())?.state).not.toBe('alarm');
    for (const s of ['02', '03']) await insertTimestamp(h.admin, h.pumps.A, `2026-01-01T00:00:${s}`);
    await waitFor('alarm', async () => (await view())?.state === 'alarm', WAIT);
    const alarm = await view();
    const metrics = (await app.inject({ method: 'GET', url: '/metrics' })).body;
    expect(metrics).toContain('pump_monitor_pump_health{pump="A",state="alarm"} 1');
    expect(metrics).toContain('pump_monitor_pump_health{pump="A",state="normal"} 0');
    expect(metrics).toContain('pump_monitor_failure_probability{pump="A"} 93');
    await h.monitor.stop(2_000);
    await app.close();
    const { rows } = await h.admin.query<{ from_state: string; to_state: string; value: number }>(
      `SELECT from_state, to_state, value FROM ${ENGINE_SCHEMA}.health_transitions WHERE pump = 'A' AND subject = 'pump' ORDER BY id`,
    );
    expect(rows.at(-1)).toEqual({ from_state: 'unknown', to_state: 'alarm', value: 93 });

    ({ app } = await start(h));
    const resumed = await view();
    expect(resumed?.state).toBe('alarm');
    expect(resumed?.since).toBe(alarm?.since);
    expect(resumed?.transitions[0]).toMatchObject({
      subject: 'pump',
      from: 'unknown',
      to: 'alarm',
      value: 93,
    });
  }, 120_000);

  it('a standby that takes a pump over goes on from the verdict its owner stored, not from the one it started with', async () => {
    const h = await harness('health_takeover');
    cleanups.push(() => h.close());
    const env = { LEASE_INTERVAL_MS: '300' };
    const first = await h.startMonitor(env);
    await waitFor('the first replica owns both pumps', () => first.status().owned_pumps.length === 2, WAIT);
    const second = await h.startMonitor(env);
    const replicas = [first, second];
    const health = (m: Monitor) =>
      (m.status().pumps.A as { health: { state: string; since: string; judged: boolean } }).health;
    // The replicas may share the pumps out between them: whichever serves A judges it.
    const ownerOfA = () => replicas.find((m) => m.status().owned_pumps.includes('A'));
    h.backend.prediction = 91;
    for (const s of ['01', '02', '03']) await insertTimestamp(h.admin, h.pumps.A, `2026-02-01T00:00:${s}`);
    // (A handover between them leaves A with neither for a moment: wait for an owner in alarm.)
    let owner: Monitor | undefined;
    await waitFor(
      'alarm on the replica serving A',
      () => {
        owner = ownerOfA();
        return owner !== undefined && health(owner).state === 'alarm';
      },
      WAIT,
    );
    const served = owner as Monitor;
    const standby = served === first ? second : first;
    const since = health(served).since;
    await served.stop(2_000);
    await waitFor('the other replica serves pump A', () => standby.status().owned_pumps.includes('A'), WAIT);
    await waitFor('the alarm and its time taken over', () => health(standby).state === 'alarm', WAIT);
    expect(health(standby).since).toBe(since);
    expect(health(standby).judged).toBe(true);
  }, 120_000);

  it('no channel is judged silent while the LISTEN connection is down; silence counts afresh once it is back', async () => {
    const h = await harness('health_listening');
    cleanups.push(() => h.close());
    const pool = new pg.Pool({ connectionString: h.db.url, max: 2 });
    cleanups.push(() => pool.end());
    const clock = new ManualClock(1_000_000);
    let listening = true;
    const stop = new AbortController();
    cleanups.push(async () => stop.abort());
    const unit = new HealthUnit({
      pumps: [h.pumps.A],
      clock,
      owns: () => true,
      listening: () => listening,
      pool,
      logger: pino({ level: 'silent' }),
      replica: 'test',
      signal: stop.signal,
    });
    const channel = h.pumps.A.sensors[0]?.channel as string;
    const state = () =>
      ((unit.view('A')?.channels ?? {}) as Record<string, { state: string }>)[channel]?.state;
    // The first tick serves the pump: it reads back its stored states first.
    unit.tick();
    await waitFor('the stored states read back', () => unit.view('A')?.judged === true, WAIT);
    for (let i = 0; i < 5; i++) {
      clock.advance(1_000);
      unit.reading('A', channel, i, clock.now(), true);
    }
    expect(state()).toBe('ok');
    listening = false;
    clock.advance(60_000);
    unit.tick();
    expect(state()).toBe('ok');
    listening = true;
    unit.tick();
    expect(state()).toBe('ok');
    clock.advance(5_001);
    unit.tick();
    expect(state()).toBe('silent');
    await unit.flush();
  });

  it("retention deletes transitions older than its age, keeping each subject's latest however old", async () => {
    const h = await harness('health_retention');
    cleanups.push(() => h.close());
    const client = await h.admin.connect();
    try {
      const day = 86_400_000;
      const now = Date.now();
      await insertTransitions(
        client,
        [
          { pump: 'A', subject: 'pump', from: 'unknown', to: 'normal', value: 10, at: now - 40 * day },
          { pump: 'A', subject: 'pump', from: 'normal', to: 'warning', value: 60, at: now - 35 * day },
          { pump: 'A', subject: 'pump', from: 'warning', to: 'alarm', value: 90, at: now - 1 * day },
          { pump: 'A', subject: 'channel:canal_x', from: 'ok', to: 'silent', value: 3, at: now - 50 * day },
          { pump: 'B', subject: 'pump', from: 'normal', to: 'warning', value: 55, at: now - 45 * day },
        ],
        'test',
      );
    } finally {
      client.release();
    }
    const pool = new pg.Pool({ connectionString: h.db.url, max: 2 });
    cleanups.push(() => pool.end());
    expect(await deleteOldTransitions(pool, 30 * 86_400_000, 1_000)).toBe(2);
    const left = await latestTransitions(h.admin, ['A', 'B']);
    expect(left.map((t) => `${t.pump} ${t.subject} ${t.to}`).sort()).toEqual([
      'A channel:canal_x silent',
      'A pump alarm',
      'B pump warning',
    ]);
    const { rows } = await h.admin.query<{ n: number }>(
      `SELECT count(*)::int AS n FROM ${ENGINE_SCHEMA}.health_transitions`,
    );
    expect(rows[0]?.n).toBe(3);
  });
});
