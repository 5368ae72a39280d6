import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import Fastify, { type FastifyInstance } from 'fastify';
import type { Monitor } from '../engine/monitor.js';

const publicDir = resolve(dirname(fileURLToPath(import.meta.url)), '../../public');

/** Everything the status page draws, for one moment. */
export function pageModel(monitor: Monitor) {
  const now = Date.now();
  const status = monitor.status();
  const pumps = Object.entries(status.pumps).map(([id, summary]) => {
    const stats = monitor.telemetry.pump(id);
    return {
      id,
      summary,
      channels: [...stats.channels.values()].map((c) => ({
        channel: c.channel,
        field: c.field,
        description: c.description,
        unit: c.unit,
        readings: c.readings,
        last_seen_ms_ago: c.lastSeenAt === null ? null : now - c.lastSeenAt,
        rate_per_min: c.rate.perMinute(now),
        last_value: c.lastValue,
        last_class: c.lastClass,
        anomalies: c.anomalies,
      })),
      groups: monitor.openGroupsView(id, 20),
      predictions: stats.predictions.slice(-300),
    };
  });
  return {
    now,
    state: status.state,
    uptime_s: status.uptime_s,
    reconnects: status.reconnects,
    last_heartbeat_at: status.last_heartbeat_at,
    pumps,
    errors: monitor.telemetry.errors.slice(-20).reverse(),
  };
}

/** The HTTP surface on PORT: status page, health, readiness, status JSON, Prometheus metrics. */
export async function buildServer(monitor: Monitor): Promise<FastifyInstance> {
  const app = Fastify({ logger: false });
  const page = readFileSync(resolve(publicDir, 'index.html'), 'utf8');

  app.get('/', async (_req, reply) => reply.type('text/html; charset=utf-8').send(page));
  const vendor = createRequire(import.meta.url);
  const uplotJs = readFileSync(vendor.resolve('uplot/dist/uPlot.iife.min.js'));
  const uplotCss = readFileSync(vendor.resolve('uplot/dist/uPlot.min.css'));
  app.get('/assets/vendor/uPlot.iife.min.js', async (_req, reply) =>
    reply.type('text/javascript').send(uplotJs),
  );
  app.get('/assets/vendor/uPlot.min.css', async (_req, reply) => reply.type('text/css').send(uplotCss));
  app.get('/assets/:file', async (req, reply) => {
    const file = (req.params as { file: string }).file;
    if (!/^[\w.-]+\.(js|css)$/.test(file)) return reply.code(404).send({ error: 'not found' });
    try {
      const body = readFileSync(resolve(publicDir, 'assets', file));
      return reply.type(file.endsWith('.css') ? 'text/css' : 'text/javascript').send(body);
    } catch {
      return reply.code(404).send({ error: 'not found' });
    }
  });
  app.get('/healthz', async () => ({ status: 'ok' }));
  app.get('/readyz', async (_req, reply) => {
    const r = monitor.readiness();
    return reply.code(r.ready ? 200 : 503).send({ ready: r.ready, reason: r.reason });
  });
  app.get('/status', async () => monitor.status());
  app.get('/api/view', async () => pageModel(monitor));
  app.get('/metrics', async (_req, reply) => {
    const registry = monitor.telemetry.registry;
    return reply.type(registry.contentType).send(await registry.metrics());
  });
  app.get('/events', (req, reply) => {
    reply.hijack();
    reply.raw.writeHead(200, {
      'content-type': 'text/event-stream',
      'cache-control': 'no-cache',
      connection: 'keep-alive',
    });
    const send = () => reply.raw.write(`data: ${JSON.stringify(pageModel(monitor))}\n\n`);
    send();
    const timer = setInterval(send, 1_000);
    req.raw.on('close', () => clearInterval(timer));
  });
  return app;
}
