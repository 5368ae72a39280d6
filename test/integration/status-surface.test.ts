import { readdirSync } from 'node:fs';
import { request } from 'node:http';
import type { AddressInfo } from 'node:net';
import { resolve } from 'node:path';
import { Writable } from 'node:stream';
import type { FastifyInstance } from 'fastify';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from '../../src/config/env.js';
import type { Monitor } from '../../src/engine/monitor.js';
import { credentialCheck, isLoopbackHost, warnIfOpen } from '../../src/http/auth.js';
import { buildServer } from '../../src/http/server.js';
import { type Harness, harness } from '../helpers/engine.js';
import { waitFor } from '../helpers/wait.js';

const USER = 'operator';
// A ':' inside the password is allowed: only the first one separates the user.
const PASSWORD = 'Pa55:word-of-the-st4tus-page';
const STATUS_AUTH = `${USER}:${PASSWORD}`;
const ASSETS = resolve(import.meta.dirname, '../../public/assets');

/** Every path the page, a script or Prometheus reads; each needs credentials when STATUS_AUTH is set. */
const PROTECTED = [
  '/',
  '/assets/app.css',
  '/assets/vendor/uPlot.iife.min.js',
  '/assets/vendor/uPlot.min.css',
  ...readdirSync(ASSETS)
    .filter((f) => f.endsWith('.js'))
    .map((f) => `/assets/${f}`),
  '/status',
  '/api/view',
  '/events',
  '/metrics',
  '/no-such-page',
];
const OPEN = ['/healthz', '/readyz'];

const basic = (userPass: string) => `Basic ${Buffer.from(userPass, 'utf8').toString('base64')}`;

let h: Harness;
let monitor: Monitor;
const servers: FastifyInstance[] = [];

/** A status server on a loopback port; closed after the file. */
async function serve(
  opts: Parameters<typeof buildServer>[1],
): Promise<{ app: FastifyInstance; url: string }> {
  const app = await buildServer(monitor, opts);
  servers.push(app);
  await app.listen({ port: 0, host: '127.0.0.1' });
  return { app, url: `http://127.0.0.1:${(app.server.address() as AddressInfo).port}` };
}

/** A GET; an event stream is read for its first bytes and then dropped. */
async function get(url: string, authorization?: string) {
  const ac = new AbortController();
  const res = await fetch(url, {
    headers: authorization === undefined ? {} : { authorization },
    signal: ac.signal,
  });
  let body = '';
  if (res.headers.get('content-type')?.startsWith('text/event-stream')) {
    const reader = res.body?.getReader();
    const first = await reader?.read();
    body = Buffer.from(first?.value ?? new Uint8Array()).toString('utf8');
    ac.abort();
  } else {
    body = await res.text();
  }
  return { status: res.status, headers: res.headers, body };
}

/** An open event stream that collects its `data:` frames. */
async function subscribe(url: string, authorization?: string) {
  const ac = new AbortController();
  const res = await fetch(`${url}/events`, {
    headers: authorization === undefined ? {} : { authorization },
    signal: ac.signal,
  });
  const frames: string[] = [];
  let buffer = '';
  const reading = (async () => {
    if (res.status !== 200 || !res.body) return;
    const reader = res.body.getReader();
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return;
        buffer += Buffer.from(value).toString('utf8');
        let end = buffer.indexOf('\n\n');
        while (end >= 0) {
          frames.push(buffer.slice(0, end).replace(/^data: /, ''));
          buffer = buffer.slice(end + 2);
          end = buffer.indexOf('\n\n');
        }
      }
    } catch {
      // aborted
    }
  })();
  return {
    status: res.status,
    res,
    frames,
    async close() {
      ac.abort();
      await reading;
    },
  };
}

beforeAll(async () => {
  h = await harness('surface');
  monitor = await h.startMonitor();
});

afterAll(async () => {
  for (const app of servers) await app.close().catch(() => {});
  await h?.close();
});

