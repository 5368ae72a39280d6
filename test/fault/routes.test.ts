import { afterEach, describe, expect, it } from 'vitest';
import { buildServer } from '../../src/http/server.js';
import { ENGINE_SCHEMA } from '../../src/store/schema.js';
import { type Cleanup, runCleanups } from '../helpers/cleanup.js';
import { API_KEY, type Harness, harness, insertTimestamp } from '../helpers/engine.js';
import type { FakeBackend } from '../helpers/fake-backend.js';
import { expectExactlyOnce } from '../helpers/ledger.js';
import { waitFor } from '../helpers/wait.js';

/**
 * Issue 19, items 4 and 5: one pump's backend never holds back another's deliveries (bulkheads), and a
 * backend that refuses its route (a redirect, 401, 403) holds that pump's deliveries instead of turning
 * them into dead letters. Each test has a database and two backends of its own, and asserts on counts and
 * state, never on the clock.
 */

const cleanups: Cleanup[] = [];
afterEach(() => runCleanups(cleanups));

async function fresh(prefix: string): Promise<Harness> {
  const h = await harness(prefix, {}, { ownBackendB: true });
  cleanups.push(() => h.close());
  return h;
}

async function deadLetters(h: Harness): Promise<number> {
  const { rows } = await h.admin.query<{ n: number }>(
    `SELECT count(*)::int AS n FROM ${ENGINE_SCHEMA}.dead_letters`,
  );
  return rows[0]?.n ?? -1;
}

async function pendingVectors(h: Harness, pump: string): Promise<number> {
  const { rows } = await h.admin.query<{ n: number }>(
    `SELECT count(*)::int AS n FROM ${ENGINE_SCHEMA}.outbox WHERE pump = $1 AND status = 'pending'`,
    [pump],
  );
  return rows[0]?.n ?? -1;
}

/** Items (by Idempotency-Key) answered 200 at `backend` on the paths `match` takes. */
const answered200 = (backend: FakeBackend, match: (path: string) => boolean) =>
  new Set(backend.requests.filter((r) => r.status === 200 && match(r.path)).map((r) => r.idempotencyKey))
    .size;

describe('bulkheads', () => {
  it("pump A's backend answering 500 to everything does not hold back pump B's posts or vectors", async () => {
    const h = await fresh('bulkhead_500');
    h.backend.behaviour = () => ({ status: 500 });
    // A's posts keep retrying for the whole test (no budget runs out, so nothing leaves A's slots).
    const m = await h.startMonitor({ SENSOR_POST_MAX_ATTEMPTS: '100000' });
    const { A, B } = h.pumps;
    // A first: more posts than every slot of the poster, all failing, in front of B's.
    for (let i = 0; i < 4; i++) await insertTimestamp(h.admin, A, `2025-03-01T00:00:0${i}`);
    // Its circuit opens: its posts wait on it, in the slots they hold.
    await waitFor(
      "A's backend failing and its circuit open",
      () =>
        h.backend.requests.length >= 5 &&
        (m.status().pumps as Record<string, { breaker: string }>).A?.breaker !== 'closed',
    );
    const bTimestamps = 4;
    for (let i = 0; i < bTimestamps; i++) await insertTimestamp(h.admin, B, `2025-03-01T00:00:0${i}`);
    const bReadings = bTimestamps * B.sensors.length;
    const unified = `/sensores_b${B.unifiedPath}`;
    await waitFor(
      "every one of B's readings and vectors answered 200 while A's backend still fails",
      () =>
        answered200(h.backendB, (p) => p !== unified) === bReadings &&
        answered200(h.backendB, (p) => p === unified) === bTimestamps,
      30_000,
    );
    // A was failing the whole time: not one of its requests succeeded, and they kept coming.
    expect(h.backend.requests.filter((r) => r.status === 200)).toHaveLength(0);
    const aRequests = h.backend.requests.length;
    await waitFor('A still being retried', () => h.backend.requests.length > aRequests);
    expect(await deadLetters(h)).toBe(0);
    // A's backend comes back: everything of both pumps is delivered, once.
    h.backend.behaviour = () => undefined;
    const c = await h.ledger().settle({ admin: h.admin, monitors: [m] });
    expect({ readings: c.readings, vectors: c.vectors }).toEqual({
      readings: 4 * A.sensors.length + bReadings,
      vectors: 4 + bTimestamps,
    });
    expectExactlyOnce(c);
  });
});

