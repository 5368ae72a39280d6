import { Writable } from 'node:stream';
import type { FastifyInstance } from 'fastify';
// @ts-expect-error: the package ships no type declarations
import parsePrometheusTextFormat from 'parse-prometheus-text-format';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Running, runListeners, secretsOf } from '../../src/cli/runtime.js';
import { type Config, ConfigError, type DatabaseConfig, loadConfig } from '../../src/config/env.js';
import type { Monitor } from '../../src/engine/monitor.js';
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
let running: Running;
let app: FastifyInstance;
let monitor: Monitor;
const logLines: string[] = [];
const DB_PASSWORD = 'S3cret-Pa55word!';
const STATUS_PASSWORD = 'St4tus-Pa55word?';
const STATUS_AUTH = `watcher:${STATUS_PASSWORD}`;
const AUTHORIZATION = `Basic ${Buffer.from(STATUS_AUTH).toString('base64')}`;

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
    {
      ...testEnv(h.db, h.backend),
      DATABASE_URL: url.toString(),
      LOG_LEVEL: 'debug',
      HOST: '127.0.0.1',
      STATUS_AUTH,
      SHUTDOWN_TIMEOUT_MS: '1000',
    },
    { requireDatabase: true, requireBackend: true },
  ) as Config & { database: DatabaseConfig };
  // The CLI's own wiring: server with STATUS_AUTH, engine, and the logger's list of secrets.
  const secrets = secretsOf(config);
  expect(secrets).toEqual(expect.arrayContaining([API_KEY, DB_PASSWORD, STATUS_PASSWORD]));
  running = await runListeners(config, capturingLogger(secrets as string[]));
  monitor = running.monitor;
  app = running.server;
  await insertTimestamp(h.admin, h.pumps.B, '2025-03-01T00:00:00');
  await h.admin.query('SELECT pg_notify($1, $2)', ['canal_voltaje_barra_b', 'not json']);
  // The engine's own count, not the backend's: the metrics are updated once the engine has the answer.
  await waitFor('one B vector sent and one bad payload counted', () => {
    const b = monitor.status().pumps.B as { vectors_sent: number; readings_invalid: number } | undefined;
    return b?.vectors_sent === 1 && b.readings_invalid === 1;
  });
});

afterAll(async () => {
  await running?.stop();
  await h?.close();
});

describe('metrics', () => {
  it('/metrics parses as Prometheus text format and carries the engine counters', async () => {
    const res = await app.inject({
      method: 'GET',
      url: '/metrics',
      headers: { authorization: AUTHORIZATION },
    });
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
      const body = (
        await app.inject({ method: 'GET', url: '/metrics', headers: { authorization: AUTHORIZATION } })
      ).body;
      return /^pump_monitor_dead_letters_total\{pump="B",kind="notification"\} 1$/m.test(body);
    });
    const { rows } = await h.admin.query<{ n: number }>(
      "SELECT count(*)::int AS n FROM pump_monitor.dead_letters WHERE pump = 'B'",
    );
    expect(rows[0]?.n).toBe(1);
  });
});

describe('secrets', () => {
  it('no password, API key, STATUS_AUTH or credentialed URL reaches a log line, /status, the page, an error or the metrics', async () => {
    // Provoke the lines most likely to carry secrets: a backend refusing the key, a lost connection.
    h.backend.behaviour = () => ({ status: 401 });
    await insertTimestamp(h.admin, h.pumps.B, '2025-03-01T00:00:01');
    await waitFor('the 401 logged', () => logLines.some((l) => l.includes('401')));
    // Only this file's own LISTEN session: its database, its replica's session name.
    const { rows: ended } = await h.admin.query(
      `SELECT pg_terminate_backend(pid) AS ok FROM pg_stat_activity
        WHERE datname = current_database() AND application_name = $1`,
      [`pm-listen:${monitor.replicaId}`],
    );
    expect(ended).toEqual([{ ok: true }]);
    await waitFor(
      'reconnected',
      () => monitor.units.listener.counters().reconnects >= 1 && monitor.units.listener.listening,
    );
    h.backend.behaviour = () => undefined;

    // Every answer of the surface, with the right credentials and with wrong ones (status, headers, body).
    const answers: string[] = [];
    const wrong = [
      undefined,
      `Basic ${Buffer.from(`watcher:${STATUS_PASSWORD}!`).toString('base64')}`,
      `Basic ${Buffer.from(`intruder:${STATUS_PASSWORD}`).toString('base64')}`,
      `Basic ${STATUS_AUTH}`,
    ];
    for (const url of ['/', '/assets/main.js', '/status', '/api/view', '/readyz', '/healthz', '/metrics']) {
      for (const authorization of [AUTHORIZATION, ...wrong]) {
        const res = await app.inject({
          method: 'GET',
          url,
          headers: authorization === undefined ? {} : { authorization },
        });
        answers.push(`${res.statusCode} ${JSON.stringify(res.headers)} ${res.body}`);
      }
    }
    // The live feed, over a real socket (it never ends, so inject cannot read it).
    const ac = new AbortController();
    const events = await fetch(`${running.url}/events`, {
      headers: { authorization: AUTHORIZATION },
      signal: ac.signal,
    });
    const first = await events.body?.getReader().read();
    ac.abort();
    answers.push(Buffer.from(first?.value ?? new Uint8Array()).toString('utf8'));
    expect(answers.at(-1)).toMatch(/^data: \{/);

    const bodies = [...logLines, ...answers];
    expect(logLines.length).toBeGreaterThan(5);
    expect(logLines.some((l) => l.includes('status server listening'))).toBe(true);
    for (const secret of [
      API_KEY,
      DB_PASSWORD,
      encodeURIComponent(DB_PASSWORD),
      STATUS_PASSWORD,
      encodeURIComponent(STATUS_PASSWORD),
      AUTHORIZATION.slice('Basic '.length),
    ]) {
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
      [{ DATABASE_URL: 'postgres://u@h/db', STATUS_AUTH: `watcher${STATUS_PASSWORD}` }, 'STATUS_AUTH'],
      [{ DATABASE_URL: 'postgres://u@h/db', STATUS_AUTH: `watcher:` }, 'STATUS_AUTH'],
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
      expect(message).not.toContain(STATUS_PASSWORD);
      expect(message).not.toContain('watcher');
      expect(message.split('\n')).toHaveLength(1);
    }
  });
});
