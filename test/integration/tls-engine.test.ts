import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config/env.js';
import { migrate } from '../../src/store/schema.js';
import { freePort } from '../../src/tools/free-port.js';
import { runCli, spawnListener } from '../helpers/child.js';
import { createTestDatabase, type TestDatabase } from '../helpers/db.js';
import { insertTimestamp } from '../helpers/engine.js';
import { FakeBackend } from '../helpers/fake-backend.js';
import { LOGBOOK_PATH } from '../helpers/spec-oracle.js';
import { startTlsServer, type TlsServer } from '../helpers/tls-certs.js';
import { waitFor } from '../helpers/wait.js';

/**
 * The engine's own sessions over TLS verify-full: a `pump-monitor listen` process against a PostgreSQL of
 * this file's own with ssl=on and a test CA (test/helpers/tls-certs.ts). The server reports, in
 * pg_stat_ssl, that every session the process opened (LISTEN, lease, pool, row reader) is encrypted; a
 * wrong CA or a host name the certificate does not name is refused at start-up with one clear line that
 * carries no password.
 */

let tls: TlsServer;
let admin: pg.Pool;

beforeAll(async () => {
  tls = await startTlsServer();
  admin = new pg.Pool({ connectionString: tls.server.url, max: 2 });
  admin.on('error', () => {});
});

afterAll(async () => {
  await admin?.end();
  await tls?.stop();
});

const API_KEY = 'tls-engine-key-5d1c';

function dbVars(db: TestDatabase, over: Record<string, string> = {}): Record<string, string> {
  return {
    DB_HOST: 'localhost',
    DB_PORT: String(tls.server.port),
    DB_NAME: db.name,
    DB_USER: 'postgres',
    DB_PASSWORD: tls.password,
    DB_SSLMODE: 'verify-full',
    DB_SSLROOTCERT: tls.certs.ca,
    ...over,
  };
}

interface Session {
  application_name: string;
  ssl: boolean | null;
  version: string | null;
}

/** Every session of `db` but the test's own, with what pg_stat_ssl says of it. */
async function sessionsOf(db: TestDatabase): Promise<Session[]> {
  const { rows } = await admin.query<Session>(
    `SELECT a.application_name, s.ssl, s.version
       FROM pg_stat_activity a LEFT JOIN pg_stat_ssl s ON s.pid = a.pid
      WHERE a.datname = $1 AND a.pid <> pg_backend_pid() AND a.backend_type = 'client backend'`,
    [db.name],
  );
  return rows;
}

const WIRINGS: [string, Record<string, string>][] = [
  ['the default wiring', {}],
  ['plant-2026-03 (pumps, shared tables and the logbook)', { PUMPS_PROFILE: 'plant-2026-03' }],
];

