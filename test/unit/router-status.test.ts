import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config/env.js';
import { createBreaker, RouteGuard } from '../../src/delivery/policy.js';
import { type EngineSnapshot, readiness, statusModel } from '../../src/http/status.js';
import { ChannelRouter, type NotificationSink } from '../../src/source/router.js';

function sink(): NotificationSink & { got: string[] } {
  const got: string[] = [];
  return { got, notified: (channel, payload) => got.push(`${channel}:${payload}`) };
}

describe('ChannelRouter', () => {
  it("sends a logbook's channels to its lane and every other channel to the intake", () => {
    const intake = sink();
    const lane = sink();
    const router = new ChannelRouter(intake);
    router.add(['canal_gm_bitacora_a'], lane);
    router.notified('canal_gm_bitacora_a', '{"id":1}');
    router.notified('canal_corriente', '{"id_sensor":2}');
    router.notified('no_such_channel', 'x');
    expect(lane.got).toEqual(['canal_gm_bitacora_a:{"id":1}']);
    expect(intake.got).toEqual(['canal_corriente:{"id_sensor":2}', 'no_such_channel:x']);
  });
});

/** A snapshot of an engine listening, owning both seed pumps, with nothing queued. */
function snapshot(over: Partial<EngineSnapshot> = {}): EngineSnapshot {
  const config = loadConfig({});
  const counters = new Proxy({}, { get: () => 0 });
  return {
    startedAt: Date.now(),
    replicaId: 'r1',
    pumps: config.pumps,
    logbooks: [],
    telemetry: {
      pump: () => counters as never,
      logbook: () => counters as never,
      classification: () => ({ lastClass: null, anomalies: null }),
      recentErrors: () => [],
    },
    listener: {
      listening: true,
      state: 'listening',
      channelCount: 35,
      counters: () => ({
        state: 'listening',
        lastError: undefined,
        connectedSince: undefined,
        reconnects: 0,
        intentosConexion: 0,
        reconexionesConsecutivas: 0,
        lastHeartbeatAt: undefined,
        lastHeartbeatMs: undefined,
        heartbeatsSent: 0,
      }),
    },
    stopping: () => false,
    owned: () => config.pumps.map((p) => p.id),
    owns: () => true,
    backend: () => undefined,
    openGroups: () => 0,
    groupsView: () => [],
    health: () => undefined,
    outboxPending: () => 0,
    postsQueued: () => 0,
    overloaded: () => false,
    logbookQueued: () => 0,
    dbQueries: () => 0,
    checkpointSaves: () => 0,
    writers: () => [],
    catchingUp: () => false,
    rowsBeingRead: () => 0,
    readersHeld: () => 0,
    source: 'notify',
    replication: () => null,
    replicationFault: () => undefined,
    ...over,
  };
}

describe('readiness and /status from a snapshot', () => {
  it('ready while listening with no writer stuck and no route refused; says why not otherwise', () => {
    expect(readiness(snapshot())).toEqual({ ready: true, reason: 'listening on 35 channels; owns A, B' });
    expect(readiness(snapshot({ stopping: () => true }))).toEqual({ ready: false, reason: 'shutting down' });
    const stuck = snapshot({
      writers: () => [
        { name: 'outbox', pending: 3, failures: 2, retryingSince: 0, lastError: 'gone', refused: 0 },
      ],
    });
    expect(readiness(stuck).reason).toMatch(
      /^outbox writer retrying since 1970-01-01T00:00:00.000Z \(2 failures, 3 queued\): gone$/,
    );
    const route = new RouteGuard(() => {});
    route.refused({ status: 403, body: '' });
    const refused = snapshot({
      backend: (p) =>
        p === 'A'
          ? { breaker: createBreaker({ threshold: 5, halfOpenAfterMs: 1, maxHalfOpenAfterMs: 1 }), route }
          : undefined,
    });
    expect(readiness(refused)).toMatchObject({ ready: false });
    expect(readiness(refused).reason).toContain('pump A: backend answered 403');
    expect(statusModel(refused).pumps.A).toMatchObject({ route_fault: { status: 403 } });
  });

  it("/status reads each pump's figures from the units' answers", () => {
    const s = statusModel(
      snapshot({ openGroups: (p) => (p === 'B' ? 4 : 0), postsQueued: (p) => (p === undefined ? 9 : 3) }),
    );
    expect(s.pumps.B).toMatchObject({ open_groups: 4, sensor_posts_queued: 3, owned: true, channels: 15 });
    expect(s).toMatchObject({
      sensor_posts_queued: 9,
      owned_pumps: ['A', 'B'],
      replica: 'r1',
      work: { records_queued: 0 },
    });
  });
});
