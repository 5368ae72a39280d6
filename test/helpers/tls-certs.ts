import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmod, chown, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { type EmbeddedPostgres, startEmbeddedPostgres } from '../../src/tools/postgres/embedded.js';

/**
 * Certificates made with openssl for TLS tests: a test CA, a server certificate (CN and SAN `localhost`)
 * it signs, and a second, unrelated CA. `startTlsServer` runs a PostgreSQL of a test file's own with TLS on.
 */

const execFileAsync = promisify(execFile);

export interface TestCertificates {
  ca: string;
  wrongCa: string;
  serverCert: string;
  serverKey: string;
}

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

/** A CA, a server certificate for `localhost` signed by it, and an unrelated CA, in `dir`. */
export async function makeCertificates(dir: string): Promise<TestCertificates> {
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

export interface TlsServer {
  server: EmbeddedPostgres;
  certs: TestCertificates;
  /** The superuser's password. */
  password: string;
  stop(): Promise<void>;
}

/** A PostgreSQL with ssl=on and a password, its certificate signed by a test CA; stop() removes it all. */
export async function startTlsServer(): Promise<TlsServer> {
  const root = await mkdtemp(path.join(tmpdir(), 'pump-monitor-tls-'));
  // As root the server runs as the `postgres` user, which must be able to enter these directories.
  await chmod(root, 0o755);
  try {
    const certDir = path.join(root, 'certs');
    await mkdir(certDir, { mode: 0o755 });
    await chmod(certDir, 0o755);
    const certs = await makeCertificates(certDir);
    const password = randomBytes(12).toString('hex');
    const server = await startEmbeddedPostgres({
      dataDir: path.join(root, 'data'),
      password,
      postgresFlags: [
        '-c',
        'ssl=on',
        '-c',
        `ssl_cert_file=${certs.serverCert}`,
        '-c',
        `ssl_key_file=${certs.serverKey}`,
      ],
    });
    return {
      server,
      certs,
      password,
      async stop() {
        try {
          await server.stop();
        } finally {
          await rm(root, { recursive: true, force: true });
        }
      },
    };
  } catch (err) {
    await rm(root, { recursive: true, force: true });
    throw err;
  }
}