describe('STATUS_AUTH: HTTP Basic auth on the status surface', () => {
  it('refuses every protected route without the right credentials, with a Basic challenge', async () => {
    const auth = loadConfig({ STATUS_AUTH }).status.auth;
    expect(auth).toEqual({ user: USER, password: PASSWORD });
    const { url } = await serve({ auth });
    const wrong: [string, string | undefined][] = [
      ['no header', undefined],
      ['wrong password', basic(`${USER}:${PASSWORD}x`)],
      ['wrong user', basic(`admin:${PASSWORD}`)],
      ['the right password in the user', basic(`${PASSWORD}:${USER}`)],
      ['empty credentials', basic(':')],
      ['no colon', basic(`${USER}${PASSWORD.replaceAll(':', '')}`)],
      ['scheme only', 'Basic'],
      ['not base64', 'Basic !!!not-base64!!!'],
      ['another scheme', `Bearer ${Buffer.from(STATUS_AUTH).toString('base64')}`],
      ['the pair not encoded', `Basic ${STATUS_AUTH}`],
    ];
    for (const path of PROTECTED) {
      for (const [what, header] of wrong) {
        const res = await get(`${url}${path}`, header);
        expect(res.status, `${path} with ${what}`).toBe(401);
        expect(res.headers.get('www-authenticate'), `${path} with ${what}`).toMatch(
          /^Basic realm="pump-monitor"/,
        );
        expect(JSON.parse(res.body)).toEqual({ error: 'authentication required' });
      }
      const ok = await get(`${url}${path}`, basic(STATUS_AUTH));
      expect(ok.status, `${path} with the right credentials`).toBe(path === '/no-such-page' ? 404 : 200);
      expect(ok.headers.get('www-authenticate')).toBeNull();
    }
  });

  it('keeps /healthz and /readyz open for the orchestrator', async () => {
    const { url } = await serve({ auth: { user: USER, password: PASSWORD } });
    for (const path of OPEN) {
      expect((await get(`${url}${path}`)).status, path).toBe(200);
      expect((await get(`${url}${path}`, basic('x:y'))).status, path).toBe(200);
    }
  });

  it('without STATUS_AUTH the surface is open, as before', async () => {
    const config = loadConfig({});
    expect(config.status.auth).toBeUndefined();
    const { url } = await serve(config.status);
    for (const path of [...PROTECTED.filter((p) => p !== '/no-such-page'), ...OPEN]) {
      expect((await get(`${url}${path}`)).status, path).toBe(200);
    }
  });

  it('compares digests of equal length, user and password both', () => {
    const check = credentialCheck({ user: USER, password: PASSWORD });
    expect(check(USER, PASSWORD)).toBe(true);
    expect(check(USER, `${PASSWORD}x`)).toBe(false);
    expect(check(USER, '')).toBe(false);
    expect(check('', PASSWORD)).toBe(false);
    expect(check(`${USER}x`, PASSWORD)).toBe(false);
    expect(check('x'.repeat(10_000), 'y'.repeat(10_000))).toBe(false);
  });

  it('a malformed STATUS_AUTH is one line naming the variable, never echoing the value', () => {
    for (const value of [
      `${USER}${PASSWORD.replaceAll(':', '')}`,
      `:${PASSWORD}`,
      `${USER}:`,
      `${USER}\u0001:${PASSWORD}`,
    ]) {
      let message = '';
      try {
        loadConfig({ STATUS_AUTH: value });
      } catch (err) {
        expect(err).toBeInstanceOf(ConfigError);
        message = (err as Error).message;
      }
      expect(message.startsWith('STATUS_AUTH: got (hidden), expected user:password')).toBe(true);
      expect(message.split('\n')).toHaveLength(1);
      for (const part of [PASSWORD, USER, value]) expect(message).not.toContain(part);
    }
  });

  it('EVENTS_MAX_CLIENTS is a positive integer, 50 by default', () => {
    expect(loadConfig({}).status.eventsMaxClients).toBe(50);
    expect(loadConfig({ EVENTS_MAX_CLIENTS: '3' }).status.eventsMaxClients).toBe(3);
    for (const bad of ['0', '-1', '2.5', 'many']) {
      expect(() => loadConfig({ EVENTS_MAX_CLIENTS: bad })).toThrow(/^EVENTS_MAX_CLIENTS: got/);
    }
  });
});

