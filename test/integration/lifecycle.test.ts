import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { chmod, cp, mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort } from '../../src/tools/free-port.js';
import { isProcessRunning } from '../../src/tools/postgres/processes.js';
import { runCli } from '../helpers/child.js';
import { waitFor } from '../helpers/wait.js';

/**
 * A service that starts and stops like one: `npm start` run the way a process manager runs it (its own
 * session, no terminal), then SIGTERM, SIGINT or SIGHUP sent to the npm process. Everything it started
 * must be gone within 15 s: node, the PostgreSQL keeper, the postmaster and its backends, demo.json and
 * the temporary cluster directory. As root under a mode-700 directory (as in CI), the cluster runs from
 * a temporary directory of its own, which must go too.
 */

const repoRoot = path.resolve(import.meta.dirname, '../..');
const STOP_LIMIT_MS = 15_000;
const START_LIMIT_MS = 240_000; // `npm start` compiles first (prestart); a loaded 2-core machine is slow

let base: string;
let app: string;
const started = new Set<ChildProcess>();

beforeAll(async () => {
  base = await mkdtemp(path.join(tmpdir(), 'pm-lifecycle-'));
  // Private, like a checkout under root's home: the embedded cluster cannot stay in it when run as root.
  await chmod(base, 0o700);
  app = path.join(base, 'app');
  await mkdir(app);
  for (const entry of ['package.json', 'tsconfig.json', 'tsconfig.build.json', 'src', 'pumps', 'public']) {
    await cp(path.join(repoRoot, entry), path.join(app, entry), { recursive: true });
  }
  await symlink(path.join(repoRoot, 'node_modules'), path.join(app, 'node_modules'));
});

afterAll(async () => {
  for (const child of started) if (child.pid && isProcessRunning(child.pid)) child.kill('SIGKILL');
  if (base) await rm(base, { recursive: true, force: true });
});

/** Every process whose chain of parents leads to `root`, read from /proc. */
function descendants(root: number): number[] {
  const parent = new Map<number, number>();
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      parent.set(Number(name), Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]));
    } catch {
      // Exited while being read.
    }
  }
  const found: number[] = [];
  const walk = (pid: number) => {
    for (const [child, ppid] of parent) {
      if (ppid === pid && !found.includes(child)) {
        found.push(child);
        walk(child);
      }
    }
  };
  walk(root);
  return found;
}

/** The IPv4 addresses with a socket listening on `port`, from /proc/net/tcp (hex, little-endian). */
function listeningAddresses(port: number): string[] {
  const hexPort = port.toString(16).toUpperCase().padStart(4, '0');
  return readFileSync('/proc/net/tcp', 'utf8')
    .split('\n')
    .slice(1)
    .map((line) => line.trim().split(/\s+/))
    .filter((f) => f[1]?.endsWith(`:${hexPort}`) && f[3] === '0A')
    .map((f) => {
      const hex = (f[1] as string).split(':')[0] as string;
      return [3, 2, 1, 0].map((k) => Number.parseInt(hex.slice(k * 2, k * 2 + 2), 16)).join('.');
    });
}

function commandOf(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').join(' ').trim();
  } catch {
    return '(gone)';
  }
}

