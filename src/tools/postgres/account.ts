import { execFile } from 'node:child_process';
import { promisify } from 'node:util';

/**
 * The operating-system account PostgreSQL runs as. PostgreSQL refuses to run as root, so as root the
 * server runs as a `postgres` system account, whatever the database user is called.
 */

export interface Account {
  uid: number;
  gid: number;
}

export const SYSTEM_USER = 'postgres';

const execFileAsync = promisify(execFile);

export function isRoot(): boolean {
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
export async function ensureSystemAccount(): Promise<Account> {
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
