import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { type Config, type DatabaseConfig, loadConfig } from '../../src/config/env.js';
import { migrateSource } from '../../src/source/replication/migrate.js';
import { createPool, withClient } from '../../src/store/db.js';
import { migrate } from '../../src/store/schema.js';
import { freePort } from '../../src/tools/free-port.js';
import { generatePumps, writePumpDefinitions } from '../../src/tools/generate-pumps.js';
import { runSimulator } from '../../src/tools/simulator.js';
import {
  crashReplayBound,
  expectResendsOnlyUnrecorded,
  factsAtKill,
  reportResends,
  resendsAfterKill,
} from '../helpers/bounds.js';
import { type ChildListener, spawnListener } from '../helpers/child.js';
import { type Cleanup, runCleanups } from '../helpers/cleanup.js';
import { createTestDatabase } from '../helpers/db.js';
import { onReplication, sourceEnv } from '../helpers/engine.js';
import { FakeBackend } from '../helpers/fake-backend.js';
import { expectExactlyOnce, expectWithinBound, Ledger } from '../helpers/ledger.js';
import { waitFor } from '../helpers/wait.js';

const cleanups: Cleanup[] = [];
afterEach(() => runCleanups(cleanups));

const FAST = {
  SETTLE_MS: '300',
  GROUP_EXPIRY_MS: '5000',
  TIEMPO_ESPERA_BASE: '0.05',
  TIEMPO_ESPERA_MAX: '0.4',
  RETRY_BASE_MS: '20',
  RETRY_MAX_MS: '300',
  HEARTBEAT_INTERVAL_MS: '1000',
  HEARTBEAT_TIMEOUT_MS: '1000',
  LEASE_INTERVAL_MS: '500',
  SENSOR_POST_MAX_ATTEMPTS: '40',
  // The crash bound of the failover is written from it (the scale test sets its own).
  SENSOR_POST_CONCURRENCY: '16',
  // And its vectors' bound from this (the README's default, set explicitly).
  VECTOR_WINDOW: '8',
  LOG_LEVEL: 'warn',
  API_KEY: 'replica-key',
};

interface Replica {
  port: string;
  child: ChildListener;
}

async function replicaStatus(r: Replica): Promise<{ replica: string; owned_pumps: string[] } | undefined> {
  try {
    const res = await fetch(`http://127.0.0.1:${r.port}/status`);
    return res.ok ? ((await res.json()) as { replica: string; owned_pumps: string[] }) : undefined;
  } catch {
    return undefined;
  }
}

async function startReplica(env: Record<string, string>): Promise<Replica> {
  const port = String(await freePort());
  const child = spawnListener({ ...env, PORT: port });
  const r = { port, child };
  cleanups.push(async () => {
    child.proc.kill('SIGKILL');
    await child.exited;
  });
  await waitFor(
    `replica on ${port} ready`,
    async () => (await fetch(`http://127.0.0.1:${port}/readyz`).catch(() => undefined))?.status === 200,
    60_000,
  );
  return r;
}

async function owners(replicas: Replica[]): Promise<Map<Replica, string[]>> {
  const out = new Map<Replica, string[]>();
  for (const r of replicas) out.set(r, (await replicaStatus(r))?.owned_pumps ?? []);
  return out;
}

async function setup(prefix: string, extra: Record<string, string> = {}) {
  const db = await createTestDatabase(prefix);
  cleanups.push(() => db.drop());
  const pumps = loadConfig(extra).pumps;
  // A backend per pump id that is not B (A, or every synthetic pump) and one of its own for B.
  const backend = await new FakeBackend({
    pumps: pumps.filter((p) => p.id !== 'B'),
    apiKey: FAST.API_KEY,
  }).start();
  cleanups.push(() => backend.stop());
  const backendB = await new FakeBackend({
    pumps: pumps.filter((p) => p.id === 'B'),
    apiKey: FAST.API_KEY,
  }).start();
  cleanups.push(() => backendB.stop());
  const env = {
    ...FAST,
    DATABASE_URL: db.url,
    BASE_URL: backend.url,
    BASE_URL_B: backendB.url,
    BASE_URL_SYNTHETIC: backend.url,
    ...sourceEnv(),
    ...extra,
  };
  const config = loadConfig(env, { requireDatabase: true, requireBackend: true }) as Config & {
    database: DatabaseConfig;
  };
  await withClient(config.database, 'test-migrate', async (c) => {
    await migrate(c, config.pumps);
    await migrateSource(c, config);
  });
  const admin = createPool(config.database, 'test-admin', 3);
  cleanups.push(() => admin.end());
  const ledger = new Ledger({
    pumps: config.pumps,
    backends: Object.fromEntries(config.pumps.map((p) => [p.id, p.id === 'B' ? backendB : backend])),
    apiKey: FAST.API_KEY,
  });
  return { env, config, admin, backend, backendB, ledger };
}

/** Runs the simulator; a failed write fails the test. */
async function simulate(
  s: Awaited<ReturnType<typeof setup>>,
  rate: number,
  count: number,
  onTick?: () => void,
) {
  const errors: Error[] = [];
  const result = await runSimulator({
    pool: s.admin,
    pumps: s.config.pumps,
    rate,
    count,
    ...(onTick ? { onTick } : {}),
    onError: (err) => errors.push(err),
  });
  expect(errors).toEqual([]);
  expect(result).toMatchObject({ timestamps: count * s.config.pumps.length, errors: 0 });
  return result;
}

