import { randomBytes } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort } from '../../src/tools/free-port.js';
import { runCli, spawnListener } from '../helpers/child.js';
import { type Harness, harness, insertTimestamp } from '../helpers/engine.js';
import { waitFor } from '../helpers/wait.js';

/**
 * A secret never reaches an output, on every error path: the password of DATABASE_URL (as written and as
 * URL-encoded), DB_PASSWORD, API_KEY and STATUS_AUTH's password are looked for in stdout, stderr, every
 * file LOG_FILE wrote, /status, /metrics, /api/view and the page, for an authentication failure, an
 * unreachable database, a credentialed backend URL, each operator command, and the fatal exit of
 * `listen` after its database password was changed under it. (TLS failures: tls-engine.test.ts.)
 */

// Characters a URL must encode, so both spellings can be looked for.
const DB_SECRET = `Pw!${randomBytes(6).toString('hex')}#/@:?`;
const WRONG_SECRET = `Wr0ng!${randomBytes(6).toString('hex')}%&`;
const API_SECRET = `api-${randomBytes(8).toString('hex')}`;
const STATUS_SECRET = `st-${randomBytes(8).toString('hex')}`;
const ROLE = `secret_role_${randomBytes(4).toString('hex')}`;

const forms = (s: string) => [s, encodeURIComponent(s), encodeURIComponent(s).toLowerCase()];
const SECRETS = [DB_SECRET, WRONG_SECRET, API_SECRET, STATUS_SECRET].flatMap(forms);

let h: Harness;
let logDir: string;

beforeAll(async () => {
  h = await harness('secrets');
  await h.admin.query(`CREATE ROLE ${ROLE} LOGIN SUPERUSER PASSWORD '${DB_SECRET.replace(/'/g, "''")}'`);
  logDir = mkdtempSync(join(tmpdir(), 'pump-monitor-secrets-'));
});

afterAll(async () => {
  await h?.admin.query(`DROP ROLE IF EXISTS ${ROLE}`).catch(() => {});
  await h?.close();
  if (logDir) rmSync(logDir, { recursive: true, force: true });
});

/** DATABASE_URL for the role, with `password` in it (URL-encoded, as an operator must write it). */
function urlWith(password: string, port?: number): string {
  const u = new URL(h.db.url);
  u.username = ROLE;
  u.password = encodeURIComponent(password);
  if (port !== undefined) u.port = String(port);
  return u.toString();
}

/** Everything the files under `dir` hold. */
function filesText(dir: string): string {
  let out = '';
  for (const e of readdirSync(dir, { withFileTypes: true, recursive: true }))
    if (e.isFile()) out += readFileSync(join(e.parentPath, e.name), 'utf8');
  return out;
}

function expectNoSecret(text: string, where: string): void {
  for (const s of SECRETS)
    expect(text.includes(s), `${where} holds a secret (${s.length} characters)`).toBe(false);
}

const COMMANDS: string[][] = [
  ['diagnose'],
  ['diagnose', '--json'],
  ['replay', '--pump', 'A', '--from', '2026-01-01', '--to', '2026-01-02'],
  ['replay', '--pump', 'A', '--from', '2026-01-01', '--to', '2026-01-02', '--json'],
  ['dead-letters', 'list'],
  ['dead-letters', 'list', '--json'],
  ['dead-letters', 'retry', '1'],
  ['dead-letters', 'discard', '1', '--json'],
  ['migrate'],
  ['listen'],
];

