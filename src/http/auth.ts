import { createHash, timingSafeEqual } from 'node:crypto';
import { BlockList, isIP } from 'node:net';
import basicAuth from '@fastify/basic-auth';
import type { FastifyInstance, onRequestHookHandler } from 'fastify';
import type { Logger } from 'pino';

export interface Credentials {
  user: string;
  password: string;
}

declare module 'fastify' {
  interface FastifyContextConfig {
    /** Answered without credentials even when STATUS_AUTH is set (/healthz, /readyz). */
    open?: boolean;
  }
}

export const REALM = 'pump-monitor';

const digest = (s: string) => createHash('sha256').update(s, 'utf8').digest();

/**
 * A check of a user and password against `expected` that takes the same time whatever is given: both
 * sides are hashed to equal-length digests, compared with timingSafeEqual, user and password both always.
 */
export function credentialCheck(expected: Credentials): (user: string, password: string) => boolean {
  const user = digest(expected.user);
  const password = digest(expected.password);
  return (u, p) => {
    const userOk = timingSafeEqual(digest(u), user);
    const passwordOk = timingSafeEqual(digest(p), password);
    return userOk && passwordOk;
  };
}

/**
 * HTTP Basic auth on every route of `app` except those with `config: { open: true }`, and on unknown
 * paths. A refusal is 401 with `WWW-Authenticate: Basic realm="pump-monitor"`, the same body whatever
 * was wrong, and never a word of what was sent.
 */
export async function requireBasicAuth(app: FastifyInstance, expected: Credentials): Promise<void> {
  const check = credentialCheck(expected);
  await app.register(basicAuth, {
    authenticate: { realm: REALM },
    async validate(user, password) {
      if (!check(user, password)) throw new Error('wrong credentials');
    },
  });
  const guard = app.basicAuth as onRequestHookHandler;
  app.addHook('onRequest', function (req, reply, done) {
    if (req.routeOptions.config?.open === true) return done();
    guard.call(this, req, reply, done);
  });
  app.setErrorHandler((err: { statusCode?: number }, _req, reply) => {
    if (err.statusCode === 401) return reply.code(401).send({ error: 'authentication required' });
    return reply.send(err);
  });
}

const loopback = new BlockList();
loopback.addSubnet('127.0.0.0', 8, 'ipv4');
loopback.addAddress('::1', 'ipv6');

/** Whether `host` (HOST) binds only this machine's loopback interface. */
export function isLoopbackHost(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, '');
  if (h === 'localhost') return true;
  const v4mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(h)?.[1];
  if (v4mapped) return loopback.check(v4mapped, 'ipv4');
  const family = isIP(h);
  if (family === 0) return false; // a name other than localhost may resolve to anything
  return loopback.check(h, family === 4 ? 'ipv4' : 'ipv6');
}

/** One warning when the surface is reachable from the network with no credentials. True when it warned. */
export function warnIfOpen(logger: Logger, host: string, auth: Credentials | undefined): boolean {
  if (auth !== undefined || isLoopbackHost(host)) return false;
  logger.warn(
    { host },
    'the status surface (page, /status, /events, /metrics) is open to the network without credentials: set STATUS_AUTH=user:password, or HOST=127.0.0.1',
  );
  return true;
}