describe('npm start stops like a service', () => {
  for (const signal of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) {
    it(`${signal} to the npm process stops node, the keeper and PostgreSQL and removes demo.json and the temporary cluster within 15 s`, async () => {
      const env: Record<string, string> = {
        PATH: process.env.PATH ?? '',
        HOME: process.env.HOME ?? '/tmp',
        PORT: String(await freePort()),
        BACKEND_PORT: String(await freePort()),
        LOG_LEVEL: 'info',
      };
      const npm = spawn('npm', ['start'], {
        cwd: app,
        env,
        detached: true,
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      started.add(npm);
      let output = '';
      npm.stdout?.on('data', (c: Buffer) => {
        output += c.toString('utf8');
      });
      npm.stderr?.on('data', (c: Buffer) => {
        output += c.toString('utf8');
      });
      const exited = new Promise<void>((resolve) => npm.once('exit', () => resolve()));
      await waitFor('the banner', () => output.includes('pump-monitor is running:'), START_LIMIT_MS);
      const npmPid = npm.pid as number;

      const tree = descendants(npmPid);
      const commands = tree.map(commandOf);
      // npm runs node itself, with no shell between them to swallow the signal.
      const node = tree.find((pid) => commandOf(pid).includes('dist/cli/main.js start'));
      expect(node, commands.join('\n')).toBeDefined();
      expect(readFileSync(`/proc/${node}/stat`, 'utf8')).toMatch(new RegExp(`^\\d+ \\(.*\\) \\w ${npmPid} `));
      expect(
        commands.some((c) => c.includes('keeper-child')),
        commands.join('\n'),
      ).toBe(true);
      expect(
        commands.some((c) => /\/postgres -D /.test(c)),
        commands.join('\n'),
      ).toBe(true);

      const stateFile = path.join(app, '.data', 'demo.json');
      const state = JSON.parse(readFileSync(stateFile, 'utf8')) as {
        dataDir: string;
        wiring: { name: string; pumps: string[] };
      };
      expect(state.wiring).toMatchObject({ name: 'default (pumps/a.json, pumps/b.json)', pumps: ['A', 'B'] });
      const runsAsRoot = process.getuid?.() === 0;
      const temporary = state.dataDir.startsWith(path.join(tmpdir(), 'pump-monitor-pg-'))
        ? path.dirname(state.dataDir)
        : undefined;
      // As root, the mode-700 directory sends the cluster to a temporary directory.
      expect(temporary !== undefined).toBe(runsAsRoot);

      // With HOST unset, the demo's status page listens on loopback only.
      expect(listeningAddresses(Number(env.PORT))).toEqual(['127.0.0.1']);
      if (signal === 'SIGTERM') {
        // Once every pump has sent a vector, the banner is said again below start-up's log lines.
        await waitFor(
          'the banner again',
          () => output.includes('pump-monitor is running (start-up settled):'),
          120_000,
        );
      }

      process.kill(npmPid, signal);
      await waitFor(
        'every process npm start started gone',
        () => [npmPid, ...tree].every((pid) => !isProcessRunning(pid)),
        STOP_LIMIT_MS,
      );
      await exited;
      expect(existsSync(stateFile)).toBe(false);
      expect(existsSync(path.join(app, '.data', 'demo-api-key'))).toBe(false);
      if (temporary) expect(existsSync(temporary)).toBe(false);

      // The last line says what was stopped and removed.
      const lines = output.trim().split('\n');
      const last = JSON.parse(lines[lines.length - 1] ?? '{}') as { msg?: string; signal?: string };
      expect(last.signal).toBe(signal);
      expect(last.msg).toMatch(
        /^stopped the simulator, the listeners of A, B, .*the embedded PostgreSQL \(pid \d+\); removed /,
      );
      expect(last.msg).toContain('.data/demo.json');
      if (temporary) expect(last.msg).toContain(temporary);
      expect(output).not.toContain('ERR_IPC_DISCONNECTED');
    }, 300_000);
  }
});

describe('pump-monitor --version', () => {
  it("prints package.json's version", async () => {
    const run = await runCli(['--version'], {});
    const { version } = JSON.parse(readFileSync(path.join(repoRoot, 'package.json'), 'utf8')) as {
      version: string;
    };
    expect(run).toMatchObject({ code: 0, stdout: `${version}\n`, stderr: '' });
  });
});

describe('the test suite interrupted', () => {
  it('removes its temporary cluster (and data.password) when vitest gets SIGINT', async () => {
    // A run of its own: one test that waits, with this suite's global set-up, in a TMPDIR of its own.
    const work = path.join(repoRoot, 'test-artifacts', `interrupt-${process.pid}`);
    await mkdir(work, { recursive: true });
    const tmp = await mkdtemp(path.join(tmpdir(), 'pm-interrupt-'));
    await chmod(tmp, 0o755);
    const marker = path.join(tmp, 'started');
    try {
      await writeFile(
        path.join(work, 'wait.test.ts'),
        `import { writeFileSync } from 'node:fs';
import { setTimeout as delay } from 'node:timers/promises';
import { it } from 'vitest';
it('waits to be interrupted', async () => {
  writeFileSync(${JSON.stringify(marker)}, 'started');
  await delay(100_000);
}, 110_000);
`,
      );
      await writeFile(
        path.join(work, 'vitest.config.ts'),
        `import { defineConfig } from 'vitest/config';
export default defineConfig({
  test: {
    root: ${JSON.stringify(repoRoot)},
    include: [${JSON.stringify(`${path.relative(repoRoot, work)}/*.test.ts`)}],
    globalSetup: ['test/helpers/global-setup.ts'],
    hookTimeout: 120_000,
  },
});
`,
      );
      const vitest = spawn(
        process.execPath,
        [
          path.join(repoRoot, 'node_modules/vitest/vitest.mjs'),
          'run',
          '--config',
          path.join(work, 'vitest.config.ts'),
        ],
        {
          cwd: repoRoot,
          env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/tmp', TMPDIR: tmp },
          stdio: ['ignore', 'pipe', 'pipe'],
        },
      );
      started.add(vitest);
      let output = '';
      vitest.stdout?.on('data', (c: Buffer) => {
        output += c.toString('utf8');
      });
      vitest.stderr?.on('data', (c: Buffer) => {
        output += c.toString('utf8');
      });
      const exited = new Promise<void>((resolve) => vitest.once('exit', () => resolve()));
      await waitFor('the inner test running', () => existsSync(marker), START_LIMIT_MS).catch(
        (err: Error) => {
          throw new Error(`${err.message}\n${output}`);
        },
      );
      const clusters = readdirSync(tmp).filter((name) => name.startsWith('pump-monitor-test-pg-'));
      expect(clusters).toHaveLength(1);
      const cluster = path.join(tmp, clusters[0] as string);
      expect(existsSync(path.join(cluster, 'data.password'))).toBe(true);

      vitest.kill('SIGINT');
      await exited;
      await waitFor('the temporary cluster removed', () => !existsSync(cluster), 30_000);
    } finally {
      await rm(work, { recursive: true, force: true });
      await rm(tmp, { recursive: true, force: true });
    }
  }, 300_000);
});
