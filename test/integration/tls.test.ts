import { readFile } from 'node:fs/promises';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from '../../src/config/env.js';
import { clientConfig } from '../../src/store/db.js';
import type { EmbeddedPostgres } from '../../src/tools/postgres/embedded.js';
import { startTlsServer, type TestCertificates, type TlsServer } from '../helpers/tls-certs.js';

/**
 * A real PostgreSQL with TLS on, its server certificate (CN and SAN `localhost`) signed by a CA made with
 * openssl (test/helpers/tls-certs.ts), and a second, unrelated CA. The client settings come from the same
 * variables an operator sets (DB_SSLMODE, DB_SSLROOTCERT) through loadConfig.
 */

const SSL_QUERY = 'SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()';

let root: string;
let certs: TestCertificates;
let server: EmbeddedPostgres | undefined;
let tls: TlsServer;

beforeAll(async () => {
  tls = await startTlsServer();
  ({ server, certs } = tls);
  root = path.dirname(path.dirname(certs.ca));
});

afterAll(async () => {
  await tls?.stop();
});

function configFor(env: Record<string, string>) {
  const config = loadConfig(
    {
      DB_HOST: 'localhost',
      DB_PORT: String(server?.port),
      DB_NAME: 'postgres',
      DB_USER: 'postgres',
      DB_PASSWORD: tls.password,
      ...env,
    },
    { requireDatabase: true },
  );
  if (!config.database) throw new Error('no database configuration');
  return config.database;
}

/** Connects with the settings these variables produce and reports whether the session uses TLS. */
async function sessionUsesTls(env: Record<string, string>): Promise<boolean> {
  const client = new pg.Client(clientConfig(configFor(env), 'pump-monitor-tls-test'));
  client.on('error', () => {});
  try {
    await client.connect();
    const { rows } = await client.query<{ ssl: boolean }>(SSL_QUERY);
    return rows[0]?.ssl === true;
  } finally {
    await client.end().catch(() => {});
  }
}

async function connectError(env: Record<string, string>): Promise<Error & { code?: string }> {
  try {
    await sessionUsesTls(env);
  } catch (err) {
    return err as Error & { code?: string };
  }
  throw new Error('the connection was expected to be refused, but it succeeded');
}

describe('TLS to PostgreSQL (DB_SSLMODE, DB_SSLROOTCERT)', () => {
  it('verify-full with the right CA connects over TLS', async () => {
    await expect(sessionUsesTls({ DB_SSLMODE: 'verify-full', DB_SSLROOTCERT: certs.ca })).resolves.toBe(true);
  });

  it('verify-full with an unrelated CA is refused for the certificate', async () => {
    const err = await connectError({ DB_SSLMODE: 'verify-full', DB_SSLROOTCERT: certs.wrongCa });
    expect(err.message).toMatch(/certificate/i);
    expect(err.code).toMatch(/^(UNABLE_TO_VERIFY_LEAF_SIGNATURE|SELF_SIGNED_CERT_IN_CHAIN)$/);
  });

  it('verify-full with a host name the certificate does not name is refused', async () => {
    const err = await connectError({
      DB_HOST: '127.0.0.1',
      DB_SSLMODE: 'verify-full',
      DB_SSLROOTCERT: certs.ca,
    });
    expect(err.code).toBe('ERR_TLS_CERT_ALTNAME_INVALID');
    expect(err.message).toMatch(/does not match certificate's altnames/);
    expect(err.message).toContain('127.0.0.1');
  });

  it('verify-ca checks the chain but not the host name', async () => {
    await expect(
      sessionUsesTls({ DB_HOST: '127.0.0.1', DB_SSLMODE: 'verify-ca', DB_SSLROOTCERT: certs.ca }),
    ).resolves.toBe(true);
    const err = await connectError({
      DB_HOST: '127.0.0.1',
      DB_SSLMODE: 'verify-ca',
      DB_SSLROOTCERT: certs.wrongCa,
    });
    expect(err.message).toMatch(/certificate/i);
  });

  it('takes DB_SSLROOTCERT as the PEM text itself, with real or escaped newlines', async () => {
    const pem = await readFile(certs.ca, 'utf8');
    await expect(sessionUsesTls({ DB_SSLMODE: 'verify-full', DB_SSLROOTCERT: pem })).resolves.toBe(true);
    // A one-line .env value: the newlines written as \n.
    const oneLine = pem.trim().replace(/\n/g, '\\n');
    expect(oneLine).not.toContain('\n');
    await expect(sessionUsesTls({ DB_SSLMODE: 'verify-full', DB_SSLROOTCERT: oneLine })).resolves.toBe(true);
  });

  it('require encrypts without a CA', async () => {
    await expect(sessionUsesTls({ DB_SSLMODE: 'require' })).resolves.toBe(true);
  });

  it('disable connects in plain text', async () => {
    await expect(sessionUsesTls({ DB_SSLMODE: 'disable' })).resolves.toBe(false);
  });

  it('a missing CA, or one that cannot be read, is a one-line configuration error naming DB_SSLROOTCERT', () => {
    expect(() => configFor({ DB_SSLMODE: 'verify-full' })).toThrow(ConfigError);
    expect(() => configFor({ DB_SSLMODE: 'verify-full' })).toThrow(/DB_SSLROOTCERT/);
    const missing = path.join(root, 'no-such-ca.crt');
    expect(() => configFor({ DB_SSLMODE: 'verify-full', DB_SSLROOTCERT: missing })).toThrow(
      /^DB_SSLROOTCERT: got \(hidden\), expected a readable CA certificate file.*\(ENOENT\)$/,
    );
    // A directory (say, a secret mounted as a folder) is not read as a certificate either.
    expect(() => configFor({ DB_SSLMODE: 'verify-full', DB_SSLROOTCERT: path.dirname(certs.ca) })).toThrow(
      ConfigError,
    );
  });
});