describe('bulkheads in catch-up', () => {
  // On SOURCE=replication too: the slot hands its replayed backlog over with no backpressure, so B's
  // posts past its share are deferred, and come back while A's failing posts hold A's whole share.
  it("a backlog read after a restart reaches pump B while pump A's backend fails, past A's share of the queue", async () => {
    const h = await fresh('bulkhead_catchup');
    const { A, B } = h.pumps;
    // A first run sets the checkpoints (a new installation starts at each table's end).
    await (await h.startMonitor()).stop(2_000);
    // Written while no engine runs: catch-up reads them, two rows of each table per round.
    const timestamps = 8;
    for (let i = 0; i < timestamps; i++) {
      await insertTimestamp(h.admin, A, `2025-03-03T00:00:0${i}`);
      await insertTimestamp(h.admin, B, `2025-03-03T00:00:0${i}`);
    }
    h.backend.behaviour = () => ({ status: 503 });
    // A small queue: A's share (50) fills, and the rest of A's posts wait in deferred_posts.
    const m = await h.startMonitor({
      SENSOR_POST_MAX_ATTEMPTS: '100000',
      SENSOR_POST_QUEUE: '100',
      CATCHUP_BATCH: '2',
    });
    const unified = `/sensores_b${B.unifiedPath}`;
    await waitFor(
      "B's whole backlog answered 200 while A's backend still fails",
      () =>
        answered200(h.backendB, (p) => p !== unified) === timestamps * B.sensors.length &&
        answered200(h.backendB, (p) => p !== unified) === timestamps * B.sensors.length &&
        answered200(h.backendB, (p) => p === unified) === timestamps,
      30_000,
    );
    expect(h.backend.requests.filter((r) => r.status === 200)).toHaveLength(0);
    expect(await deadLetters(h)).toBe(0);
    h.backend.behaviour = () => undefined;
    const c = await h.ledger().settle({ admin: h.admin, monitors: [m] });
    expect({ readings: c.readings, vectors: c.vectors }).toEqual({
      readings: timestamps * (A.sensors.length + B.sensors.length),
      vectors: 2 * timestamps,
    });
    expectExactlyOnce(c);
  });
});

