import { existsSync, readFileSync, rmSync } from 'node:fs';
import { chmod, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { ConfigError, type Env } from '../config/env.js';
import { isProcessRunning, processStartTime } from '../tools/postgres/processes.js';

/**
 * What `npm start` records, with nothing configured, for the operator commands run beside it: where its
 * embedded database and reference backend are. It holds no secret, only the files the secrets are in.
 */
export interface DemoState {
  /** The `pump-monitor start` process. */
  pid: number;
  /** That process's start time (/proc/<pid>/stat), so a later process reusing the pid is not taken for it. */
  pidStartTime?: string;
  startedAt: string;
  database: { host: string; port: number; database: string; user: string };
  /** Readable by its owner only (mode 600). */
  passwordFile: string;
  /** The backend base URL both pumps use. */
  backendUrl: string;
  /** The demo's generated API key, mode 600; absent when API_KEY came from the environment or .env. */
  apiKeyFile?: string;
  statusUrl: string;
  /** The cluster's directory in use, which may be a temporary one (see EmbeddedPostgres.relocation). */
  dataDir: string;
  /** The definitions the demo runs; absent in a file written before it was recorded. */
  wiring?: DemoWiring;
}

/** Which definitions `npm start` runs: a built-in profile, a folder, or (neither) the default pumps/. */
export interface DemoWiring {
  /** In words: "profile plant-2026-03", "folder /srv/pumps" or "default (pumps/a.json, pumps/b.json)". */
  name: string;
  /** PUMPS_PROFILE. */
  profile?: string;
  /** PUMPS_DIR, absolute. */
  folder?: string;
  /** PUMPS as given, when set. */
  selection?: string;
  pumps: string[];
  logbooks: string[];
}

export interface DemoFiles {
  /** The data directory `npm start` is asked for: PGDATA_DIR, by default ./.data/postgres. */
  dataDir: string;
  stateFile: string;
  passwordFile: string;
  apiKeyFile: string;
}

/** Where `npm start` keeps its files, resolved against the current directory as `start` does. */
export function demoFiles(env: Env = process.env): DemoFiles {
  const dataDir = path.resolve(env.PGDATA_DIR?.trim() || '.data/postgres');
  const dir = path.dirname(dataDir);
  return {
    dataDir,
    stateFile: path.join(dir, 'demo.json'),
    // startEmbeddedPostgres keeps the generated password there.
    passwordFile: `${dataDir}.password`,
    apiKeyFile: path.join(dir, 'demo-api-key'),
  };
}

export { processStartTime };

function isDemoAlive(state: DemoState): boolean {
  if (!Number.isInteger(state.pid) || state.pid <= 0 || !isProcessRunning(state.pid)) return false;
  const now = processStartTime(state.pid);
  return state.pidStartTime === undefined || now === undefined || now === state.pidStartTime;
}

/** Writes a secret to a file only its owner may read. */
export async function writeSecretFile(file: string, secret: string): Promise<void> {
  await writeFile(file, `${secret}\n`, { mode: 0o600 });
  await chmod(file, 0o600);
}

export async function writeDemoState(files: DemoFiles, state: DemoState): Promise<void> {
  await writeFile(files.stateFile, `${JSON.stringify(state, null, 2)}\n`, { mode: 0o644 });
}

/**
 * Removes the state file and the generated API key, unless a later start has written its own since.
 * Returns the files it removed.
 */
export async function removeDemoState(files: DemoFiles, pid = process.pid): Promise<string[]> {
  const current = readState(files.stateFile);
  if (current.state && current.state.pid !== pid) return [];
  const removed = [files.stateFile, files.apiKeyFile].filter((file) => existsSync(file));
  await rm(files.stateFile, { force: true });
  await rm(files.apiKeyFile, { force: true });
  return removed;
}

/** The same, synchronously, for an 'exit' handler. */
export function removeDemoStateNow(files: DemoFiles, pid = process.pid): void {
  const current = readState(files.stateFile);
  if (current.state && current.state.pid !== pid) return;
  rmSync(files.stateFile, { force: true });
  rmSync(files.apiKeyFile, { force: true });
}

function readState(file: string, shown = file): { state?: DemoState; problem?: string } {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    return { problem: code === 'ENOENT' ? `${shown} does not exist` : `${shown} cannot be read (${code})` };
  }
  try {
    const state = JSON.parse(text) as DemoState;
    if (typeof state.pid !== 'number' || typeof state.database?.port !== 'number') throw new Error();
    return { state };
  } catch {
    return { problem: `${shown} is not a state file written by npm start` };
  }
}

