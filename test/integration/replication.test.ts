import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config/env.js';
import type { Monitor } from '../../src/engine/monitor.js';
import { migrateSource } from '../../src/source/replication/migrate.js';
import { parseLsn } from '../../src/source/replication/positions.js';
import { replicationNames } from '../../src/source/replication/setup.js';
import { readSlot } from '../../src/store/replication.js';
import { migrate, TRIGGER_NAME } from '../../src/store/schema.js';
import { type Harness, harness, insertTimestamp, testEnv } from '../helpers/engine.js';
import { expectExactlyOnce } from '../helpers/ledger.js';
import { waitFor } from '../helpers/wait.js';

/** The triggers of ours on the harness's sensor tables. */
async function ourTriggers(h: Harness): Promise<number> {
  const tables = [...new Set([...h.pumps.A.sensors, ...h.pumps.B.sensors].map((s) => s.table))];
  const { rows } = await h.admin.query<{ n: number }>(
    `SELECT count(*)::int AS n FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
      WHERE t.tgname = $1 AND c.relname = ANY($2::text[])`,
    [TRIGGER_NAME, tables],
  );
  return rows[0]?.n ?? 0;
}

function slotOf(h: Harness): string {
  return replicationNames(h.config.source, h.db.name).slot;
}

/** The slot's confirmed position. */
async function confirmed(h: Harness): Promise<bigint> {
  const s = await readSlot(h.admin, slotOf(h));
  if (!s?.confirmed) throw new Error(`slot ${slotOf(h)} has no confirmed position`);
  return parseLsn(s.confirmed);
}

/** The end of WAL right now: past every transaction committed before the call. */
async function walNow(h: Harness): Promise<bigint> {
  const { rows } = await h.admin.query<{ l: string }>('SELECT pg_current_wal_lsn()::text AS l');
  return parseLsn(rows[0]?.l as string);
}

async function exactlyOnce(h: Harness, monitors: Monitor[] = [h.monitor]) {
  const c = await h.ledger().settle({ admin: h.admin, monitors, timeoutMs: 30_000 });
  expectExactlyOnce(c);
  return c;
}

type PumpStatus = Record<string, number>;
const pumpStatus = (m: Monitor, pump: string) =>
  (m.status().pumps as Record<string, PumpStatus>)[pump] as PumpStatus;

