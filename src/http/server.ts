import { readdirSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import helmet from '@fastify/helmet';
import Fastify, { type FastifyInstance } from 'fastify';
import type { StatusSurfaceConfig } from '../config/env.js';
import { requireBasicAuth } from './auth.js';
import { LiveFeed } from './live-feed.js';
import { type EngineSnapshot, pageModel, readiness, statusModel } from './status.js';

/** What the server serves: the engine's snapshot, and its metrics registry. */
export interface Served {
  units: {
    snapshot: EngineSnapshot;
    telemetry: { registry: { metrics(): Promise<string>; contentType: string } };
  };
}

const publicDir = resolve(dirname(fileURLToPath(import.meta.url)), '../../public');

export interface ServerOptions extends Partial<StatusSurfaceConfig> {
  /** How often /events sends a fresh model; 1 s. */
  eventsTickMs?: number;
  /** Most open connections at once; past it new ones are closed at once. EVENTS_MAX_CLIENTS + 100. */
  maxConnections?: number;
  /** A connection that neither sends nor receives for this long is closed; 30 s (tests shorten it). */
  idleTimeoutMs?: number;
}

/**
 * What the status page may load: its own scripts (uPlot as a classic script, the page's ES modules), its
 * own styles, the data: favicon, and fetch/EventSource to its own origin. Nothing inline, nothing
 * framed, no plugins, no forms. Not `upgrade-insecure-requests`: the surface is plain HTTP on a plant
 * network, and upgrading its own assets to https would break it.
 */
export const CONTENT_SECURITY_POLICY = {
  defaultSrc: ["'self'"],
  scriptSrc: ["'self'"],
  styleSrc: ["'self'"],
  imgSrc: ["'self'", 'data:'],
  connectSrc: ["'self'"],
  fontSrc: ["'self'"],
  objectSrc: ["'none'"],
  baseUri: ["'none'"],
  formAction: ["'none'"],
  frameAncestors: ["'none'"],
};

/** Open connections beyond the /events clients: page loads, polling, probes and scrapes. */
const CONNECTIONS_BESIDES_EVENTS = 100;

declare module 'fastify' {
  interface FastifyInstance {
    /** The /events fan-out, for tests: its client count and how many models it has built. */
    liveFeed: LiveFeed;
  }
}

const ASSET_TYPES: Record<string, string> = {
  js: 'text/javascript; charset=utf-8',
  css: 'text/css; charset=utf-8',
};

/**
 * The page's own assets (public/assets/*.js, *.css), read once. Only these names are ever served, so no
 * request path can reach another file.
 */
function loadAssets(): Map<string, { type: string; body: Buffer }> {
  const dir = resolve(publicDir, 'assets');
  const assets = new Map<string, { type: string; body: Buffer }>();
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const type = ASSET_TYPES[entry.name.split('.').pop() ?? ''];
    if (entry.isFile() && type)
      assets.set(entry.name, { type, body: readFileSync(resolve(dir, entry.name)) });
  }
  return assets;
}

/**
 * The HTTP surface on PORT: status page, health, readiness, status JSON, Prometheus metrics, live events.
 * With `auth`, everything but /healthz and /readyz needs HTTP Basic credentials.
 */
export async function buildServer(monitor: Served, opts: ServerOptions = {}): Promise<FastifyInstance> {
  const eventsMaxClients = opts.eventsMaxClients ?? 50;
  const idleTimeoutMs = opts.idleTimeoutMs ?? 30_000;
  const app = Fastify({
    logger: false,
    // An idle connection is closed: one that sends and receives nothing (an /events stream gets a frame
    // every second), a kept-alive one after 5 s between requests, a request not received whole in 30 s.
    connectionTimeout: idleTimeoutMs,
    keepAliveTimeout: Math.min(5_000, idleTimeoutMs),
    requestTimeout: 30_000,
  });
  app.server.maxConnections = opts.maxConnections ?? eventsMaxClients + CONNECTIONS_BESIDES_EVENTS;
  // First, so every answer has them: the page, assets, JSON, 401 challenges and 404s.
  await app.register(helmet, {
    contentSecurityPolicy: { useDefaults: false, directives: CONTENT_SECURITY_POLICY },
    frameguard: { action: 'deny' },
    // Plain HTTP on a plant network: a TLS proxy in front decides HSTS, not this surface.
    strictTransportSecurity: false,
  });
  if (opts.auth) await requireBasicAuth(app, opts.auth);
  const page = readFileSync(resolve(publicDir, 'index.html'), 'utf8');
  const assets = loadAssets();
  const vendor = createRequire(import.meta.url);
  const uplotJs = readFileSync(vendor.resolve('uplot/dist/uPlot.iife.min.js'));
  const uplotCss = readFileSync(vendor.resolve('uplot/dist/uPlot.min.css'));
  const feed = new LiveFeed({
    build: () => pageModel(monitor.units.snapshot),
    maxClients: eventsMaxClients,
    ...(opts.eventsTickMs === undefined ? {} : { tickMs: opts.eventsTickMs }),
  });
  app.decorate('liveFeed', feed);
  app.addHook('preClose', async () => feed.close());

  app.get('/', async (_req, reply) => reply.type('text/html; charset=utf-8').send(page));
  app.get('/assets/vendor/uPlot.iife.min.js', async (_req, reply) =>
    reply.type(ASSET_TYPES.js as string).send(uplotJs),
  );
  app.get('/assets/vendor/uPlot.min.css', async (_req, reply) =>
    reply.type(ASSET_TYPES.css as string).send(uplotCss),
  );
  app.get('/assets/:file', async (req, reply) => {
    const asset = assets.get((req.params as { file: string }).file);
    if (!asset) return reply.code(404).send({ error: 'not found' });
    return reply.type(asset.type).send(asset.body);
  });
  app.get('/healthz', { config: { open: true } }, async () => ({ status: 'ok' }));
  app.get('/readyz', { config: { open: true } }, async (_req, reply) => {
    const r = readiness(monitor.units.snapshot);
    return reply.code(r.ready ? 200 : 503).send({ ready: r.ready, reason: r.reason });
  });
  app.get('/status', async () => statusModel(monitor.units.snapshot));
  app.get('/api/view', async () => pageModel(monitor.units.snapshot));
  app.get('/metrics', async (_req, reply) => {
    const registry = monitor.units.telemetry.registry;
    return reply.type(registry.contentType).send(await registry.metrics());
  });
  app.get('/events', async (_req, reply) => {
    if (feed.full) {
      // The page falls back to polling /api/view and tries the stream again later.
      return reply
        .code(503)
        .header('retry-after', '30')
        .send({ error: `too many /events clients (at most ${feed.maxClients})` });
    }
    // helmet set its headers on the raw response: the hijacked stream carries them too.
    reply.hijack();
    feed.add(reply.raw);
  });
  return app;
}