describe('secrets on every error path', { timeout: 180_000 }, () => {
  // One fault per wiring: what is said about the database does not depend on it, but what starts does.
  const faults: [string, () => Promise<string>, Record<string, string>][] = [
    ['a wrong password in DATABASE_URL', async () => urlWith(WRONG_SECRET), {}],
    [
      'an unreachable database (DATABASE_URL with the right password, plant-2026-03)',
      async () => urlWith(DB_SECRET, await freePort()),
      { PUMPS_PROFILE: 'plant-2026-03' },
    ],
  ];

  it.each(faults)(
    '%s: each operator command and listen fail without showing it',
    async (_name, url, profile) => {
      const databaseUrl = await url();
      // Three commands at a time: each is a process of its own, with its own log folder.
      const one = async (args: string[]) => {
        const dir = mkdtempSync(join(logDir, 'cmd-'));
        const run = await runCli(args, {
          ...profile,
          DATABASE_URL: databaseUrl,
          BASE_URL: h.backend.url,
          BASE_URL_B: `${h.backend.url}/sensores_b`,
          API_KEY: API_SECRET,
          STATUS_AUTH: `watcher:${STATUS_SECRET}`,
          LOG_FILE: join(dir, 'pump-monitor.log'),
          LOG_LEVEL: 'debug',
          LOG_FORMAT: 'json',
          PORT: '0',
          HOST: '127.0.0.1',
          MAX_INTENTOS_INICIAL: '2',
          TIEMPO_ESPERA_BASE: '0.05',
        });
        const what = args.join(' ');
        expect(run.signal, what).toBeNull();
        expect(run.code, `${what}:\n${run.stdout}${run.stderr}`).not.toBe(0);
        // It says why: the password refused, or nothing listening.
        expect(`${run.stdout}${run.stderr}`, what).toMatch(/password authentication failed|ECONNREFUSED/);
        expectNoSecret(run.stdout, `${what}: stdout`);
        expectNoSecret(run.stderr, `${what}: stderr`);
        expectNoSecret(filesText(dir), `${what}: LOG_FILE`);
      };
      for (let i = 0; i < COMMANDS.length; i += 3) await Promise.all(COMMANDS.slice(i, i + 3).map(one));
    },
  );

  it('a backend URL with credentials is refused without showing them', async () => {
    for (const name of ['BASE_URL', 'BASE_URL_B']) {
      const run = await runCli(['listen'], {
        DATABASE_URL: urlWith(DB_SECRET),
        BASE_URL: h.backend.url,
        BASE_URL_B: `${h.backend.url}/sensores_b`,
        [name]: `http://operator:${encodeURIComponent(STATUS_SECRET)}@127.0.0.1:9/sensores`,
        API_KEY: API_SECRET,
      });
      expect(run.code).not.toBe(0);
      expect(run.stderr + run.stdout).toContain(`${name}: got "http://(hidden)@127.0.0.1:9/sensores"`);
      expectNoSecret(run.stdout + run.stderr, `${name}: output`);
    }
  });

  it('listen whose password is changed under it: the authentication failures and the fatal exit show no secret, nor do its pages before', async () => {
    const port = String(await freePort());
    const dir = mkdtempSync(join(logDir, 'listen-'));
    const env = {
      DATABASE_URL: urlWith(DB_SECRET),
      BASE_URL: h.backend.url,
      BASE_URL_B: `${h.backend.url}/sensores_b`,
      API_KEY: API_SECRET,
      STATUS_AUTH: `watcher:${STATUS_SECRET}`,
      LOG_FILE: join(dir, 'pump-monitor.log'),
      LOG_LEVEL: 'debug',
      PORT: port,
      SETTLE_MS: '300',
      GROUP_EXPIRY_MS: '1500',
      HEARTBEAT_INTERVAL_MS: '300',
      HEARTBEAT_TIMEOUT_MS: '500',
      MAX_RECONEXIONES: '4',
      TIEMPO_ESPERA_BASE: '0.3',
      TIEMPO_ESPERA_MAX: '1',
    };
    // The backend refuses the key at first: the engine's errors about it are on its pages too.
    h.backend.behaviour = (r) => (r.path.endsWith('/predecir-bomba') ? { status: 503 } : undefined);
    const child = spawnListener(env);
    try {
      const auth = `Basic ${Buffer.from(`watcher:${STATUS_SECRET}`).toString('base64')}`;
      const get = async (path: string) => {
        const res = await fetch(`http://127.0.0.1:${port}${path}`, { headers: { authorization: auth } });
        return `${res.status} ${await res.text()}`;
      };
      await waitFor(
        'listen ready',
        async () => (await fetch(`http://127.0.0.1:${port}/readyz`).catch(() => undefined))?.status === 200,
        60_000,
      );
      await insertTimestamp(h.admin, h.pumps.A, '2026-03-01 08:00:00');
      await waitFor('a refused vector', () =>
        h.backend.requests.some((r) => r.path.endsWith('/predecir-bomba') && r.status === 503),
      );
      const pages: [string, string][] = [];
      for (const p of ['/status', '/metrics', '/api/view', '/']) pages.push([p, await get(p)]);

      // The password changes; every session of this process is ended, so each must log in again.
      await h.admin.query(`ALTER ROLE ${ROLE} PASSWORD '${WRONG_SECRET.replace(/'/g, "''")}'`);
      const status = JSON.parse((await get('/status')).slice(4)) as { replica: string };
      for (const name of ['pump-monitor', `pm-listen:${status.replica}`])
        await h.admin.query(
          `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
            WHERE datname = current_database() AND application_name = $1`,
          [name],
        );
      await h.admin.query(
        `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
          WHERE datname = current_database() AND application_name LIKE 'pm-lease:%' || $1`,
        [`:${status.replica}`],
      );
      // While it tries to log in again, its pages say so, and hold no secret.
      await waitFor('the LISTEN session lost', async () => {
        const s = await get('/status').catch(() => '');
        return s.startsWith('200') && (JSON.parse(s.slice(4)) as { state: string }).state !== 'listening';
      });
      for (const p of ['/status', '/metrics', '/api/view', '/']) {
        const text = await get(p).catch(() => '');
        if (text) pages.push([`${p} while failing`, text]);
      }
      const code = await child.exited;
      expect(code).toBe(1);
      const output = child.output.join('\n');
      expect(output).toMatch(/password authentication failed/);
      const logged = filesText(dir);
      expect(logged).toMatch(/password authentication failed/);
      expectNoSecret(output, 'stdout and stderr');
      expectNoSecret(logged, 'LOG_FILE');
      for (const [p, text] of pages) expectNoSecret(text, p);
      expect(pages.filter(([p]) => p.endsWith('while failing')).length).toBeGreaterThan(0);
    } finally {
      child.proc.kill('SIGKILL');
      h.backend.behaviour = () => undefined;
      await h.admin.query(`ALTER ROLE ${ROLE} PASSWORD '${DB_SECRET.replace(/'/g, "''")}'`);
    }
  });
});