describe('SOURCE=replication on pgoutput', () => {
  let h: Harness;
  beforeAll(async () => {
    h = await harness('repl', { SOURCE: 'replication' }, { ownBackendB: true });
  });
  afterAll(async () => {
    await h?.close();
  });

  it('delivers every reading and vector once from the slot, with no trigger installed, and confirms the slot', async () => {
    expect(await ourTriggers(h)).toBe(0);
    await h.startMonitor();
    const before = h.monitor.units.replication?.rows ?? 0;
    await insertTimestamp(h.admin, h.pumps.A, '2025-03-01T10:00:00');
    await insertTimestamp(h.admin, h.pumps.B, '2025-03-01T10:00:00');
    const end = await walNow(h);
    const c = await exactlyOnce(h);
    expect({ readings: c.readings, vectors: c.vectors }).toEqual({ readings: 35, vectors: 2 });
    // No trigger, no catch-up since the start: the slot handed every row.
    expect((h.monitor.units.replication?.rows ?? 0) - before).toBe(35);
    await waitFor('the slot confirmed past the inserts', async () => (await confirmed(h)) >= end);
    const st = h.monitor.status().replication as Record<string, unknown>;
    expect(st).toMatchObject({ plugin: 'pgoutput', streaming: true, slot: slotOf(h), rows_pending: 0 });
    expect(h.monitor.status().source).toBe('replication');
    // The slot's lag on /metrics (and /status): bytes from the slot itself, seconds from the oldest waiting.
    await waitFor(
      'the lag read from the slot',
      () => typeof h.monitor.units.replication?.status().lag_bytes === 'number',
    );
    const metrics = await h.monitor.units.telemetry.registry.metrics();
    expect(metrics).toMatch(/^pump_monitor_replication_lag_bytes \d+$/m);
    expect(metrics).toMatch(/^pump_monitor_replication_lag_seconds [\d.e-]+$/m);
    expect(metrics).toMatch(/^pump_monitor_replication_streaming 1$/m);
  });

  it('does not confirm a transaction while a row of it is unsettled (its group still open)', async () => {
    await h.monitor.stop(1_000);
    const m = await h.startMonitor({ GROUP_EXPIRY_MS: '8000' });
    await waitFor('streaming', () => m.units.replication?.isStreaming === true);
    const received = pumpStatus(m, 'A').readings_received as number;
    const posted = pumpStatus(m, 'A').sensor_posts_ok ?? 0;
    // Two fields of pump A: below its threshold, so the group waits for expiry and its rows stay unsettled.
    const fields = h.pumps.A.sensors.slice(0, 2).map((s) => s.field);
    await insertTimestamp(h.admin, h.pumps.A, '2025-03-02T10:00:00', { fields });
    const end = await walNow(h);
    await waitFor('both readings received', () => pumpStatus(m, 'A').readings_received === received + 2);
    // Posts settle quickly; the group does not until expiry. While it is open, the slot stays behind it.
    await waitFor('the posts answered', () => (pumpStatus(m, 'A').sensor_posts_ok ?? 0) >= posted + 2);
    const open = () => (m.status().pumps as Record<string, { open_groups: number }>).A?.open_groups ?? 0;
    expect(open()).toBeGreaterThan(0);
    const during = await confirmed(h);
    expect(open()).toBeGreaterThan(0);
    expect(during).toBeLessThan(end);
    expect(m.units.replication?.status().rows_pending).toBeGreaterThan(0);
    await exactlyOnce(h, [m]);
    await waitFor('the slot confirmed once the group was dropped', async () => (await confirmed(h)) >= end);
  });

  it('resumes from the slot after a restart: rows committed while stopped come once', async () => {
    await h.monitor.stop(1_000);
    await insertTimestamp(h.admin, h.pumps.A, '2025-03-03T10:00:00');
    await insertTimestamp(h.admin, h.pumps.B, '2025-03-03T10:00:00');
    await h.startMonitor();
    await insertTimestamp(h.admin, h.pumps.B, '2025-03-03T10:00:01');
    await exactlyOnce(h);
  });

  it('one replica reads the slot; the other takes it over when the first loses its lease', async () => {
    await h.monitor.stop(1_000);
    const first = await h.startMonitor({ LEASE_INTERVAL_MS: '200' });
    const second = await h.startMonitor({ LEASE_INTERVAL_MS: '200' });
    await waitFor('the first streams', () => first.units.replication?.isStreaming === true);
    // The second holds no pump and does not read the slot.
    expect(second.status().owned_pumps).toEqual([]);
    expect(second.units.replication?.isStreaming).toBe(false);
    await insertTimestamp(h.admin, h.pumps.A, '2025-03-04T10:00:00');
    await exactlyOnce(h, [first, second]);
    // The first's lease session dies (its host cut off for a moment): whichever replica then takes the
    // slot's lease takes every pump; the other reads nothing. Rows inserted meanwhile come once.
    await h.admin.query(
      `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
        WHERE datname = current_database() AND application_name LIKE 'pm-lease:%:' || $1`,
      [first.replicaId],
    );
    await insertTimestamp(h.admin, h.pumps.B, '2025-03-04T10:00:01');
    await waitFor(
      'one replica streams again',
      () =>
        (first.units.replication?.isStreaming ? 1 : 0) + (second.units.replication?.isStreaming ? 1 : 0) ===
        1,
      30_000,
    );
    await exactlyOnce(h, [first, second]);
    for (const m of [first, second]) {
      const owned = m.status().owned_pumps as string[];
      expect(owned.length === 0 || owned.length === 2).toBe(true);
    }
    // And the replica that reads it stops (as when its process dies): the other takes over.
    const [reading, standby] = first.units.replication?.isStreaming ? [first, second] : [second, first];
    await reading.stop(1_000);
    await waitFor('the standby streams', () => standby.units.replication?.isStreaming === true, 30_000);
    await insertTimestamp(h.admin, h.pumps.A, '2025-03-04T10:00:02');
    await insertTimestamp(h.admin, h.pumps.B, '2025-03-04T10:00:02');
    await exactlyOnce(h, [standby]);
  });
});

