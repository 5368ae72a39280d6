import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort } from '../../src/tools/free-port.js';
import { runCli } from '../helpers/child.js';
import { createTestDatabase, type TestDatabase } from '../helpers/db.js';

/**
 * Issue 19, "configuration that looks like success": every command, against a database that refuses the
 * password, a port where nothing listens, a port out of range or a database that does not exist, fails in
 * one line with a non-zero exit, names no secret and prints no stack.
 */

const WRONG_PASSWORD = 'wrong-pw-Zq81x';
const API_KEY = 'api-key-never-shown-93'; // a secret too: it must not appear either
/** Long enough for a slow, shared machine; a hang (the old DB_PORT=99999 listen) is killed at it. */
const KILL_AFTER_MS = 45_000;

let db: TestDatabase;
let target: { host: string; port: string; database: string; user: string };
let nothingListens: number;
let scratch: string;

beforeAll(async () => {
  db = await createTestDatabase('config_failures');
  const u = new URL(db.url);
  target = { host: u.hostname, port: u.port, database: db.name, user: decodeURIComponent(u.username) };
  nothingListens = await freePort();
  scratch = mkdtempSync(join(tmpdir(), 'pump-monitor-log-file-'));
});
afterAll(async () => {
  await db?.drop();
  if (scratch) rmSync(scratch, { recursive: true, force: true });
});

interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  /** Every non-empty output line, stdout then stderr. */
  lines: string[];
  ms: number;
}

async function cli(args: string[], env: Record<string, string>): Promise<Run> {
  const run = await runCli(
    args,
    {
      LOG_FORMAT: 'json',
      HOST: '127.0.0.1',
      PORT: '0',
      BASE_URL: 'http://127.0.0.1:9/sensores',
      BASE_URL_B: 'http://127.0.0.1:9/sensores_b',
      API_KEY,
      LOG_LEVEL: 'warn',
      ...env,
    },
    KILL_AFTER_MS,
  );
  const lines = `${run.stdout}\n${run.stderr}`.split('\n').filter((l) => l.trim() !== '');
  return { ...run, lines };
}

/** The database variables of the test server, with changes. */
function dbEnv(over: Partial<Record<'DB_PORT' | 'DB_NAME' | 'DB_PASSWORD', string>>): Record<string, string> {
  return {
    DB_HOST: target.host,
    DB_PORT: target.port,
    DB_NAME: target.database,
    DB_USER: target.user,
    DB_PASSWORD: WRONG_PASSWORD,
    ...over,
  };
}

const COMMANDS: [string, string[]][] = [
  ['dead-letters list', ['dead-letters', 'list']],
  ['dead-letters retry', ['dead-letters', 'retry', '1']],
  ['dead-letters discard', ['dead-letters', 'discard', '1']],
  ['replay', ['replay', '--pump', 'A', '--from', '2025-01-01', '--to', '2025-01-02']],
  ['migrate', ['migrate']],
  ['diagnose', ['diagnose']],
  ['listen', ['listen']],
  ['start', ['start']],
];

/** One line, a non-zero exit of the process itself (not our kill), no stack, no secret. */
function expectOneLineFailure(run: Run, what: string) {
  const context = `${what}:\n${run.lines.join('\n')}`;
  expect(run.signal, context).toBeNull();
  expect(run.code, context).not.toBe(0);
  expect(run.code, context).not.toBeNull();
  // diagnose is a report: one line per check, of which exactly one is about the database.
  const about =
    what === 'diagnose'
      ? run.lines.filter((l) => /postgres|DB_/i.test(l) && !/^pump-monitor diagnose:/.test(l))
      : run.lines;
  expect(about, context).toHaveLength(1);
  const all = `${run.stdout}${run.stderr}`;
  expect(all).not.toMatch(/\n\s+at /);
  expect(all).not.toContain(WRONG_PASSWORD);
  expect(all).not.toContain(API_KEY);
}

describe('a port out of range', () => {
  it.each(COMMANDS)('%s with DB_PORT=99999 refuses it in one line', async (_name, args) => {
    const run = await cli(args, dbEnv({ DB_PORT: '99999' }));
    expectOneLineFailure(run, args.join(' '));
    expect(run.lines.join('\n')).toContain('DB_PORT: got "99999", expected a port, an integer 1..65535');
  });
});

