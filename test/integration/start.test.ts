import { spawn } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { freePort } from '../../src/tools/free-port.js';
import { waitFor } from '../helpers/wait.js';

const root = resolve(import.meta.dirname, '../..');
const dir = mkdtempSync(join(tmpdir(), 'pm-start-'));
chmodSync(dir, 0o755); // as root, PostgreSQL runs as the postgres user and must reach its data dir

afterAll(() => rmSync(dir, { recursive: true, force: true }));

interface PumpStatus {
  vectors_sent: number;
  last_prediction: { prediccion: number } | null;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Runs a CLI command as an operator would beside `npm start`: nothing configured but where start keeps its data. */
function operatorCommand(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', ...args], {
      cwd: root,
      env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/tmp', PGDATA_DIR: join(dir, 'pg') },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => {
      stdout += c.toString();
    });
    child.stderr.on('data', (c: Buffer) => {
      stderr += c.toString();
    });
    child.on('error', reject);
    child.on('close', (code) => resolvePromise({ code, stdout, stderr }));
  });
}

describe('pump-monitor start with nothing configured', () => {
  it('runs PostgreSQL, backend, simulator and both listeners; shows predictions within 30 s; diagnose finds it; Ctrl-C leaves nothing', async () => {
    const port = String(await freePort());
    const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', 'start'], {
      cwd: root,
      env: {
        PATH: process.env.PATH ?? '',
        HOME: process.env.HOME ?? '/tmp',
        PORT: port,
        HOST: '127.0.0.1',
        BACKEND_PORT: String(await freePort()),
        PGDATA_DIR: join(dir, 'pg'),
        LOG_FORMAT: 'json',
        LOG_LEVEL: 'warn',
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    child.stdout?.on('data', (c: Buffer) => {
      output += c.toString();
    });
    child.stderr?.on('data', (c: Buffer) => {
      output += c.toString();
    });
    const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
    try {
      const started = Date.now();
      let pumps: Record<string, PumpStatus> = {};
      await waitFor(
        'both pumps sending vectors with a prediction',
        async () => {
          try {
            const res = await fetch(`http://127.0.0.1:${port}/status`);
            pumps = ((await res.json()) as { pumps: Record<string, PumpStatus> }).pumps;
            return ['A', 'B'].every((p) => (pumps[p]?.vectors_sent ?? 0) > 0 && pumps[p]?.last_prediction);
          } catch {
            return false;
          }
        },
        60_000,
      );
      console.log(`npm start: both pumps had predictions ${Date.now() - started} ms after launch`);
      expect(output).toContain('pump-monitor is running');
      const page = await fetch(`http://127.0.0.1:${port}/`);
      expect(page.status).toBe(200);

      // The commands to paste, with the password read from its file rather than printed.
      const password = readFileSync(join(dir, 'pg.password'), 'utf8').trim();
      expect(output).toContain(`PGDATA_DIR=${join(dir, 'pg')} npx pump-monitor diagnose`);
      expect(output).toMatch(
        new RegExp(
          `PGPASSWORD="\\$\\(cat ${join(dir, 'pg.password')}\\)" psql -h 127\\.0\\.0\\.1 -p \\d+ -U postgres pump_monitor`,
        ),
      );
      expect(output).not.toContain(password);
      expect(statSync(join(dir, 'demo-api-key')).mode & 0o777).toBe(0o600);

      // diagnose with nothing configured checks this run's database and backend, and all of it passes.
      const diagnosed = await operatorCommand(['diagnose']);
      expect(diagnosed.stderr).toBe('');
      expect(diagnosed.stdout).toMatch(
        /^pump-monitor diagnose: postgres@127\.0\.0\.1:\d+\/pump_monitor, pumps A, B \(nothing configured: the npm start running as pid \d+/,
      );
      expect(diagnosed.stdout).toMatch(/^PASS {2}backend A .* answered 422/m);
      expect(diagnosed.stdout).toMatch(/^all \d+ checks passed$/m);
      expect(diagnosed.stdout).not.toMatch(/^FAIL/m);
      expect(diagnosed.code).toBe(0);
      const apiKey = readFileSync(join(dir, 'demo-api-key'), 'utf8').trim();
      for (const secret of [password, apiKey]) expect(diagnosed.stdout).not.toContain(secret);
    } finally {
      const pidFile = join(dir, 'pg', 'postmaster.pid');
      const postmaster = existsSync(pidFile)
        ? Number(readFileSync(pidFile, 'utf8').split('\n')[0])
        : undefined;
      child.kill('SIGINT');
      expect(await exited).toBe(0);
      expect(postmaster).toBeGreaterThan(0);
      await waitFor('the embedded PostgreSQL gone', () => !alive(postmaster as number), 15_000);
    }
    // Stopped, it leaves no state behind, and the commands say that nothing runs.
    expect(existsSync(join(dir, 'demo.json'))).toBe(false);
    expect(existsSync(join(dir, 'demo-api-key'))).toBe(false);
    const after = await operatorCommand(['diagnose']);
    expect(after.code).toBe(2);
    expect(after.stderr).toContain('nothing is configured');
    expect(after.stderr).toContain('no npm start is running from here');
  });
});
