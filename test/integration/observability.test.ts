import { Writable } from 'node:stream';
import type { FastifyInstance } from 'fastify';
// @ts-expect-error: the package ships no type declarations
import parsePrometheusTextFormat from 'parse-prometheus-text-format';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Config, ConfigError, type DatabaseConfig, loadConfig } from '../../src/config/env.js';
import { Monitor } from '../../src/engine/monitor.js';
import { buildServer } from '../../src/http/server.js';
import { loggerOptions } from '../../src/util/logger.js';
import { API_KEY, type Harness, harness, insertTimestamp, testEnv } from '../helpers/engine.js';
import { waitFor } from '../helpers/wait.js';

interface MetricFamily {
  name: string;
  type: string;
  metrics: {
    labels?: Record<string, string>;
    value?: string;
    buckets?: Record<string, string>;
    count?: string;
  }[];
}

let h: Harness;
let app: FastifyInstance;
let monitor: Monitor;
const logLines: string[] = [];
const DB_PASSWORD = 'S3cret-Pa55word!';

/** The CLI's logger options (redaction and the secret scrubber), writing into `logLines`. */
function capturingLogger(secrets: string[]) {
  const sink = new Writable({
    write(chunk, _enc, done) {
      logLines.push(...chunk.toString('utf8').split('\n').filter(Boolean));
      done();
    },
  });
  return pino(loggerOptions('debug', secrets), sink);
}

beforeAll(async () => {
  h = await harness('observe');
  // A role with a password that must never show up anywhere.
  await h.admin.query(`CREATE ROLE observer LOGIN SUPERUSER PASSWORD '${DB_PASSWORD}'`).catch(() => {});
  const url = new URL(h.db.url);
  url.username = 'observer';
  url.password = encodeURIComponent(DB_PASSWORD);
  const config = loadConfig(
    { ...testEnv(h.db, h.backend), DATABASE_URL: url.toString(), LOG_LEVEL: 'debug' },
    { requireDatabase: true, requireBackend: true },
  ) as Config & { database: DatabaseConfig };
  monitor = new Monitor({ config, logger: capturingLogger([API_KEY, DB_PASSWORD]) });
  await monitor.start();
  app = await buildServer(monitor);
  await insertTimestamp(h.admin, h.pumps.B, '2025-03-01T00:00:00');
  await h.admin.query('SELECT pg_notify($1, $2)', ['canal_voltaje_barra_b', 'not json']);
  // The engine's own count, not the backend's: the metrics are updated once the engine has the answer.
  await waitFor('one B vector sent and one bad payload counted', () => {
    const b = monitor.status().pumps.B as { vectors_sent: number; readings_invalid: number } | undefined;
    return b?.vectors_sent === 1 && b.readings_invalid === 1;
  });
});

afterAll(async () => {
  await monitor?.stop(1_000);
  await h?.close();
});