/** A GET whose path goes out exactly as written (fetch would resolve `..` first). */
function rawGet(url: string, path: string): Promise<{ status: number; body: string }> {
  return new Promise((resolveGet, reject) => {
    const req = request(`${url}/`, { path, method: 'GET' }, (res) => {
      let body = '';
      res.on('data', (c: Buffer) => {
        body += c.toString('utf8');
      });
      res.on('end', () => resolveGet({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

describe('/assets', () => {
  it('serves every page module as JavaScript and the styles as CSS, and nothing else', async () => {
    const { url } = await serve({});
    const files = readdirSync(ASSETS);
    expect(files).toEqual(expect.arrayContaining(['main.js', 'i18n.js', 'live.js', 'chart.js', 'app.css']));
    for (const file of files) {
      const res = await get(`${url}/assets/${file}`);
      expect(res.status, file).toBe(200);
      expect(res.headers.get('content-type'), file).toBe(
        file.endsWith('.css') ? 'text/css; charset=utf-8' : 'text/javascript; charset=utf-8',
      );
    }
    // Each module's imports name files that are served.
    let imports = 0;
    for (const file of files.filter((f) => f.endsWith('.js'))) {
      const source = (await get(`${url}/assets/${file}`)).body;
      for (const [, spec] of source.matchAll(/^import .* from '(.+)';$/gm)) {
        expect(spec, `${file} imports ${spec}`).toMatch(/^\.\/[\w-]+\.js$/);
        expect((await get(`${url}/assets/${spec?.slice(2)}`)).status, `${file} imports ${spec}`).toBe(200);
        imports += 1;
      }
    }
    expect(imports).toBeGreaterThan(10);
    expect((await get(`${url}/assets/vendor/uPlot.iife.min.js`)).headers.get('content-type')).toBe(
      'text/javascript; charset=utf-8',
    );
    const page = (await get(`${url}/`)).body;
    expect(page).toContain('<script type="module" src="/assets/main.js"></script>');
    expect(page).toContain('<script src="/assets/vendor/uPlot.iife.min.js"></script>');
  });

  it('refuses paths outside public/assets, however they are spelled', async () => {
    const { url } = await serve({});
    for (const path of [
      '/assets/../package.json',
      '/assets/..%2Fpackage.json',
      '/assets/..%2F..%2Fpackage.json',
      '/assets/%2e%2e%2f%2e%2e%2fsrc%2fhttp%2fserver.ts',
      '/assets/..%5C..%5Cpackage.json',
      '/assets/%2Fetc%2Fpasswd',
      '/assets/index.html',
      '/assets/nope.js',
      '/assets/vendor/..%2F..%2Fpackage.json',
    ]) {
      const res = await rawGet(url, path);
      expect(res.status, path).toBe(404);
      expect(res.body, path).not.toMatch(/"name": "pump-monitor"|root:|import Fastify/);
    }
  });
});

describe('/events', () => {
  it('answers 503 past EVENTS_MAX_CLIENTS and takes a client again once one leaves', async () => {
    const { app, url } = await serve({ eventsMaxClients: 2 });
    const a = await subscribe(url);
    const b = await subscribe(url);
    expect([a.status, b.status]).toEqual([200, 200]);
    await waitFor('two clients counted', () => app.liveFeed.clientCount === 2);
    const c = await subscribe(url);
    expect(c.status).toBe(503);
    expect(c.res.headers.get('retry-after')).toBe('30');
    expect(await c.res.json()).toEqual({ error: 'too many /events clients (at most 2)' });
    await a.close();
    await waitFor('the closed client gone', () => app.liveFeed.clientCount === 1);
    const d = await subscribe(url);
    expect(d.status).toBe(200);
    await waitFor('d gets a frame', () => d.frames.length > 0);
    await Promise.all([b.close(), d.close()]);
    await waitFor('no clients left', () => app.liveFeed.clientCount === 0);
  });

  it('builds the page model once per tick, shared by every client', async () => {
    // A clock too slow to tick on its own: the test ticks it.
    const { app, url } = await serve({ eventsTickMs: 3_600_000 });
    const feed = app.liveFeed;
    const N = 6;
    const clients: Awaited<ReturnType<typeof subscribe>>[] = [];
    for (let i = 0; i < N; i++) clients.push(await subscribe(url));
    await waitFor('every client has its first frame', () => clients.every((c) => c.frames.length === 1));
    // The first client's connection built one; the others joined between ticks and got the same frame.
    expect(feed.modelsBuilt).toBe(1);
    for (let tick = 1; tick <= 3; tick++) {
      feed.tick();
      await waitFor(`tick ${tick} everywhere`, () => clients.every((c) => c.frames.length === tick + 1));
    }
    expect(feed.modelsBuilt).toBe(4);
    for (const c of clients) expect(c.frames).toEqual(clients[0]?.frames);
    const model = JSON.parse(clients[0]?.frames[3] ?? '{}') as { pumps: { id: string }[] };
    expect(model.pumps.map((p) => p.id)).toEqual(['A', 'B']);
    // /api/view builds its own, not the feed's.
    await get(`${url}/api/view`);
    expect(feed.modelsBuilt).toBe(4);
    await Promise.all(clients.map((c) => c.close()));
    await waitFor('no clients left', () => feed.clientCount === 0);
    feed.tick(); // nobody listens: nothing built
    expect(feed.modelsBuilt).toBe(4);
  });

  it('a closing server ends its streams', async () => {
    const { app, url } = await serve({});
    const a = await subscribe(url);
    await waitFor('a frame', () => a.frames.length > 0);
    await app.close();
    await a.close();
    expect(app.liveFeed.clientCount).toBe(0);
  });
});

describe('the open-surface warning', () => {
  function capture() {
    const lines: { level: number; msg: string; host?: string }[] = [];
    const sink = new Writable({
      write(chunk, _enc, done) {
        for (const l of chunk.toString('utf8').split('\n').filter(Boolean)) lines.push(JSON.parse(l));
        done();
      },
    });
    return { logger: pino({ level: 'info' }, sink), lines };
  }

  it('tells loopback addresses from the rest', () => {
    for (const host of ['127.0.0.1', '127.8.9.10', 'localhost', '::1', '[::1]', '::ffff:127.0.0.1']) {
      expect(isLoopbackHost(host), host).toBe(true);
    }
    for (const host of ['0.0.0.0', '::', '192.0.2.10', '10.1.2.3', 'fe80::1', 'status.plant.example']) {
      expect(isLoopbackHost(host), host).toBe(false);
    }
  });

  it('warns once on a non-loopback address without STATUS_AUTH, and only then', () => {
    const open = capture();
    expect(warnIfOpen(open.logger, '0.0.0.0', undefined)).toBe(true);
    open.logger.flush();
    expect(open.lines).toHaveLength(1);
    expect(open.lines[0]?.level).toBe(40);
    expect(open.lines[0]?.host).toBe('0.0.0.0');
    expect(open.lines[0]?.msg).toContain('STATUS_AUTH');

    const quiet = capture();
    expect(warnIfOpen(quiet.logger, '127.0.0.1', undefined)).toBe(false);
    expect(warnIfOpen(quiet.logger, '0.0.0.0', { user: USER, password: PASSWORD })).toBe(false);
    expect(quiet.lines).toEqual([]);
  });
});
