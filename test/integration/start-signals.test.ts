import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { freePort } from '../../src/tools/free-port.js';
import { waitFor } from '../helpers/wait.js';

/**
 * A signal while `listen` is still starting: the database is unreachable, so the start retries on the
 * original's schedule (here, minutes of it). The process must end on SIGTERM at once, as a plain process
 * and as PID 1 of its own PID namespace, which is what node is as the image's entrypoint: the kernel drops
 * a signal that PID 1 has no handler for.
 */

const root = resolve(import.meta.dirname, '../..');

/** Whether this machine lets the test start a process as PID 1 of a new PID namespace (root, util-linux). */
function canUnshare(): boolean {
  try {
    execFileSync('unshare', ['--pid', '--fork', '--mount-proc', 'true'], {
      stdio: 'ignore',
      timeout: 10_000,
    });
    return true;
  } catch {
    return false;
  }
}

interface Started {
  proc: ChildProcess;
  output: string[];
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** The node process's own pid, as seen from here. */
  nodePid(): number | undefined;
}

async function startListen(asPid1: boolean): Promise<Started> {
  const node = [process.execPath, '--import', 'tsx', 'src/cli/main.ts', 'listen'];
  const [cmd, ...args] = asPid1
    ? ['unshare', '--pid', '--fork', '--mount-proc', '--kill-child', ...node]
    : node;
  const proc = spawn(cmd as string, args, {
    cwd: root,
    env: {
      PATH: process.env.PATH ?? '',
      HOME: process.env.HOME ?? '/tmp',
      DB_HOST: '127.0.0.1',
      DB_PORT: String(await freePort()),
      DB_NAME: 'pump_monitor',
      DB_USER: 'pump_monitor',
      DB_PASSWORD: 'unused',
      BASE_URL: 'http://127.0.0.1:9',
      BASE_URL_B: 'http://127.0.0.1:9/sensores_b',
      API_KEY: 'unused',
      PORT: '0',
      HOST: '127.0.0.1',
      LOG_FORMAT: 'json',
      MAX_INTENTOS_INICIAL: '50',
      TIEMPO_ESPERA_BASE: '60',
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const output: string[] = [];
  const collect = (chunk: Buffer) => output.push(...chunk.toString('utf8').split('\n').filter(Boolean));
  proc.stdout?.on('data', collect);
  proc.stderr?.on('data', collect);
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((r) =>
    proc.once('close', (code, signal) => r({ code, signal })),
  );
  const nodePid = () => {
    if (!asPid1) return proc.pid;
    const children = readFileSync(`/proc/${proc.pid}/task/${proc.pid}/children`, 'utf8').trim();
    return children ? Number(children.split(/\s+/)[0]) : undefined;
  };
  return { proc, output, exited, nodePid };
}

/** Only root may make a PID namespace here (CI runs as root): the PID 1 case is skipped otherwise. */
const unshareAllowed = canUnshare();

describe('a signal while listen starts', () => {
  async function signalled(asPid1: boolean): Promise<void> {
    const s = await startListen(asPid1);
    try {
      await waitFor(
        'the start retrying the database',
        () => {
          if (s.proc.exitCode !== null)
            throw new Error(`exited ${s.proc.exitCode}: ${s.output.slice(-3).join('\n')}`);
          return s.output.some((l) => l.includes('database not ready'));
        },
        60_000,
        () => s.output.slice(-5),
      );
      const pid = s.nodePid();
      expect(pid).toBeTypeOf('number');
      process.kill(pid as number, 'SIGTERM');
      // Against a start that retries for minutes: the bound only tells an exit from an ignored signal.
      let timer: NodeJS.Timeout | undefined;
      const outcome = await Promise.race([
        s.exited,
        new Promise<'still running after 20 s'>((r) => {
          timer = setTimeout(() => r('still running after 20 s'), 20_000);
        }),
      ]);
      clearTimeout(timer);
      expect(outcome, s.output.slice(-5).join('\n')).toEqual({ code: 143, signal: null });
      expect(s.output.some((l) => l.includes('signal during start-up'))).toBe(true);
    } finally {
      if (s.proc.exitCode === null && s.proc.signalCode === null) s.proc.kill('SIGKILL');
      await s.exited;
    }
  }

  it('SIGTERM to a plain process: exits at once, 143, saying why', () => signalled(false));

  it.skipIf(!unshareAllowed)(
    'SIGTERM to PID 1 of its own PID namespace, as node is in the image: exits at once, 143, saying why',
    () => signalled(true),
  );
});