describe('the engine over TLS verify-full', { timeout: 150_000 }, () => {
  it.each(WIRINGS)('%s: every session of listen is encrypted, and readings flow', async (_name, profile) => {
    const db = await createTestDatabase('tls_engine', tls.server.url);
    const backend = await new FakeBackend({ pumps: loadConfig(profile).pumps, apiKey: API_KEY }).start();
    const env = {
      ...profile,
      ...dbVars(db),
      BASE_URL: backend.url,
      BASE_URL_B: `${backend.url}/sensores_b`,
      API_KEY,
      PORT: String(await freePort()),
      SETTLE_MS: '300',
      GROUP_EXPIRY_MS: '1500',
      LOG_LEVEL: 'warn',
    };
    const config = loadConfig(env, { requireDatabase: true, requireBackend: true });
    const setup = new pg.Client({ connectionString: db.url });
    await setup.connect();
    await migrate(setup, config);
    await setup.end();
    const child = spawnListener(env);
    try {
      await waitFor(
        'listen ready',
        async () =>
          (await fetch(`http://127.0.0.1:${env.PORT}/readyz`).catch(() => undefined))?.status === 200,
        60_000,
      );
      // Work for every kind of session: a timestamp of each pump (rows read, posts, the outbox), and a
      // logbook entry where the wiring has one.
      const pool = new pg.Pool({ connectionString: db.url, max: 2 });
      try {
        for (const p of config.pumps) await insertTimestamp(pool, p, '2026-03-01 10:00:00');
        for (const l of config.logbooks)
          for (const s of l.streams)
            await pool.query(
              `INSERT INTO ${s.table} (bitacora, tiempo_ejecucion) VALUES ('Ronda TLS', now())`,
            );
      } finally {
        await pool.end();
      }
      const unified = config.pumps.map((p) => `${p.pathPrefix}${p.unifiedPath}`);
      await waitFor(
        'a vector of every pump, and the logbook entries',
        () =>
          unified.every((u) => backend.answered(u).length === 1) &&
          backend.answered(LOGBOOK_PATH).length === config.logbooks.flatMap((l) => l.streams).length,
        60_000,
      );
      const sessions = await sessionsOf(db);
      const names = sessions.map((s) => s.application_name);
      // The kinds the engine opens: its LISTEN session, a lease session per lease group, and its pools.
      expect(
        names.some((n) => n.startsWith('pm-listen:')),
        names.join(', '),
      ).toBe(true);
      expect(
        names.some((n) => n.startsWith('pm-lease:')),
        names.join(', '),
      ).toBe(true);
      expect(
        names.some((n) => n === 'pump-monitor'),
        names.join(', '),
      ).toBe(true);
      expect(sessions.filter((s) => s.ssl !== true)).toEqual([]);
      expect(new Set(sessions.map((s) => s.version)).size).toBe(1);
      expect(sessions[0]?.version).toMatch(/^TLSv1\.[23]$/);
      child.proc.kill('SIGTERM');
      expect(await child.exited).toBe(0);
      expect(child.output.join('\n')).not.toContain(tls.password);
    } finally {
      child.proc.kill('SIGKILL');
      await backend.stop();
      await db.drop();
    }
  });

  const REFUSALS: [string, Record<string, string>, RegExp, RegExp][] = [
    [
      'an unrelated CA',
      { DB_SSLROOTCERT: 'wrong-ca' },
      /unable to verify the first certificate/,
      /check that DB_SSLROOTCERT holds the CA that signed the server's certificate/,
    ],
    [
      'a host name the certificate does not name',
      { DB_HOST: '127.0.0.1' },
      /IP: 127\.0\.0\.1 is not in the cert's list/,
      /DB_HOST must be a name the server's certificate holds/,
    ],
  ];

  it.each(REFUSALS)(
    '%s: listen and the operator commands refuse it in one clear line, no password',
    async (_n, over, why, fix) => {
      const db = await createTestDatabase('tls_refused', tls.server.url);
      try {
        const vars = dbVars(db, {
          ...over,
          ...(over.DB_SSLROOTCERT ? { DB_SSLROOTCERT: tls.certs.wrongCa } : {}),
        });
        const common = {
          ...vars,
          BASE_URL: 'http://127.0.0.1:9/sensores',
          BASE_URL_B: 'http://127.0.0.1:9/sensores_b',
          API_KEY,
          PORT: '0',
          HOST: '127.0.0.1',
          LOG_FORMAT: 'json',
          LOG_LEVEL: 'info',
          MAX_INTENTOS_INICIAL: '2',
          TIEMPO_ESPERA_BASE: '0.05',
        };
        for (const args of [['listen'], ['migrate'], ['dead-letters', 'list'], ['diagnose']]) {
          const run = await runCli(args, common, 60_000);
          const all = `${run.stdout}\n${run.stderr}`;
          const context = `${args.join(' ')}:\n${all}`;
          expect(run.signal, context).toBeNull();
          expect(run.code, context).not.toBe(0);
          expect(all, context).toMatch(why);
          // diagnose gives its own advice per check (src/operate/diagnose.ts), naming DB_SSLMODE.
          expect(all, context).toMatch(args[0] === 'diagnose' ? /DB_SSLMODE/ : fix);
          expect(all, context).not.toContain('database not ready');
          expect(all, context).not.toMatch(/\n\s+at /);
          expect(all, context).not.toContain(tls.password);
          expect(all, context).not.toContain(API_KEY);
        }
        // Nothing got in: the server saw no session of the refused client.
        expect(await sessionsOf(db)).toEqual([]);
      } finally {
        await db.drop();
      }
    },
  );
});