describe('replicas', () => {
  // On the replication source one replica holds the slot and both pumps; the kill then takes both.
  it('failover: 3 replicas, the owner is SIGKILLed mid-stream and restarted; 0 lost, excess bounded', async () => {
    const s = await setup('failover');
    const replicas = [await startReplica(s.env), await startReplica(s.env), await startReplica(s.env)];
    await waitFor(
      onReplication
        ? 'both pumps owned, by the replica reading the slot'
        : 'both pumps owned, by different replicas',
      async () => {
        const all = [...(await owners(replicas)).values()];
        const spread = onReplication
          ? all.filter((o) => o.length > 0).length === 1
          : all.every((o) => o.length <= 1);
        return all.flat().sort().join() === 'A,B' && spread;
      },
    );
    let ticks = 0;
    const streaming = simulate(s, 20, 200, () => {
      ticks += 1;
    });
    await waitFor(
      'vectors flowing',
      () => s.backend.answered('/sensores/predecir-bomba').length > 20,
      30_000,
    );
    const before = await owners(replicas);
    const victim = [...before.entries()].find(([, o]) => o.includes('A'))?.[0] as Replica;
    victim.child.proc.kill('SIGKILL');
    const killedAt = Date.now();
    await victim.child.exited;
    const ticksAtKill = ticks;
    const facts = await factsAtKill({
      admin: s.admin,
      pumps: s.config.pumps,
      backends: { A: s.backend, B: s.backendB },
      victims: before.get(victim) ?? [],
    });
    const others = replicas.filter((r) => r !== victim);
    await waitFor(
      'another replica takes pump A',
      async () => [...(await owners(others)).values()].flat().includes('A'),
      15_000,
    );
    console.log(`failover: pump A taken over ${Date.now() - killedAt} ms after its owner was SIGKILLed`);
    const restarted = await startReplica(s.env);
    const result = await streaming;
    // The kill landed mid-stream: timestamps were committed before it and after it.
    expect(ticksAtKill).toBeGreaterThan(0);
    expect(ticksAtKill).toBeLessThan(result.timestamps);
    const live = [...others, restarted];
    const c = await s.ledger.settle({
      admin: s.admin,
      statusUrls: live.map((r) => `http://127.0.0.1:${r.port}`),
    });
    // One process died, owning pump A (both, on replication): its unrecorded posts and up to its window
    // of vectors per pump it owned may come again.
    const bound = crashReplayBound({
      sensorPostConcurrency: Number(FAST.SENSOR_POST_CONCURRENCY),
      pumps: onReplication ? 2 : 1,
      vectorWindow: Number(FAST.VECTOR_WINDOW),
    });
    s.ledger.report('failover-sigkill-owner', bound);
    const resends = resendsAfterKill(facts);
    reportResends('failover-sigkill-owner', resends);
    expect({ readings: c.readings, vectors: c.vectors }).toEqual({ readings: result.rows, vectors: 400 });
    expectWithinBound(c, bound);
    expectResendsOnlyUnrecorded(resends, bound);
    // Each pump ends with exactly one owner once the restarted replica has joined.
    await waitFor('each pump owned by exactly one live replica', async () => {
      const all = [...(await owners(live)).values()].flat().sort();
      return all.join() === 'A,B';
    });
  });

  // One slot has one reader: on replication one replica serves every pump, so there is no balance to test.
  it.skipIf(onReplication)(
    'scale: 100 pumps of 20 sensors on one PostgreSQL with 4 replicas are balanced and lose nothing',
    async () => {
      const dir = mkdtempSync(join(tmpdir(), 'pm-pumps-'));
      cleanups.push(async () => rmSync(dir, { recursive: true, force: true }));
      const pumps = generatePumps({ count: 100, sensors: 20 });
      writePumpDefinitions(dir, pumps);
      const s = await setup('scale', { PUMPS_DIR: dir, SENSOR_POST_CONCURRENCY: '8' });
      const replicas: Replica[] = [];
      for (let i = 0; i < 4; i++) replicas.push(await startReplica(s.env));
      await waitFor(
        'every replica owns 25 pumps',
        async () => [...(await owners(replicas)).values()].every((o) => o.length === 25),
        90_000,
      );
      const owned = [...(await owners(replicas)).values()];
      expect(new Set(owned.flat()).size).toBe(100);
      console.log(`scale: pumps per replica ${owned.map((o) => o.length).join(', ')}`);
      const result = await simulate(s, 2, 6);
      const c = await s.ledger.settle({
        admin: s.admin,
        statusUrls: replicas.map((r) => `http://127.0.0.1:${r.port}`),
        timeoutMs: 120_000,
      });
      s.ledger.report('scale-100-pumps-4-replicas');
      expect({ readings: c.readings, vectors: c.vectors }).toEqual({ readings: result.rows, vectors: 600 });
      expectExactlyOnce(c);
    },
    300_000,
  );
});
