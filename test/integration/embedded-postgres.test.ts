import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, readFileSync, readlinkSync, statSync } from 'node:fs';
import { chmod, mkdir, mkdtemp, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { arch, platform, tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { clientConfig } from '../../src/store/db.js';
import {
  type EmbeddedPostgres,
  isProcessRunning,
  startEmbeddedPostgres,
} from '../../src/tools/postgres/embedded.js';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const moduleUrl = pathToFileURL(path.join(repoRoot, 'src/tools/postgres/embedded.ts')).href;
const CHILD_TIMEOUT_MS = 60_000;

let root: string;
const servers: EmbeddedPostgres[] = [];
const children: ChildProcess[] = [];

beforeAll(async () => {
  root = await mkdtemp(path.join(tmpdir(), 'pump-monitor-embedded-pg-'));
  // As root the server runs as the `postgres` user, which must be able to enter this directory.
  await chmod(root, 0o755);
});

afterEach(async () => {
  for (const child of children.splice(0)) child.kill('SIGKILL');
  await Promise.all(servers.splice(0).map((server) => server.stop()));
});

afterAll(async () => {
  if (root) await rm(root, { recursive: true, force: true });
});

function dataDir(name: string): string {
  return path.join(root, name, 'data');
}

async function start(dir: string): Promise<EmbeddedPostgres> {
  const server = await startEmbeddedPostgres({ dataDir: dir });
  servers.push(server);
  return server;
}

async function queryOne(server: EmbeddedPostgres, sql: string, database = 'postgres'): Promise<unknown> {
  const client = new pg.Client(clientConfig(server.database(database), 'embedded-postgres-test'));
  await client.connect();
  try {
    const result = await client.query(sql);
    return result.rows[0];
  } finally {
    await client.end();
  }
}

function postmasterPid(dir: string): number {
  const pid = Number.parseInt(
    readFileSync(path.join(dir, 'postmaster.pid'), 'utf8').split('\n')[0] ?? '',
    10,
  );
  expect(Number.isInteger(pid) && pid > 0).toBe(true);
  return pid;
}

/** Runs a TypeScript snippet in a separate node process (through tsx), with the module under test loaded. */
function spawnNode(body: string): ChildProcess {
  const source = `import * as embedded from ${JSON.stringify(moduleUrl)};\n${body}`;
  const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', source], {
    cwd: repoRoot,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.push(child);
  return child;
}

function firstLine(child: ChildProcess): Promise<string> {
  return new Promise((resolve, reject) => {
    let stdout = '';
    let stderr = '';
    const timer = setTimeout(() => reject(new Error(`child printed nothing: ${stderr}`)), CHILD_TIMEOUT_MS);
    child.stderr?.on('data', (chunk: Buffer) => {
      stderr += chunk.toString();
    });
    child.stdout?.on('data', (chunk: Buffer) => {
      stdout += chunk.toString();
      const end = stdout.indexOf('\n');
      if (end >= 0) {
        clearTimeout(timer);
        resolve(stdout.slice(0, end));
      }
    });
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`child exited (${code ?? signal}) before printing: ${stderr}`));
    });
  });
}

function exitOf(child: ChildProcess): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) {
      resolve({ code: child.exitCode, signal: child.signalCode });
      return;
    }
    child.once('exit', (code, signal) => resolve({ code, signal }));
  });
}

