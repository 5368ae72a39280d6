import { type ChildProcess, spawn } from 'node:child_process';
import { resolve } from 'node:path';

const root = resolve(import.meta.dirname, '../..');

export interface ChildListener {
  proc: ChildProcess;
  output: string[];
  exited: Promise<number | null>;
}

/** Runs `pump-monitor listen` as a real child process (from the sources, through tsx), on loopback. */
export function spawnListener(env: Record<string, string>): ChildListener {
  // Under `npm run test:mutations` only: the child loads the same delivery-fault injector as the test.
  const mutation = Object.fromEntries(
    Object.entries(process.env).filter(([k, v]) => k.startsWith('PUMP_MONITOR_MUTATION') && v !== undefined),
  ) as Record<string, string>;
  const inject = mutation.PUMP_MONITOR_MUTATION ? ['--import', './test/mutations/inject.ts'] : [];
  const proc = spawn(process.execPath, ['--import', 'tsx', ...inject, 'src/cli/main.ts', 'listen'], {
    cwd: root,
    env: {
      PATH: process.env.PATH ?? '',
      HOME: process.env.HOME ?? '/tmp',
      LOG_FORMAT: 'json',
      HOST: '127.0.0.1',
      ...mutation,
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const output: string[] = [];
  const collect = (chunk: Buffer) => output.push(...chunk.toString('utf8').split('\n').filter(Boolean));
  proc.stdout?.on('data', collect);
  proc.stderr?.on('data', collect);
  const exited = ended(proc).then((e) => e.code);
  return { proc, output, exited };
}

/**
 * The process's exit, once its output pipes are closed too: 'exit' can come before the last of its output
 * has been read (on a loaded machine, its closing lines). At most 5 s after the exit, for a process of
 * its own that still holds them.
 */
function ended(
  proc: ChildProcess,
): Promise<{ code: number | null; signal: NodeJS.Signals | null; at: number }> {
  const closed = new Promise<void>((r) => proc.once('close', () => r()));
  return new Promise((resolve) =>
    proc.once('exit', (code, signal) => {
      const at = Date.now();
      let timer: NodeJS.Timeout | undefined;
      const bound = new Promise<void>((r) => {
        timer = setTimeout(r, 5_000);
      });
      void Promise.race([closed, bound]).then(() => {
        clearTimeout(timer);
        resolve({ code, signal, at });
      });
    }),
  );
}

export interface CliRun {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  /** Milliseconds from start to exit. */
  ms: number;
}

/**
 * `pump-monitor …` as a child process, from the sources (through tsx), with only PATH, HOME and `env` in
 * its environment. Killed with SIGKILL past `killAfterMs`, so a command that hangs fails its test.
 */
export function runCli(args: string[], env: Record<string, string>, killAfterMs = 60_000): Promise<CliRun> {
  const started = Date.now();
  const proc = spawn(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', ...args], {
    cwd: root,
    env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/tmp', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  proc.stdout.on('data', (c: Buffer) => {
    stdout += c.toString('utf8');
  });
  proc.stderr.on('data', (c: Buffer) => {
    stderr += c.toString('utf8');
  });
  const kill = setTimeout(() => proc.kill('SIGKILL'), killAfterMs);
  return ended(proc).then(({ code, signal, at }) => {
    clearTimeout(kill);
    return { code, signal, stdout, stderr, ms: at - started };
  });
}
