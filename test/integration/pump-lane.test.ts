import pg from 'pg';
import pino from 'pino';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { loadConfig, type PumpConfig } from '../../src/config/env.js';
import { createAgent } from '../../src/delivery/backend-client.js';
import { createBackends } from '../../src/delivery/backends.js';
import { OutboxRecorder } from '../../src/delivery/outbox-recorder.js';
import type { SendResult } from '../../src/delivery/vector-sender.js';
import { PumpLane } from '../../src/engine/pump-lane.js';
import { CheckpointKeeper } from '../../src/ledger/checkpoint-keeper.js';
import type { DroppedGroup, Vector } from '../../src/model/groups.js';
import type { Reading } from '../../src/model/reading.js';
import type { DeadLetter } from '../../src/store/dead-letters.js';
import type { OutboxRow } from '../../src/store/outbox.js';
import { migrate } from '../../src/store/schema.js';
import { ManualClock } from '../../src/util/clock.js';
import { createTestDatabase, type TestDatabase } from '../helpers/db.js';
import { API_KEY } from '../helpers/engine.js';
import { FakeBackend } from '../helpers/fake-backend.js';
import { waitFor } from '../helpers/wait.js';

/**
 * One PumpLane with its real collaborators: the outbox recorder and the ledger on PostgreSQL, the backend
 * factory's client and breaker against a fake backend over HTTP, and a manual clock for the assembler. What
 * is checked is the lane's own work: a resolved group is stored before its rows' group parts settle, the
 * sender gets only what was stored anew and only while the lane is taken, `sent` carries the delivery
 * latency from the group's first reading, and `load()` counts settling groups only.
 */

const quiet = pino({ level: 'silent' });

/** Both wirings: the seed's pump A, and plant-2026-03's pump B (posted-only sensors, shared tables). */
const WIRINGS = [
  { name: 'default', env: {} as Record<string, string>, pumpId: 'A' },
  { name: 'plant-2026-03', env: { PUMPS_PROFILE: 'plant-2026-03' }, pumpId: 'B' },
];
const SETTLE_MS = 1_000;
const EXPIRY_MS = 10_000;