describe('a backend that refuses its route', () => {
  it('301 and 401 hold the deliveries, name the fault, dead-letter nothing; after a fixed restart all is delivered once', async () => {
    const h = await fresh('route_fault');
    const target = 'https://prediction.example.net/v2';
    const { A, B } = h.pumps;
    // A's backend moved; B's backend took a new API key that the engine does not have yet.
    h.backend.behaviour = () => ({ status: 301, headers: { location: target } });
    h.backendB.serve({ pumps: [B], apiKey: 'rotated-key-0000' });
    const m1 = await h.startMonitor();
    const timestamps = 3;
    for (let i = 0; i < timestamps; i++) {
      await insertTimestamp(h.admin, A, `2025-03-02T00:00:0${i}`);
      await insertTimestamp(h.admin, B, `2025-03-02T00:00:0${i}`);
    }
    const refusedKeys = (b: FakeBackend, status: number) => {
      const by = new Map<string, number>();
      for (const r of b.requests) {
        if (r.status === status && r.idempotencyKey)
          by.set(r.idempotencyKey, (by.get(r.idempotencyKey) ?? 0) + 1);
      }
      return by;
    };
    // Every vector is in the outbox, and the refused items are tried again (a fix would be noticed).
    await waitFor(
      'the vectors stored and the refused requests tried again',
      async () =>
        (await pendingVectors(h, 'A')) === timestamps &&
        (await pendingVectors(h, 'B')) === timestamps &&
        [...refusedKeys(h.backend, 301).values()].some((n) => n >= 3) &&
        [...refusedKeys(h.backendB, 401).values()].some((n) => n >= 3),
    );
    // The unified paths were refused too, and held: the first vector of each pump, again and again.
    expect(h.backend.requests.filter((r) => r.path === `/sensores${A.unifiedPath}`).length).toBeGreaterThan(
      1,
    );
    expect(
      h.backendB.requests.filter((r) => r.path === `/sensores_b${B.unifiedPath}`).length,
    ).toBeGreaterThan(1);
    expect(await deadLetters(h)).toBe(0);

    const app = await buildServer(m1);
    cleanups.push(() => app.close());
    const readyz = await app.inject({ method: 'GET', url: '/readyz' });
    expect(readyz.statusCode).toBe(503);
    const reason = (readyz.json() as { reason: string }).reason;
    expect(reason).toContain('pump A: backend answered 301');
    expect(reason).toContain(target);
    expect(reason).toContain('pump B: backend answered 401');
    const status = (await app.inject({ method: 'GET', url: '/status' })).json() as {
      pumps: Record<
        string,
        { route_fault: { status: number; location: string | null; reason: string } | null }
      >;
    };
    expect(status.pumps.A?.route_fault).toMatchObject({ status: 301, location: target });
    expect(status.pumps.A?.route_fault?.reason).toContain('BASE_URL');
    expect(status.pumps.B?.route_fault).toMatchObject({ status: 401, location: null });
    expect(status.pumps.B?.route_fault?.reason).toContain('API_KEY');
    const metrics = (await app.inject({ method: 'GET', url: '/metrics' })).body;
    expect(metrics).toMatch(/pump_monitor_backend_route_refused\{pump="A",status="301"\} 1/);
    expect(metrics).toMatch(/pump_monitor_backend_route_refused\{pump="B",status="401"\} 1/);
    await app.close();

    // The configuration is fixed (the backend's URL answers, the engine has the new key): a restart.
    await m1.stop(2_000);
    expect(await deadLetters(h)).toBe(0);
    h.backend.behaviour = () => undefined;
    h.backendB.serve({ pumps: [B], apiKey: API_KEY });
    const m2 = await h.startMonitor();
    const c = await h.ledger().settle({ admin: h.admin, monitors: [m2] });
    expect({ readings: c.readings, vectors: c.vectors }).toEqual({
      readings: timestamps * (A.sensors.length + B.sensors.length),
      vectors: 2 * timestamps,
    });
    expectExactlyOnce(c);
    expect(await deadLetters(h)).toBe(0);
    expect(m2.readiness().ready).toBe(true);
    expect((m2.status().pumps as Record<string, { route_fault: unknown }>).A?.route_fault).toBeNull();
  });

  it('a 403 fixed on the backend side, without a restart, is noticed: everything held is delivered once', async () => {
    const h = await fresh('route_fixed_live');
    const { A, B } = h.pumps;
    h.backend.behaviour = () => ({ status: 403 });
    const m = await h.startMonitor();
    const timestamps = 3;
    for (let i = 0; i < timestamps; i++) {
      await insertTimestamp(h.admin, A, `2025-03-04T00:00:0${i}`);
      await insertTimestamp(h.admin, B, `2025-03-04T00:00:0${i}`);
    }
    await waitFor(
      "A's vectors held and its route named",
      async () =>
        (await pendingVectors(h, 'A')) === timestamps &&
        (m.status().pumps as Record<string, { route_fault: { status: number } | null }>).A?.route_fault
          ?.status === 403 &&
        h.backend.requests.filter((r) => r.path === `/sensores${A.unifiedPath}`).length >= 2,
    );
    expect(m.readiness()).toMatchObject({ ready: false });
    expect(m.readiness().reason).toContain('pump A: backend answered 403');
    // B is not held by A's refusal.
    await waitFor(
      "B's vectors delivered while A's route is refused",
      () => answered200(h.backendB, (p) => p === `/sensores_b${B.unifiedPath}`) === timestamps,
    );
    expect(m.readiness().reason).toContain('pump A: backend answered 403');
    expect(await deadLetters(h)).toBe(0);
    h.backend.behaviour = () => undefined;
    const c = await h.ledger().settle({ admin: h.admin, monitors: [m] });
    expectExactlyOnce(c);
    expect({ readings: c.readings, vectors: c.vectors }).toEqual({
      readings: timestamps * (A.sensors.length + B.sensors.length),
      vectors: 2 * timestamps,
    });
    expect(await deadLetters(h)).toBe(0);
    expect(m.readiness().ready).toBe(true);
  });
});
