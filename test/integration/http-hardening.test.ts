import { readdirSync } from 'node:fs';
import { type AddressInfo, connect, type Socket } from 'node:net';
import { resolve } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Monitor } from '../../src/engine/monitor.js';
import { buildServer } from '../../src/http/server.js';
import { type Harness, harness } from '../helpers/engine.js';
import { waitFor } from '../helpers/wait.js';

/** Issue 19, "the status surface": security headers on every answer, and a cap on open connections. */

const ASSETS = resolve(import.meta.dirname, '../../public/assets');
const PATHS = [
  '/',
  '/assets/vendor/uPlot.iife.min.js',
  '/assets/vendor/uPlot.min.css',
  ...readdirSync(ASSETS).map((f) => `/assets/${f}`),
  '/status',
  '/api/view',
  '/metrics',
  '/healthz',
  '/readyz',
  '/no-such-page',
];

let h: Harness;
let monitor: Monitor;
const servers: FastifyInstance[] = [];
const sockets: Socket[] = [];

async function serve(
  opts: Parameters<typeof buildServer>[1],
): Promise<{ app: FastifyInstance; port: number }> {
  const app = await buildServer(monitor, opts);
  servers.push(app);
  await app.listen({ port: 0, host: '127.0.0.1' });
  return { app, port: (app.server.address() as AddressInfo).port };
}

/** A TCP connection to the server that sends nothing. */
function idle(port: number): Promise<Socket> {
  return new Promise((resolveSocket, reject) => {
    const s = connect({ host: '127.0.0.1', port }, () => resolveSocket(s));
    s.once('error', reject);
    sockets.push(s);
  });
}

beforeAll(async () => {
  h = await harness('http_hardening');
  monitor = await h.startMonitor();
});
afterAll(async () => {
  for (const s of sockets) s.destroy();
  for (const app of servers) await app.close();
  await h?.close();
});

function expectHardened(headers: Headers, what: string) {
  expect(headers.get('x-content-type-options'), what).toBe('nosniff');
  expect(headers.get('x-frame-options'), what).toBe('DENY');
  const csp = headers.get('content-security-policy') ?? '';
  expect(csp, what).toContain("default-src 'self'");
  expect(csp, what).toContain("script-src 'self'");
  expect(csp, what).toContain("connect-src 'self'");
  expect(csp, what).toContain("frame-ancestors 'none'");
  expect(csp, what).toContain("object-src 'none'");
  expect(csp, what).not.toContain('unsafe-inline');
  expect(csp, what).not.toContain('unsafe-eval');
  expect(csp, what).not.toContain('upgrade-insecure-requests');
}

describe('security headers', () => {
  it('every answer, the page, assets, JSON, 404, the 401 challenge and the event stream, carries them', async () => {
    const { port } = await serve({});
    const base = `http://127.0.0.1:${port}`;
    for (const path of PATHS) {
      const res = await fetch(`${base}${path}`);
      await res.arrayBuffer();
      expectHardened(res.headers, path);
    }
    const ac = new AbortController();
    const events = await fetch(`${base}/events`, { signal: ac.signal });
    expect(events.headers.get('content-type')).toBe('text/event-stream');
    expectHardened(events.headers, '/events');
    ac.abort();

    const locked = await serve({ auth: { user: 'u', password: 'hardening-pw' } });
    const challenged = await fetch(`http://127.0.0.1:${locked.port}/`);
    expect(challenged.status).toBe(401);
    await challenged.arrayBuffer();
    expectHardened(challenged.headers, '401');
  });
});

describe('open connections', () => {
  it('past the cap a new connection is closed at once; a freed one lets the next in', async () => {
    const { app, port } = await serve({ maxConnections: 3 });
    expect(app.server.maxConnections).toBe(3);
    const held = [await idle(port), await idle(port), await idle(port)];
    await waitFor('three connections open', async () => (await connections(app)) === 3);
    await expect(fetch(`http://127.0.0.1:${port}/healthz`)).rejects.toThrow();
    held[0]?.destroy();
    await waitFor('one connection freed', async () => (await connections(app)) === 2);
    const res = await fetch(`http://127.0.0.1:${port}/healthz`);
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ status: 'ok' });
  });

  it('the default cap leaves room for every /events client and more', async () => {
    const { app } = await serve({ eventsMaxClients: 7 });
    expect(app.server.maxConnections).toBe(107);
  });

  it('a connection that sends nothing is closed', async () => {
    const { port } = await serve({ idleTimeoutMs: 300 });
    const s = await idle(port);
    const closed = new Promise<void>((r) => s.once('close', () => r()));
    const bounded = new Promise<'open'>((r) => setTimeout(() => r('open'), 20_000).unref());
    expect(await Promise.race([closed.then(() => 'closed' as const), bounded])).toBe('closed');
  });
});

function connections(app: FastifyInstance): Promise<number> {
  return new Promise((r, reject) => app.server.getConnections((err, n) => (err ? reject(err) : r(n))));
}