describe.each(WIRINGS)('PumpLane ($name wiring)', (wiring) => {
  let db: TestDatabase;
  let pool: pg.Pool;
  let backend: FakeBackend;
  beforeAll(async () => {
    db = await createTestDatabase(`pump_lane_${wiring.pumpId}`);
    pool = new pg.Pool({ connectionString: db.url, max: 4 });
    pool.on('error', () => {});
    backend = await new FakeBackend({ pumps: loadConfig(wiring.env).pumps, apiKey: API_KEY }).start();
    const client = await pool.connect();
    await migrate(client, loadConfig(wiring.env).pumps);
    client.release();
  });
  afterAll(async () => {
    await backend?.stop();
    await pool?.end();
    await db?.drop();
  });

  interface Setup {
    lane: PumpLane;
    pump: PumpConfig;
    ledger: CheckpointKeeper;
    clock: ManualClock;
    vectors: { v: Vector; stored: boolean }[];
    dropped: { d: DroppedGroup; stored: boolean }[];
    sent: { row: OutboxRow; result: SendResult; latencyMs: number | undefined }[];
    letters: DeadLetter[];
    close(): Promise<void>;
  }

  let s: Setup | undefined;
  afterEach(async () => {
    await s?.close();
    s = undefined;
  });

  beforeEach(async () => {
    // Each test writes its own pump's rows: a fresh outbox and checkpoints for the pump.
    await pool.query('DELETE FROM pump_monitor.outbox WHERE pump = $1', [wiring.pumpId]);
    await pool.query('DELETE FROM pump_monitor.checkpoints WHERE pump = $1', [wiring.pumpId]);
    backend.requests.length = 0;
  });

  async function setup(o: { maxOpenGroups?: number } = {}): Promise<Setup> {
    const config = loadConfig({
      ...wiring.env,
      DATABASE_URL: db.url,
      BASE_URL: backend.url,
      BASE_URL_B: `${backend.url}/sensores_b`,
      API_KEY,
      RETRY_BASE_MS: '20',
      RETRY_MAX_MS: '200',
      PUMPS: wiring.pumpId,
    });
    const pump = config.pumps[0] as PumpConfig;
    const controller = new AbortController();
    const clock = new ManualClock(1_000_000);
    const ledger = new CheckpointKeeper({
      pool,
      logger: quiet,
      everyMs: 60_000,
      ownedReaders: () => [],
      horizon: async () => undefined,
    });
    const readers = pump.sensors.map((x) => ({ pump: pump.id, table: x.table }));
    await ledger.load(pool, readers);
    // Nothing was missed: lift the start-up hold so that the checkpoints follow what is settled.
    for (const r of readers) ledger.beginCatchUp(r.pump, r.table).finish();
    const recorder = new OutboxRecorder({ pool, logger: quiet, signal: controller.signal });
    const agent = createAgent(4);
    const backends = createBackends({ config, agent, logger: quiet, onAnswer: () => {} });
    const letters: DeadLetter[] = [];
    const lane = new PumpLane({
      pump,
      assembler: { ...config.assembler, settleMs: SETTLE_MS, expiryMs: EXPIRY_MS, ...o },
      clock,
      pool,
      recorder,
      ledger,
      backend: backends.pumps.get(pump.id) as NonNullable<ReturnType<typeof backends.pumps.get>>,
      retryBaseMs: 20,
      retryMaxMs: 200,
      deadLetters: { stored: (l) => letters.push(l) },
      logger: quiet,
    });
    const out: Setup = {
      lane,
      pump,
      ledger,
      clock,
      vectors: [],
      dropped: [],
      sent: [],
      letters,
      async close() {
        await lane.abort();
        controller.abort();
        await agent.close();
      },
    };
    lane.on('vector', (v, stored) => out.vectors.push({ v, stored }));
    lane.on('dropped', (d, stored) => out.dropped.push({ d, stored }));
    lane.on('sent', (row, result, latencyMs) => out.sent.push({ row, result, latencyMs }));
    return out;
  }

  /** One reading of each of the pump's vector sensors (or of the first `n`), begun in the ledger with a group part. */
  function readings(t: Setup, tiempo: string, id: number, n = Number.POSITIVE_INFINITY): Reading[] {
    const sensors = vectorSensors(t).slice(0, n);
    return sensors.map((sensor, k) => {
      const ticket = t.ledger.begin(t.pump.id, sensor.table, id, ['group']);
      if (!ticket) throw new Error(`row ${id} of ${sensor.table} was begun already`);
      return {
        pump: t.pump.id,
        sensor,
        id,
        valor: 10 + k,
        tiempo,
        receivedAt: t.clock.now(),
        origin: 'notify',
        ticket,
      };
    });
  }

  /** One sensor per vector field: a second channel for a field would be a conflicting reading. */
  function vectorSensors(t: Setup): PumpConfig['sensors'] {
    const fields = new Set<string>();
    return t.pump.sensors.filter((x) => {
      if (!x.inVector || fields.has(x.field)) return false;
      fields.add(x.field);
      return true;
    });
  }

  const settled = (t: Setup, id: number) =>
    vectorSensors(t).map((x) => t.ledger.settledThrough(t.pump.id, x.table, id));

  const unifiedPath = (t: Setup) => `${t.pump.pathPrefix}${t.pump.unifiedPath}`;

  async function outbox(tiempo: string): Promise<{ status: string }[]> {
    const { rows } = await pool.query<{ status: string }>(
      'SELECT status FROM pump_monitor.outbox WHERE pump = $1 AND tiempo_sensor = $2',
      [wiring.pumpId, tiempo],
    );
    return rows;
  }

  it('stores a full group, settles its rows only once stored, and sends it only after take()', async () => {
    s = await setup();
    const t = s;
    const first = t.clock.now();
    for (const r of readings(t, '2025-01-01T00:00:01', 1)) expect(t.lane.add(r)).toBe('added');
    t.clock.advance(250);
    t.lane.tick();
    // A full group resolves at once; its record is written asynchronously, and until then no row settles.
    expect(settled(t, 1).every((x) => !x)).toBe(true);
    await waitFor('the vector stored', () => t.vectors.length === 1);
    expect(t.vectors[0]?.stored).toBe(true);
    expect(settled(t, 1).every(Boolean)).toBe(true);
    expect(await outbox('2025-01-01T00:00:01')).toEqual([{ status: 'pending' }]);
    expect(backend.requests).toEqual([]);

    t.lane.take();
    await waitFor('the vector sent', () => t.sent.length === 1);
    const [sent] = t.sent;
    expect(sent?.result).toMatchObject({ kind: 'sent', status: 200 });
    // From the group's first reading to the answer, on the lane's clock.
    expect(sent?.latencyMs).toBe(t.clock.now() - first);
    const requests = backend.requests.filter((r) => r.path === unifiedPath(t));
    expect(requests.map((r) => r.idempotencyKey)).toEqual([sent?.row.key]);
    expect(requests[0]?.status).toBe(200);
  });

  it('a group already in the outbox is not stored or sent again', async () => {
    s = await setup();
    const t = s;
    t.lane.take();
    for (const r of readings(t, '2025-01-01T00:00:02', 1)) t.lane.add(r);
    t.lane.tick();
    await waitFor('the first vector sent', () => t.sent.length === 1);
    // Another replica owned the pump meanwhile: the open groups are forgotten and the same rows read
    // again (settled here already, so without a ticket of their own).
    t.lane.reset();
    const again = readings(t, '2025-01-01T00:00:02', 2).map((r) => ({ ...r, id: 1, ticket: undefined }));
    for (const r of again) t.lane.add(r);
    t.lane.tick();
    await waitFor('the group recognised', () => t.vectors.length === 2);
    expect(t.vectors.map((v) => v.stored)).toEqual([true, false]);
    // A later group is the fence: once it is answered, a resend of the repeated one would have been too.
    for (const r of readings(t, '2025-01-01T00:00:03', 3)) t.lane.add(r);
    t.lane.tick();
    await waitFor('the fence sent', () => t.sent.length === 2);
    const keys = backend.requests.filter((r) => r.path === unifiedPath(t)).map((r) => r.idempotencyKey);
    expect(keys).toHaveLength(2);
    expect(new Set(keys).size).toBe(2);
    expect(await outbox('2025-01-01T00:00:02')).toEqual([{ status: 'sent' }]);
  });

  it('a group below the threshold expires as dropped: stored, its rows settled, nothing sent', async () => {
    s = await setup();
    const t = s;
    t.lane.take();
    const few = readings(t, '2025-01-01T00:00:04', 1, t.pump.minFields - 1);
    for (const r of few) t.lane.add(r);
    t.lane.tick();
    expect(t.lane.openGroups).toBe(1);
    t.clock.advance(EXPIRY_MS + 1);
    t.lane.tick();
    await waitFor('the group dropped', () => t.dropped.length === 1);
    expect(t.dropped[0]?.stored).toBe(true);
    expect(t.dropped[0]?.d.tiempo).toBe('2025-01-01T00:00:04');
    expect(few.map((r) => t.ledger.settledThrough(t.pump.id, r.sensor.table, 1))).toEqual(
      few.map(() => true),
    );
    expect(await outbox('2025-01-01T00:00:04')).toEqual([{ status: 'dropped' }]);
    expect(t.vectors).toEqual([]);
    expect(t.lane.openGroups).toBe(0);
  });

  // A pump whose threshold is all its fields has no group that waits out the settle time.
  const served = loadConfig(wiring.env).pumps.find((p) => p.id === wiring.pumpId) as PumpConfig;
  const partial = served.minFields < served.vectorFields.length;
  it.runIf(partial)(
    'load() counts settling groups against half of MAX_OPEN_GROUPS, not groups below the threshold',
    async () => {
      s = await setup({ maxOpenGroups: 8 });
      const t = s;
      expect(t.lane.load()).toBe(0);
      // Two groups at the threshold but not full: they wait for the settle time.
      const atThreshold = t.pump.minFields;
      expect(atThreshold).toBeLessThan(t.pump.vectorFields.length);
      for (const r of readings(t, '2025-01-01T00:01:00', 1, atThreshold)) t.lane.add(r);
      for (const r of readings(t, '2025-01-01T00:01:01', 2, atThreshold)) t.lane.add(r);
      // One group below it: only expiry closes it.
      for (const r of readings(t, '2025-01-01T00:01:02', 3, atThreshold - 1)) t.lane.add(r);
      t.lane.tick();
      expect(t.lane.openGroups).toBe(3);
      expect(t.lane.load()).toBe(2 / 4);
      // Past the settle time, with no value to fill their gaps, they still settle: the load stays.
      t.clock.advance(SETTLE_MS + 1);
      t.lane.tick();
      expect(t.lane.load()).toBe(2 / 4);
      // Expiry resolves all three.
      t.clock.advance(EXPIRY_MS);
      t.lane.tick();
      expect(t.lane.load()).toBe(0);
      expect(t.lane.openGroups).toBe(0);
      await waitFor('all three recorded', () => t.vectors.length + t.dropped.length === 3);
    },
  );

  it('leave() stops sending: a group stored while the lane is not taken waits in the outbox', async () => {
    s = await setup();
    const t = s;
    t.lane.take();
    await t.lane.leave(1_000);
    for (const r of readings(t, '2025-01-01T00:02:00', 1)) t.lane.add(r);
    t.lane.tick();
    await waitFor('the vector stored', () => t.vectors.length === 1);
    expect(await outbox('2025-01-01T00:02:00')).toEqual([{ status: 'pending' }]);
    // Taken again, the sender reads the pending row from the outbox and sends it.
    t.lane.take();
    await waitFor('the pending vector sent', () => t.sent.length === 1);
    expect(t.sent[0]?.latencyMs).toBeTypeOf('number');
    expect(backend.requests.filter((r) => r.path === unifiedPath(t))).toHaveLength(1);
  });
});
