import { type ChildProcess, fork } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { DatabaseConfig } from '../../config/env.js';
import { type EmbeddedPostgres, type Relocation, startEmbeddedPostgres } from './embedded.js';

/**
 * `npm start` runs its embedded PostgreSQL in a detached keeper process, in a process group of its own.
 * Ctrl-C in a terminal signals the whole foreground group; PostgreSQL would take it as "fast shutdown" and
 * be gone before the monitor had drained. With the keeper, the signal reaches the monitor only; the
 * monitor drains, then asks the keeper to stop. If the parent dies instead, the keeper sees its IPC
 * channel close and stops PostgreSQL, so no server is left behind.
 */
export interface KeptPostgres {
  port: number;
  /** The cluster's directory in use (see EmbeddedPostgres.dataDir). */
  dataDir: string;
  relocation: Relocation | undefined;
  /** The postmaster's process id. */
  pid: number | undefined;
  database(name: string): Promise<DatabaseConfig>;
  /** Stops the server (and removes a relocation's directory); resolves once the keeper has exited. */
  stop(): Promise<void>;
}

type Call = { op: 'database'; name: string } | { op: 'stop' };
type Request = Call & { id: number };
type Reply = { id: number; ok: true; value?: unknown } | { id: number; ok: false; error: string };
type Hello =
  | { ready: true; port: number; dataDir: string; pid?: number; relocation?: Relocation }
  | { ready: false; error: string };

function childEntry(): string {
  const here = fileURLToPath(import.meta.url);
  const js = here.replace(/keeper\.(ts|js)$/, 'keeper-child.js');
  return existsSync(js) ? js : here.replace(/keeper\.(ts|js)$/, 'keeper-child.ts');
}

export async function startKeptPostgres(opts: {
  dataDir: string;
  port?: number;
  postgresFlags?: string[];
}): Promise<KeptPostgres> {
  const child = fork(childEntry(), [JSON.stringify(opts)], {
    detached: true,
    stdio: ['ignore', 'ignore', 'inherit', 'ipc'],
  });
  const hello = await new Promise<Hello>((resolve, reject) => {
    child.once('message', (m) => resolve(m as Hello));
    child.once('exit', (code) =>
      reject(new Error(`the PostgreSQL keeper exited (code ${code}) before starting`)),
    );
  });
  if (!hello.ready) throw new Error(hello.error);
  let next = 0;
  const call = (req: Call): Promise<unknown> =>
    new Promise((resolve, reject) => {
      const id = ++next;
      const onMessage = (m: Reply) => {
        if (m.id !== id) return;
        child.off('message', onMessage);
        if (m.ok) resolve(m.value);
        else reject(new Error(m.error));
      };
      child.on('message', onMessage);
      child.send({ ...req, id });
    });
  return {
    port: hello.port,
    dataDir: hello.dataDir,
    relocation: hello.relocation,
    pid: hello.pid,
    database: async (name) => (await call({ op: 'database', name })) as DatabaseConfig,
    stop: async () => {
      if (!child.connected) return;
      await call({ op: 'stop' }).catch(() => {});
      await exited(child);
    },
  };
}

function exited(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => child.once('exit', () => resolve()));
}

/** The keeper's side: runs in the detached child. */
export async function keeperMain(argv: string[]): Promise<void> {
  const opts = JSON.parse(argv[0] ?? '{}') as { dataDir: string; port?: number; postgresFlags?: string[] };
  const send = (m: Hello | Reply) => process.send?.(m);
  let pg: EmbeddedPostgres;
  try {
    pg = await startEmbeddedPostgres(opts);
  } catch (err) {
    send({ ready: false, error: (err as Error).message });
    process.disconnect?.();
    return;
  }
  let stopping: Promise<void> | undefined;
  // The channel may already be closed (the parent died): disconnecting again would throw ERR_IPC_DISCONNECTED.
  const stop = () => {
    stopping ??= pg.stop().finally(() => {
      if (process.connected) process.disconnect();
    });
    return stopping;
  };
  process.on('disconnect', () =>
    stop().then(
      () => process.exit(0),
      () => process.exit(1),
    ),
  );
  process.on('message', async (m: Request) => {
    try {
      if (m.op === 'database') {
        await pg.createDatabase(m.name);
        send({ id: m.id, ok: true, value: pg.database(m.name) });
      } else {
        send({ id: m.id, ok: true });
        await stop();
        process.exit(0);
      }
    } catch (err) {
      send({ id: m.id, ok: false, error: (err as Error).message });
    }
  });
  send({
    ready: true,
    port: pg.port,
    dataDir: pg.dataDir,
    ...(pg.pid ? { pid: pg.pid } : {}),
    ...(pg.relocation ? { relocation: pg.relocation } : {}),
  });
}
