import { type ChildProcess, fork } from 'node:child_process';
import path from 'node:path';

interface Waiter {
  type: string;
  resolve: (m: unknown) => void;
  reject: (err: Error) => void;
  timer: NodeJS.Timeout;
}

export interface ChildOptions {
  env: Record<string, string>;
  /** Extra node flags, e.g. --cpu-prof. */
  nodeFlags?: string[];
}

/**
 * A compiled bench script (see build.ts) run in a child process with an IPC channel. Messages are objects with a
 * `type`; `next(type)` waits for the next one of that type, an `error` message or an exit rejects it.
 */
export class Child<M extends { type: string }, C> {
  readonly proc: ChildProcess;
  readonly exited: Promise<number | null>;
  private readonly waiters = new Set<Waiter>();
  private readonly handlers = new Map<string, (m: M) => void>();
  stderr = '';
  /** Set once the process has exited: its code (null after a signal), and the signal. */
  exit: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  /** The last `error` message the child sent. */
  lastError: string | undefined;

  constructor(scriptPath: string, o: ChildOptions) {
    const script = path.basename(scriptPath);
    this.proc = fork(scriptPath, [], {
      execArgv: o.nodeFlags ?? [],
      env: { ...process.env, ...o.env },
      stdio: ['ignore', 'inherit', 'pipe', 'ipc'],
    });
    this.proc.stderr?.on('data', (d: Buffer) => {
      this.stderr = (this.stderr + d.toString('utf8')).slice(-4_000);
    });
    this.proc.on('message', (m: M) => {
      this.handlers.get(m.type)?.(m);
      for (const w of [...this.waiters]) {
        if (w.type === m.type) this.settle(w, () => w.resolve(m));
        else if (m.type === 'error') {
          const text = (m as unknown as { message?: string }).message ?? 'error';
          this.lastError = text;
          this.settle(w, () => w.reject(new Error(`${script}: ${text}`)));
        }
      }
    });
    this.exited = new Promise((resolve) => {
      this.proc.once('exit', (code, signal) => {
        this.exit = { code, signal };
        for (const w of [...this.waiters]) {
          this.settle(w, () =>
            w.reject(new Error(`${script} exited with ${code} before "${w.type}"\n${this.stderr}`)),
          );
        }
        resolve(code);
      });
    });
  }

  on<T extends M['type']>(type: T, fn: (m: Extract<M, { type: T }>) => void): void {
    this.handlers.set(type, fn as (m: M) => void);
  }

  next<T extends M['type']>(type: T, timeoutMs: number): Promise<Extract<M, { type: T }>> {
    return new Promise((resolve, reject) => {
      const w: Waiter = {
        type,
        resolve: resolve as (m: unknown) => void,
        reject,
        timer: setTimeout(
          () => this.settle(w, () => reject(new Error(`no "${type}" from the child within ${timeoutMs} ms`))),
          timeoutMs,
        ),
      };
      this.waiters.add(w);
    });
  }

  send(cmd: C): void {
    if (this.proc.connected) this.proc.send(cmd as object);
  }

  /** Asks politely (the `stop` command), then SIGKILLs after `graceMs`. */
  async stop(cmd: C, graceMs = 15_000): Promise<number | null> {
    if (this.proc.exitCode !== null || this.proc.signalCode !== null) return this.proc.exitCode;
    this.send(cmd);
    const timer = setTimeout(() => this.proc.kill('SIGKILL'), graceMs);
    const code = await this.exited;
    clearTimeout(timer);
    return code;
  }

  private settle(w: Waiter, fn: () => void): void {
    if (!this.waiters.delete(w)) return;
    clearTimeout(w.timer);
    fn();
  }
}