describe('metrics', () => {
  it('/metrics parses as Prometheus text format and carries the engine counters', async () => {
    const res = await app.inject({ method: 'GET', url: '/metrics' });
    expect(res.statusCode).toBe(200);
    expect(res.headers['content-type']).toContain('text/plain');
    const families = parsePrometheusTextFormat(res.body) as MetricFamily[];
    const byName = new Map(families.map((f) => [f.name, f]));
    const value = (name: string, labels: Record<string, string>) =>
      Number(
        byName.get(name)?.metrics.find((m) => Object.entries(labels).every(([k, v]) => m.labels?.[k] === v))
          ?.value ?? Number.NaN,
      );
    expect(
      value('pump_monitor_readings_received_total', { pump: 'B', channel: 'canal_voltaje_barra_b' }),
    ).toBe(1);
    expect(value('pump_monitor_readings_invalid_total', { pump: 'B', reason: 'not_json' })).toBe(1);
    expect(value('pump_monitor_vectors_total', { pump: 'B', outcome: 'sent' })).toBe(1);
    expect(
      value('pump_monitor_backend_responses_total', { pump: 'B', route: 'unified', status: '200' }),
    ).toBe(1);
    expect(value('pump_monitor_listening', {})).toBe(1);
    expect(byName.get('pump_monitor_delivery_latency_seconds')?.type).toBe('HISTOGRAM');
    // One delivered vector: one observation, counted in the +Inf bucket.
    const latency = byName.get('pump_monitor_delivery_latency_seconds')?.metrics ?? [];
    expect(latency.map((m) => m.buckets?.['+Inf'])).toContain('1');
    for (const name of [
      'pump_monitor_open_groups',
      'pump_monitor_outbox_depth',
      'pump_monitor_notification_queue_usage',
      'pump_monitor_catchup_rows_total',
      'pump_monitor_reconnects_total',
      'pump_monitor_heartbeat_latency_seconds',
    ]) {
      expect(byName.has(name), name).toBe(true);
    }
    // The vector above took at least its outbox INSERT through the pool.
    expect(value('pump_monitor_db_queries_total', {})).toBeGreaterThan(0);
    // What the alert rules in deploy/monitoring/ need: breaker state and catch-up activity.
    expect(value('pump_monitor_breaker_open', { pump: 'B' })).toBe(0);
    expect(value('pump_monitor_breaker_open', { pump: 'A' })).toBe(0);
    expect([0, 1]).toContain(value('pump_monitor_catchup_running', {}));
  });

  it('counts the bad payload as a dead letter once it is written', async () => {
    await waitFor('the dead letter counted', async () => {
      const body = (await app.inject({ method: 'GET', url: '/metrics' })).body;
      return /^pump_monitor_dead_letters_total\{pump="B",kind="notification"\} 1$/m.test(body);
    });
    const { rows } = await h.admin.query<{ n: number }>(
      "SELECT count(*)::int AS n FROM pump_monitor.dead_letters WHERE pump = 'B'",
    );
    expect(rows[0]?.n).toBe(1);
  });
});

describe('secrets', () => {
  it('no password, API key or credentialed URL reaches a log line, /status, the page or the metrics', async () => {
    // Provoke the lines most likely to carry secrets: a backend refusing the key, a lost connection.
    h.backend.behaviour = () => ({ status: 401 });
    await insertTimestamp(h.admin, h.pumps.B, '2025-03-01T00:00:01');
    await waitFor('the 401 logged', () => logLines.some((l) => l.includes('401')));
    await h.admin.query(
      "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name LIKE 'pm-listen:%'",
    );
    await waitFor('reconnected', () => monitor.listener.reconnects >= 1 && monitor.listener.listening);
    h.backend.behaviour = () => undefined;

    const bodies = [
      ...logLines,
      (await app.inject({ method: 'GET', url: '/status' })).body,
      (await app.inject({ method: 'GET', url: '/api/view' })).body,
      (await app.inject({ method: 'GET', url: '/' })).body,
      (await app.inject({ method: 'GET', url: '/readyz' })).body,
      (await app.inject({ method: 'GET', url: '/metrics' })).body,
    ];
    expect(logLines.length).toBeGreaterThan(5);
    for (const secret of [API_KEY, DB_PASSWORD, encodeURIComponent(DB_PASSWORD)]) {
      const leaks = bodies.filter((b) => b.includes(secret));
      expect(leaks, `leaked ${secret}`).toEqual([]);
    }
    expect(bodies.some((b) => /postgres(ql)?:\/\/[^/\s]*:[^@/\s]+@/.test(b))).toBe(false);
  });

  it('configuration errors name the variable but never echo a secret', () => {
    const cases: [Record<string, string>, string][] = [
      [{ DATABASE_URL: `mysql://u:${DB_PASSWORD}@h/db` }, 'DATABASE_URL'],
      [
        {
          DATABASE_URL: 'postgres://u@h/db',
          DB_SSLMODE: 'verify-full',
          DB_SSLROOTCERT: `/nope/${DB_PASSWORD}`,
        },
        'DB_SSLROOTCERT',
      ],
      [{ DB_HOST: 'h', DB_NAME: 'd', DB_USER: 'u', DB_PASSWORD, DB_PORT: 'x' }, 'DB_PORT'],
    ];
    for (const [env, variable] of cases) {
      let message = '';
      try {
        loadConfig(env, { requireDatabase: true });
      } catch (err) {
        expect(err).toBeInstanceOf(ConfigError);
        message = (err as Error).message;
      }
      expect(message.startsWith(`${variable}:`)).toBe(true);
      expect(message).not.toContain(DB_PASSWORD);
      expect(message.split('\n')).toHaveLength(1);
    }
  });
});