describe('a database that refuses the password', () => {
  it.each(COMMANDS)('%s fails in one line, never retried', async (_name, args) => {
    // Retries would show as more lines and take seconds each (TIEMPO_ESPERA_BASE=5).
    const run = await cli(args, { ...dbEnv({}), MAX_INTENTOS_INICIAL: '10', TIEMPO_ESPERA_BASE: '5' });
    expectOneLineFailure(run, args.join(' '));
    expect(run.lines.join('\n')).toMatch(/password authentication failed/);
    expect(run.ms).toBeLessThan(KILL_AFTER_MS);
  });
});

describe('a port where nothing listens', () => {
  it.each(COMMANDS)('%s fails in one line', async (_name, args) => {
    // listen and start retry a connection that may come back: once here, so the give-up line is the only one.
    const run = await cli(args, { ...dbEnv({ DB_PORT: String(nothingListens) }), MAX_INTENTOS_INICIAL: '1' });
    expectOneLineFailure(run, args.join(' '));
    expect(run.lines.join('\n')).toMatch(/ECONNREFUSED/);
  });
});

describe('a database that does not exist', () => {
  it.each(COMMANDS.filter(([name]) => name === 'listen' || name === 'start' || name === 'migrate'))(
    '%s ends in one line, never retried',
    async (_name, args) => {
      const run = await cli(args, {
        ...dbEnv({ DB_NAME: `${target.database}_missing`, DB_PASSWORD: new URL(db.url).password }),
        MAX_INTENTOS_INICIAL: '10',
        TIEMPO_ESPERA_BASE: '5',
      });
      expectOneLineFailure(run, args.join(' '));
      expect(run.lines[0]).toMatch(/does not exist/);
    },
  );
});

describe('LOG_FILE that cannot be written', () => {
  /** The right database, so nothing but the log file can fail. */
  const goodDb = () => ({ DATABASE_URL: db.url, MAX_INTENTOS_INICIAL: '1' });

  beforeAll(async () => {
    const migrated = await cli(['migrate'], goodDb());
    expect(migrated.code, migrated.stderr).toBe(0);
  });

  it.each([
    [
      'its folder is a file',
      () => {
        writeFileSync(join(scratch, 'a-file'), '');
        return join(scratch, 'a-file', 'x.log');
      },
    ],
    ['a path under /proc', () => '/proc/nope/x.log'],
  ])('%s: listen, start and migrate say so in one line and exit', async (_what, path) => {
    const file = path();
    // The commands that log (the operator commands print and write no log).
    for (const args of [['listen'], ['start'], ['migrate']]) {
      const run = await cli(args, { ...goodDb(), LOG_FILE: file });
      expectOneLineFailure(run, args.join(' '));
      expect(run.lines[0]).toContain(`LOG_FILE: cannot write "${file}"`);
      expect(run.ms).toBeLessThan(KILL_AFTER_MS);
    }
  });

  it('the rotated file it would write is a folder: one line, exit, no unhandled error', async () => {
    // pino-roll writes x.1.log next to LOG_FILE=x.log; a folder there fails only when the file is opened.
    mkdirSync(join(scratch, 'rotated.1.log'));
    const file = join(scratch, 'rotated.log');
    const run = await cli(['listen'], { ...goodDb(), LOG_FILE: file });
    expectOneLineFailure(run, 'listen');
    expect(run.code).toBe(2);
    expect(run.lines[0]).toContain(`LOG_FILE: cannot write "${file}"`);
    expect(run.lines[0]).toContain('EISDIR');
  });
});

describe("npm start's simulator settings", () => {
  it.each([
    ['SIMULATE_SCENARIO', 'bearing_failure', 'expected one of normal, bearing-failure, silent-sensor'],
    ['SIMULATE_RATE', 'fast', 'expected a number >= 0'],
    ['SIMULATE_RATE', '0', 'expected a number > 0 and <= 1000'],
    ['SIMULATE_MISSING', '2', 'expected a probability, 0..1'],
    ['SIMULATE_LATE', '-0.1', 'expected a number >= 0'],
    ['SIMULATE_LOGBOOK_EVERY', 'often', 'expected a number >= 0'],
  ])('%s=%s is refused in one line, exit 2, before anything starts', async (name, value, expected) => {
    const run = await cli(['start'], { [name]: value, PGDATA_DIR: join(scratch, 'never-created') });
    expectOneLineFailure(run, `start with ${name}=${value}`);
    expect(run.code).toBe(2);
    expect(run.lines.join('\n')).toContain(`${name}: got "${value}", ${expected}`);
    expect(existsSync(join(scratch, 'never-created')), 'no PostgreSQL data directory made').toBe(false);
  });
});