describe('switching an installation between sources', () => {
  it('notify → replication → notify: every reading and vector once across both switches', async () => {
    const h = await harness('repl_switch', { SOURCE: 'notify' });
    try {
      expect(await ourTriggers(h)).toBeGreaterThan(0);
      await h.startMonitor();
      await insertTimestamp(h.admin, h.pumps.A, '2025-04-01T10:00:00');
      await exactlyOnce(h);
      await h.monitor.stop(1_000);
      // Committed under neither source: the id checkpoints (kept by both sources) cover it.
      await insertTimestamp(h.admin, h.pumps.A, '2025-04-01T10:00:01');
      const repl = loadConfig(testEnv(h.db, h.backend, { SOURCE: 'replication' }), { requireDatabase: true });
      const c1 = await h.admin.connect();
      try {
        await migrateSource(c1, repl);
      } finally {
        c1.release();
      }
      expect(await ourTriggers(h)).toBe(0);
      await insertTimestamp(h.admin, h.pumps.B, '2025-04-01T10:00:02');
      await h.startMonitor({ SOURCE: 'replication' });
      await insertTimestamp(h.admin, h.pumps.A, '2025-04-01T10:00:03');
      await exactlyOnce(h);
      await h.monitor.stop(1_000);
      // And back: migrate with SOURCE=notify puts the triggers back; the slot is left to the operator.
      await insertTimestamp(h.admin, h.pumps.B, '2025-04-01T10:00:04');
      const c2 = await h.admin.connect();
      try {
        await migrate(c2, h.config);
      } finally {
        c2.release();
      }
      expect(await ourTriggers(h)).toBeGreaterThan(0);
      await h.startMonitor({ SOURCE: 'notify' });
      await insertTimestamp(h.admin, h.pumps.A, '2025-04-01T10:00:05');
      await exactlyOnce(h);
    } finally {
      await h.close();
    }
  });
});

describe('set-up faults, one line each', () => {
  it('a user without REPLICATION and no slot: start fails with the fix', async () => {
    const h = await harness('repl_priv', { SOURCE: 'notify' });
    const role = `pm_norepl_${h.db.name.slice(-8)}`;
    try {
      await h.admin.query(`CREATE ROLE ${role} LOGIN PASSWORD 'pw-norepl'`);
      await h.admin.query(`GRANT ALL ON DATABASE "${h.db.name}" TO ${role}`);
      await h.admin.query(`GRANT ALL ON SCHEMA public, pump_monitor TO ${role}`);
      await h.admin.query(`GRANT ALL ON ALL TABLES IN SCHEMA public, pump_monitor TO ${role}`);
      await h.admin.query(`GRANT ALL ON ALL SEQUENCES IN SCHEMA public, pump_monitor TO ${role}`);
      await h.admin.query('CREATE PUBLICATION repl_priv_pub FOR ALL TABLES');
      const url = new URL(h.db.url);
      url.username = role;
      url.password = 'pw-norepl';
      const err = await h
        .startMonitor({
          SOURCE: 'replication',
          DATABASE_URL: url.toString(),
          REPLICATION_PUBLICATION: 'repl_priv_pub',
          MAX_INTENTOS_INICIAL: '1',
        })
        .then(
          () => undefined,
          (e: Error) => e,
        );
      expect(err?.message).toMatch(/may not use replication slots: ALTER ROLE <user> WITH REPLICATION/);
      expect(err?.message).not.toContain('\n');
      expect(err?.message).not.toContain('pw-norepl');
    } finally {
      await h.close();
      const c = new pg.Client({ connectionString: h.db.url.replace(/\/[^/]*$/, '/postgres') });
      await c.connect().catch(() => {});
      await c.query(`DROP ROLE IF EXISTS ${role}`).catch(() => {});
      await c.end().catch(() => {});
    }
  });
});
