import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmod, chown, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from '../../src/config/env.js';
import { clientConfig } from '../../src/store/db.js';
import { type EmbeddedPostgres, startEmbeddedPostgres } from '../../src/tools/postgres/embedded.js';

/**
 * A real PostgreSQL with TLS on, its server certificate (CN and SAN `localhost`) signed by a CA this test
 * makes with openssl, and a second, unrelated CA. The client settings come from the same variables an
 * operator sets (DB_SSLMODE, DB_SSLROOTCERT) through loadConfig.
 */

const execFileAsync = promisify(execFile);
const PASSWORD = randomBytes(12).toString('hex');
const SSL_QUERY = 'SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()';

let root: string;
let certs: { ca: string; wrongCa: string; serverCert: string; serverKey: string };
let server: EmbeddedPostgres | undefined;

const CONFIG = `[req]
distinguished_name = dn
prompt = no

[dn]
CN = placeholder

[v3_ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash

[v3_server]
basicConstraints = CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid,issuer
`;

async function openssl(cwd: string, args: string[]): Promise<void> {
  await execFileAsync('openssl', args, { cwd });
}

/** A self-signed CA certificate and key named `<name>.crt` and `<name>.key` in `dir`. */
async function makeCa(dir: string, name: string, commonName: string): Promise<void> {
  await openssl(dir, [
    'req',
    '-x509',
    '-new',
    '-nodes',
    '-newkey',
    'rsa:2048',
    '-keyout',
    `${name}.key`,
    '-out',
    `${name}.crt`,
    '-days',
    '2',
    '-subj',
    `/CN=${commonName}`,
    '-config',
    'openssl.cnf',
    '-extensions',
    'v3_ca',
  ]);
}

async function makeCertificates(dir: string): Promise<typeof certs> {
  await writeFile(path.join(dir, 'openssl.cnf'), CONFIG);
  await makeCa(dir, 'ca', 'pump-monitor test CA');
  await makeCa(dir, 'wrong-ca', 'unrelated test CA');
  await openssl(dir, [
    'req',
    '-new',
    '-nodes',
    '-newkey',
    'rsa:2048',
    '-keyout',
    'server.key',
    '-out',
    'server.csr',
    '-subj',
    '/CN=localhost',
    '-config',
    'openssl.cnf',
  ]);
  await openssl(dir, [
    'x509',
    '-req',
    '-in',
    'server.csr',
    '-CA',
    'ca.crt',
    '-CAkey',
    'ca.key',
    '-set_serial',
    `0x${randomBytes(8).toString('hex')}`,
    '-days',
    '2',
    '-out',
    'server.crt',
    '-extfile',
    'openssl.cnf',
    '-extensions',
    'v3_server',
  ]);
  const serverKey = path.join(dir, 'server.key');
  // PostgreSQL refuses a key file that others can read; it must belong to the user the server runs as.
  await chmod(serverKey, 0o600);
  if (process.getuid?.() === 0) {
    const [uid, gid] = await Promise.all([
      execFileAsync('id', ['-u', 'postgres']),
      execFileAsync('id', ['-g', 'postgres']),
    ]);
    await chown(serverKey, Number(uid.stdout.trim()), Number(gid.stdout.trim()));
  }
  return {
    ca: path.join(dir, 'ca.crt'),
    wrongCa: path.join(dir, 'wrong-ca.crt'),
    serverCert: path.join(dir, 'server.crt'),
    serverKey,
  };
}

beforeAll(async () => {
  root = await mkdtemp(path.join(tmpdir(), 'pump-monitor-tls-'));
  // As root the server runs as the `postgres` user, which must be able to enter these directories.
  await chmod(root, 0o755);
  const certDir = path.join(root, 'certs');
  await mkdir(certDir, { mode: 0o755 });
  await chmod(certDir, 0o755);
  certs = await makeCertificates(certDir);
  server = await startEmbeddedPostgres({
    dataDir: path.join(root, 'data'),
    password: PASSWORD,
    postgresFlags: [
      '-c',
      'ssl=on',
      '-c',
      `ssl_cert_file=${certs.serverCert}`,
      '-c',
      `ssl_key_file=${certs.serverKey}`,
    ],
  });
});

afterAll(async () => {
  await server?.stop();
  if (root) await rm(root, { recursive: true, force: true });
});

function configFor(env: Record<string, string>) {
  const config = loadConfig(
    {
      DB_HOST: 'localhost',
      DB_PORT: String(server?.port),
      DB_NAME: 'postgres',
      DB_USER: 'postgres',
      DB_PASSWORD: PASSWORD,
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