function readSecret(file: string, what: string): string {
  try {
    return readFileSync(file, 'utf8').trim();
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new ConfigError(
      `the running npm start keeps ${what} in ${file}, which cannot be read (${code}); run this as the user who ran npm start`,
    );
  }
}

/** True when the environment (or .env) names a database or a backend: the commands then use it as is. */
export function isConfigured(env: Env): boolean {
  return ['DATABASE_URL', 'DB_HOST', 'BASE_URL', 'BASE_URL_B'].some(
    (name) => (env[name] ?? '').trim() !== '',
  );
}

export type OperatorTarget =
  | { kind: 'configured'; env: Env }
  | { kind: 'demo'; env: Env; state: DemoState; stateFile: string };

/**
 * The environment an operator command (diagnose, dead-letters, replay, migrate, simulate) runs with. Whatever is configured
 * wins. With nothing configured, it is the `npm start` running from this directory: its database and
 * reference backend, read from the state file it writes, with the password and API key read from their
 * own files. With nothing configured and no `npm start` running, it throws a ConfigError saying so.
 */
export function resolveDemoTarget(env: Env = process.env): OperatorTarget {
  if (isConfigured(env)) return { kind: 'configured', env };
  const files = demoFiles(env);
  const shown = shellPath(files.stateFile);
  const { state, problem } = readState(files.stateFile, shown);
  const running = state && isDemoAlive(state);
  if (!state || !running) {
    const why = state ? `${shown} names process ${state.pid}, which is no longer running` : problem;
    throw new ConfigError(
      `nothing is configured (no DB_HOST, DATABASE_URL or BASE_URL in the environment or .env) and no npm start is running from here (${why}); ` +
        'start the demo with npm start, or configure a plant: cp .env.example .env and set DB_*, BASE_URL, BASE_URL_B and API_KEY',
    );
  }
  const apiKey = state.apiKeyFile ? readSecret(state.apiKeyFile, 'its API key') : env.API_KEY;
  return {
    kind: 'demo',
    state,
    stateFile: files.stateFile,
    env: {
      ...env,
      DATABASE_URL: undefined,
      DB_HOST: state.database.host,
      DB_PORT: String(state.database.port),
      DB_NAME: state.database.database,
      DB_USER: state.database.user,
      DB_PASSWORD: readSecret(state.passwordFile, 'the database password'),
      DB_SSLMODE: 'disable',
      BASE_URL: state.backendUrl,
      BASE_URL_B: state.backendUrl,
      API_KEY: apiKey,
      ...wiringEnv(env, state.wiring),
    },
  };
}

/** The demo's definitions, unless the environment chooses its own (PUMPS_PROFILE, PUMPS_DIR or PUMPS). */
function wiringEnv(env: Env, wiring: DemoWiring | undefined): Env {
  if (!wiring) return {};
  const chosen = ['PUMPS_PROFILE', 'PUMPS_DIR', 'PUMPS'].some((name) => (env[name] ?? '').trim() !== '');
  if (chosen) return {};
  return {
    ...(wiring.profile ? { PUMPS_PROFILE: wiring.profile } : {}),
    ...(wiring.folder ? { PUMPS_DIR: wiring.folder } : {}),
    ...(wiring.selection ? { PUMPS: wiring.selection } : {}),
  };
}

/** A path for a command line to paste: relative when under the current directory, quoted when needed. */
export function shellPath(file: string): string {
  const relative = path.relative(process.cwd(), file);
  const shown = relative && !relative.startsWith('..') && !path.isAbsolute(relative) ? relative : file;
  return /^[\w./+-]+$/.test(shown) ? shown : `'${shown.replace(/'/g, `'\\''`)}'`;
}
