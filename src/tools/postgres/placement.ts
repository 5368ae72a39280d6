import { createHash } from 'node:crypto';
import type { Stats } from 'node:fs';
import { chmod, copyFile, link, mkdir, readdir, readlink, realpath, stat, symlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { type Account, SYSTEM_USER } from './account.js';

/**
 * Where the server's files are: as root, the `postgres` account must reach both the data directory and
 * the binaries, and whatever it cannot reach moves to a directory of its own under a temporary root.
 */

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

export const RUNTIME_PREFIX = 'pump-monitor-pg-';

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
export async function linkTree(from: string, to: string): Promise<void> {
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

export interface Placement {
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
export async function placeServer(
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