async function eventuallyGone(pid: number): Promise<boolean> {
  const deadline = Date.now() + 20_000;
  while (isProcessRunning(pid)) {
    if (Date.now() > deadline) return false;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  return true;
}

describe('startEmbeddedPostgres', () => {
  it('starts a server in an empty directory and answers queries', async () => {
    const dir = dataDir('query');
    const server = await start(dir);

    expect(existsSync(path.join(dir, 'PG_VERSION'))).toBe(true);
    expect(server.url).toBe(
      `postgres://postgres:${encodeURIComponent(server.database().password ?? '')}@127.0.0.1:${server.port}/postgres`,
    );
    expect(await queryOne(server, 'SELECT 1 + 1 AS sum')).toEqual({ sum: 2 });

    await server.createDatabase('readings');
    await server.createDatabase('readings');
    expect(await queryOne(server, 'SELECT current_database() AS name', 'readings')).toEqual({
      name: 'readings',
    });
    expect(server.database('readings')).toMatchObject({
      database: 'readings',
      ssl: false,
      sslMode: 'disable',
    });
  });

  it('leaves no postgres process behind after stop()', async () => {
    const dir = dataDir('stop');
    const server = await start(dir);
    const pid = postmasterPid(dir);
    expect(isProcessRunning(pid)).toBe(true);

    await server.stop();
    await server.stop();

    expect(isProcessRunning(pid)).toBe(false);
    expect(existsSync(path.join(dir, 'postmaster.pid'))).toBe(false);
    await expect(queryOne(server, 'SELECT 1')).rejects.toThrow();
  });

  it('starts again on the same port after stop()', async () => {
    const dir = dataDir('restart');
    const server = await start(dir);
    const port = server.port;
    await queryOne(server, 'CREATE TABLE kept AS SELECT 7 AS id');

    await server.stop();
    await server.start();
    await server.start();

    expect(server.port).toBe(port);
    expect(await queryOne(server, 'SELECT id FROM kept')).toEqual({ id: 7 });
  });

  it('reuses an initialised data directory and its password across instances', async () => {
    const dir = dataDir('reuse');
    const first = await start(dir);
    await first.createDatabase('survives');
    await first.stop();

    const second = await start(dir);
    expect(second.database().password).toBe(first.database().password);
    expect(await queryOne(second, 'SELECT current_database() AS name', 'survives')).toEqual({
      name: 'survives',
    });
  });

  it('recovers the data directory of a node process killed with SIGKILL', async () => {
    const dir = dataDir('orphan');
    const child = spawnNode(`
      const server = await embedded.startEmbeddedPostgres({ dataDir: ${JSON.stringify(dir)} });
      console.log(JSON.stringify({ port: server.port }));
    `);
    const { port } = JSON.parse(await firstLine(child)) as { port: number };
    expect(port).toBeGreaterThan(0);
    const orphan = postmasterPid(dir);
    expect(isProcessRunning(orphan)).toBe(true);

    child.kill('SIGKILL');
    expect((await exitOf(child)).signal).toBe('SIGKILL');
    // Precondition: the server outlived the node process that started it.
    expect(isProcessRunning(orphan)).toBe(true);

    const server = await start(dir);

    expect(await eventuallyGone(orphan)).toBe(true);
    expect(postmasterPid(dir)).not.toBe(orphan);
    expect(await queryOne(server, 'SELECT 42 AS answer')).toEqual({ answer: 42 });
  });

  it('takes the server down when node exits without calling stop()', async () => {
    const dir = dataDir('exit-hook');
    const child = spawnNode(`
      const { readFileSync } = await import('node:fs');
      await embedded.startEmbeddedPostgres({ dataDir: ${JSON.stringify(dir)} });
      const pid = readFileSync(${JSON.stringify(path.join(dir, 'postmaster.pid'))}, 'utf8').split('\\n')[0];
      console.log(JSON.stringify({ pid: Number(pid) }));
      process.exit(0);
    `);
    const { pid } = JSON.parse(await firstLine(child)) as { pid: number };
    expect(pid).toBeGreaterThan(0);
    expect((await exitOf(child)).code).toBe(0);

    expect(await eventuallyGone(pid)).toBe(true);
  });

  it('does not kill an unrelated process named in a stale postmaster.pid', async () => {
    const dir = dataDir('unrelated');
    const server = await start(dir);
    await server.stop();
    const bystander = spawn('sleep', ['300'], { stdio: 'ignore' });
    children.push(bystander);
    const pid = bystander.pid ?? 0;
    await writeFile(path.join(dir, 'postmaster.pid'), `${pid}\n${dir}\n`);

    await server.start();

    expect(isProcessRunning(pid)).toBe(true);
    expect(postmasterPid(dir)).not.toBe(pid);
    expect(await queryOne(server, 'SELECT 1 AS one')).toEqual({ one: 1 });
  });

  it('prints nothing and keeps the process exit code', async () => {
    const dir = dataDir('quiet');
    const child = spawnNode(`
      const server = await embedded.startEmbeddedPostgres({ dataDir: ${JSON.stringify(dir)} });
      await server.stop();
      process.exitCode = 3;
    `);
    let stdout = '';
    let stderr = '';
    child.stdout?.on('data', (chunk: Buffer) => {
      stdout += chunk.toString();
    });
    child.stderr?.on('data', (chunk: Buffer) => {
      stderr += chunk.toString();
    });

    // embedded-postgres' own exit hooks would turn this into exit status 0.
    expect(await exitOf(child), stderr).toEqual({ code: 3, signal: null });
    expect(stdout).toBe('');
    expect(existsSync(path.join(dir, 'postmaster.pid'))).toBe(false);
  });

  // As root the server runs as the `postgres` account; a checkout under root's mode-700 home is out of its
  // reach, both the data directory and the binaries in node_modules.
  it.runIf(process.getuid?.() === 0)(
    'runs from a temporary directory of its own when the checkout is under a mode-700 directory',
    async () => {
      const privateDir = await mkdtemp(path.join(tmpdir(), 'pump-monitor-private-'));
      try {
        expect((await stat(privateDir)).mode & 0o777).toBe(0o700);
        const checkout = path.join(privateDir, 'checkout');
        await mkdir(checkout);
        const installed = path.resolve(
          path.dirname(createRequire(import.meta.url).resolve(`@embedded-postgres/${platform()}-${arch()}`)),
          '..',
          'native',
        );
        // The checkout's binaries: a link to the package's, reached through the private directory.
        await symlink(installed, path.join(checkout, 'postgresql'));
        const dir = path.join(checkout, '.data', 'postgres');

        const server = await startEmbeddedPostgres({
          dataDir: dir,
          installDir: path.join(checkout, 'postgresql'),
        });
        servers.push(server);

        const relocation = server.relocation;
        expect(relocation?.dir.startsWith(path.join(tmpdir(), 'pump-monitor-pg-'))).toBe(true);
        expect(relocation?.dataDir).toBe(path.join(relocation?.dir ?? '', 'data'));
        expect(relocation?.installDir).toBe(path.join(relocation?.dir ?? '', 'postgresql'));
        expect(relocation?.reason).toContain(`${privateDir} has mode 700`);
        expect(server.dataDir).toBe(relocation?.dataDir);
        expect(await queryOne(server, 'SELECT 6 * 7 AS answer')).toEqual({ answer: 42 });
        const pid = postmasterPid(server.dataDir);
        expect(readlinkSync(`/proc/${pid}/exe`)).toBe(
          path.join(relocation?.installDir ?? '', 'bin', 'postgres'),
        );
        // The password stays beside the requested data directory, readable by root only.
        expect(statSync(`${dir}.password`).mode & 0o777).toBe(0o600);
        expect(existsSync(dir)).toBe(false);

        await server.stop();
        expect(isProcessRunning(pid)).toBe(false);
        expect(existsSync(relocation?.dir ?? '')).toBe(false);
        expect(existsSync(installed)).toBe(true);

        // A start after stop() makes the directory afresh, and stop() removes it again.
        await server.start();
        expect(await queryOne(server, 'SELECT 1 AS one')).toEqual({ one: 1 });
        await server.stop();
        expect(existsSync(relocation?.dir ?? '')).toBe(false);
      } finally {
        await rm(privateDir, { recursive: true, force: true });
      }
    },
  );

  it.runIf(process.getuid?.() === 0)(
    'removes its temporary directory when node exits without calling stop()',
    async () => {
      const privateDir = await mkdtemp(path.join(tmpdir(), 'pump-monitor-private-'));
      try {
        const dir = path.join(privateDir, 'checkout', '.data', 'postgres');
        const child = spawnNode(`
          const { readFileSync } = await import('node:fs');
          const server = await embedded.startEmbeddedPostgres({ dataDir: ${JSON.stringify(dir)} });
          const pid = Number(readFileSync(server.dataDir + '/postmaster.pid', 'utf8').split('\\n')[0]);
          console.log(JSON.stringify({ pid, relocated: server.relocation?.dir }));
          process.exit(0);
        `);
        const { pid, relocated } = JSON.parse(await firstLine(child)) as { pid: number; relocated: string };
        expect(relocated.startsWith(path.join(tmpdir(), 'pump-monitor-pg-'))).toBe(true);
        expect((await exitOf(child)).code).toBe(0);

        expect(await eventuallyGone(pid)).toBe(true);
        const deadline = Date.now() + 20_000;
        while (existsSync(relocated) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
        expect(existsSync(relocated)).toBe(false);
      } finally {
        await rm(privateDir, { recursive: true, force: true });
      }
    },
  );
});
