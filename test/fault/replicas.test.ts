import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { type Config, type DatabaseConfig, loadConfig } from '../../src/config/env.js';
import { createPool, withClient } from '../../src/store/db.js';
import { migrate } from '../../src/store/schema.js';
import { freePort } from '../../src/tools/free-port.js';
import { generatePumps, writePumpDefinitions } from '../../src/tools/generate-pumps.js';
import { runSimulator } from '../../src/tools/simulator.js';
import { type ChildListener, spawnListener } from '../helpers/child.js';
import { createTestDatabase } from '../helpers/db.js';
import { FakeBackend } from '../helpers/fake-backend.js';
import { settleAndReport } from '../helpers/tally.js';
import { pause, waitFor } from '../helpers/wait.js';

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c().catch(() => {});
});

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
  const backend = await new FakeBackend().start();
  cleanups.push(() => backend.stop());
  const env = {
    ...FAST,
    DATABASE_URL: db.url,
    BASE_URL: backend.url,
    BASE_URL_B: backend.url,
    BASE_URL_SYNTHETIC: backend.url,
    ...extra,
  };
  const config = loadConfig(env, { requireDatabase: true, requireBackend: true }) as Config & {
    database: DatabaseConfig;
  };
  await withClient(config.database, 'test-migrate', (c) => migrate(c, config.pumps));
  const admin = createPool(config.database, 'test-admin', 3);
  cleanups.push(() => admin.end());
  return { env, config, admin, backend };
}

describe('replicas', () => {
  it('failover: 3 replicas, the owner is SIGKILLed mid-stream and restarted; 0 lost, 0 duplicated', async () => {
    const s = await setup('failover');
    const replicas = [await startReplica(s.env), await startReplica(s.env), await startReplica(s.env)];
    await waitFor('both pumps owned, by different replicas', async () => {
      const all = [...(await owners(replicas)).values()];
      return all.flat().sort().join() === 'A,B' && all.every((o) => o.length <= 1);
    });
    const streaming = runSimulator({
      pool: s.admin,
      pumps: s.config.pumps,
      rate: 20,
      count: 200,
      onError: () => {},
    });
    await waitFor('vectors flowing', () => s.backend.ok('/predecir-bomba').length > 20, 30_000);
    const before = await owners(replicas);
    const victim = [...before.entries()].find(([, o]) => o.includes('A'))?.[0] as Replica;
    victim.child.proc.kill('SIGKILL');
    const killedAt = Date.now();
    await victim.child.exited;
    const others = replicas.filter((r) => r !== victim);
    await waitFor(
      'another replica takes pump A',
      async () => [...(await owners(others)).values()].flat().includes('A'),
      15_000,
    );
    const takeoverMs = Date.now() - killedAt;
    console.log(`failover: pump A taken over ${takeoverMs} ms after its owner was SIGKILLed`);
    const restarted = await startReplica(s.env);
    await streaming;
    const t = await settleAndReport('failover-sigkill-owner', s.admin, s.config.pumps, s.backend);
    expect(takeoverMs).toBeLessThan(15_000);
    expect(t.vectors).toBe(400);
    expect(t.lost).toBe(0);
    expect(t.duplicated).toBe(0);
    // Each pump still has exactly one owner once the restarted replica has joined.
    await pause(1_500);
    const after = [...(await owners([...others, restarted])).values()].flat().sort();
    expect(after).toEqual(['A', 'B']);
  });

  it('scale: 100 pumps of 20 sensors on one PostgreSQL with 4 replicas are balanced and lose nothing', async () => {
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
    await runSimulator({ pool: s.admin, pumps: s.config.pumps, rate: 2, count: 6, onError: () => {} });
    const t = await settleAndReport(
      'scale-100-pumps-4-replicas',
      s.admin,
      s.config.pumps,
      s.backend,
      120_000,
    );
    expect(t.vectors).toBe(600);
    expect(t.lost).toBe(0);
    expect(t.duplicated).toBe(0);
    expect(t.replays).toBe(0);
  }, 300_000);
});
