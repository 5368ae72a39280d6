import { randomBytes } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import pg from 'pg';
import { Agent, request } from 'undici';
import { type Config, type DatabaseConfig, describeDatabase, type PumpConfig } from '../config/env.js';
import type { SensorDefinition } from '../config/pumps.js';
import { passedCheckpoints } from '../store/checkpoints.js';
import { clientConfig, describePgError, quoteIdent } from '../store/db.js';
import { engineTableStats } from '../store/retention.js';
import { missingTables } from '../store/sensor-rows.js';

/** One line of the diagnosis. */
export interface Check {
  name: string;
  ok: boolean;
  detail: string;
  /** How to fix it; set on failures. */
  hint?: string;
  /** How long the check took, when timing means something (connect, round trip, HTTP). */
  ms?: number;
}

export interface DiagnoseOptions {
  /** Overall wait for the test notifications, and the timeout of each backend request. Default 5 s. */
  timeoutMs?: number;
}

type DiagnoseConfig = Config & { database: DatabaseConfig };

interface Channel {
  pump: PumpConfig;
  sensor: SensorDefinition;
}

const DEFAULT_TIMEOUT_MS = 5_000;
/** Above this share of the notification queue in use, a listener is not keeping up. */
const QUEUE_LIMIT = 0.5;

const DIAGNOSTIC_NOTE =
  'running listeners count each diagnostic payload as one invalid reading (bad_id_sensor) and keep it as a dead letter; that is expected';

const DB_HINT =
  'check DB_HOST, DB_PORT, DB_USER, DB_PASSWORD and DB_SSLMODE (or DATABASE_URL), and that PostgreSQL accepts connections from here';

const round = (ms: number) => Math.round(ms * 10) / 10;

function elapsed(since: number): number {
  return round(performance.now() - since);
}

/** Names a channel's check: the kind, then pump id and channel or table (`trigger A/canal_x`). */
function label(kind: string, pump: PumpConfig, what: string): string {
  return `${kind} ${pump.id}/${what}`;
}

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/** True when `text` holds `name` as a whole identifier (not as part of a longer one). */
export function mentionsIdentifier(text: string, name: string): boolean {
  return new RegExp(`(^|[^A-Za-z0-9_$])${escapeRegExp(name)}([^A-Za-z0-9_$]|$)`).test(text);
}

/** Splits pg_trigger.tgargs (NUL-terminated strings) into the trigger's arguments. */
export function triggerArgs(raw: Buffer | string | null, count: number): string[] {
  if (raw === null || count === 0) return [];
  let text: string;
  if (Buffer.isBuffer(raw)) {
    text = raw.toString('utf8');
  } else if (raw.startsWith('\\x')) {
    text = Buffer.from(raw.slice(2), 'hex').toString('utf8');
  } else {
    text = raw;
  }
  return text.split('\0').slice(0, count);
}

/** Replaces every occurrence of a secret; a last line of defence, the checks never put one in. */
function redact(checks: Check[], secrets: (string | undefined)[]): Check[] {
  const hidden = secrets.filter((s): s is string => typeof s === 'string' && s.length >= 4);
  if (hidden.length === 0) return checks;
  const clean = (s: string) => hidden.reduce((acc, secret) => acc.split(secret).join('***'), s);
  return checks.map((c) => {
    const out: Check = { ...c, name: clean(c.name), detail: clean(c.detail) };
    if (c.hint !== undefined) out.hint = clean(c.hint);
    return out;
  });
}

interface TriggerRow {
  name: string;
  fn: string;
  enabled: string;
  type: number;
  src: string | null;
  args: Buffer | string | null;
  nargs: number;
}

interface ChannelSchema {
  table: Check;
  trigger: Check;
}

async function checkChannelSchema(client: pg.Client, { pump, sensor }: Channel): Promise<ChannelSchema> {
  const tableName = label('table', pump, sensor.table);
  const triggerName = label('trigger', pump, sensor.channel);
  const createHint = `run pump-monitor migrate to create table ${sensor.table} with its trigger (or create the plant's own table)`;
  const { rows } = await client.query<{ oid: number | null; shown: string | null }>(
    'SELECT to_regclass($1)::oid AS oid, to_regclass($1)::text AS shown',
    [quoteIdent(sensor.table)],
  );
  const oid = rows[0]?.oid ?? null;
  if (oid === null) {
    return {
      table: { name: tableName, ok: false, detail: `table ${sensor.table} does not exist`, hint: createHint },
      trigger: {
        name: triggerName,
        ok: false,
        detail: `no table ${sensor.table}, so nothing notifies ${sensor.channel}`,
        hint: createHint,
      },
    };
  }
  const table: Check = {
    name: tableName,
    ok: true,
    detail: `table ${rows[0]?.shown ?? sensor.table} exists`,
  };
  const { rows: triggers } = await client.query<TriggerRow>(
    `SELECT t.tgname AS name, t.tgfoid::regproc::text AS fn, t.tgenabled AS enabled, t.tgtype::int AS type,
            p.prosrc AS src, t.tgargs AS args, t.tgnargs::int AS nargs
       FROM pg_trigger t JOIN pg_proc p ON p.oid = t.tgfoid
      WHERE t.tgrelid = $1 AND NOT t.tgisinternal
      ORDER BY t.tgname`,
    [oid],
  );
  const notifying = triggers.filter(
    (t) =>
      mentionsIdentifier(t.src ?? '', sensor.channel) ||
      triggerArgs(t.args, t.nargs).some((a) => mentionsIdentifier(a, sensor.channel)),
  );
  // 'O' fires in normal sessions and 'A' always; 'D' is disabled and 'R' fires only on replication.
  const enabled = notifying.filter((t) => t.enabled === 'O' || t.enabled === 'A');
  // tgtype bit 4 is INSERT; bit 1 is FOR EACH ROW (a statement trigger has no row to send).
  const onInsert = enabled.filter((t) => (t.type & 4) !== 0 && (t.type & 1) !== 0);
  const describe = (t: TriggerRow) => `${t.name} (${t.fn})`;
  if (onInsert.length > 0) {
    const also =
      onInsert.length > 1 ? '; more than one notifies, the engine deduplicates by (table, id)' : '';
    return {
      table,
      trigger: {
        name: triggerName,
        ok: true,
        detail: `${sensor.table}: ${onInsert.map(describe).join(', ')} notifies ${sensor.channel}${also}`,
      },
    };
  }
  let detail: string;
  let hint = `run pump-monitor migrate to install trigger pump_monitor_notify on ${sensor.table} (or create the plant trigger that notifies ${sensor.channel})`;
  if (enabled.length > 0) {
    detail = `${sensor.table}: ${enabled.map(describe).join(', ')} mentions ${sensor.channel} but does not fire FOR EACH ROW on INSERT`;
  } else if (notifying.length > 0) {
    detail = `${sensor.table}: ${notifying.map(describe).join(', ')} notifies ${sensor.channel} but is disabled`;
    hint = `ALTER TABLE ${quoteIdent(sensor.table)} ENABLE TRIGGER ${notifying.map((t) => quoteIdent(t.name)).join(', ')}`;
  } else if (triggers.length > 0) {
    detail = `${sensor.table}: no trigger notifies ${sensor.channel} (its triggers: ${triggers.map(describe).join(', ')})`;
  } else {
    detail = `${sensor.table} has no trigger, so nothing notifies ${sensor.channel}`;
  }
  return { table, trigger: { name: triggerName, ok: false, detail, hint } };
}

interface NotifyResult {
  /** Per channel: the round trip in ms, or undefined when it never arrived. */
  received: Map<string, number>;
  sendErrors: Map<string, string>;
  listenError?: string;
  waitedMs: number;
}

/** Sends a diagnostic NOTIFY on every channel from `sender` and waits for each on a LISTEN session of its own. */
async function roundTrip(
  db: DatabaseConfig,
  sender: pg.Client,
  channels: string[],
  timeoutMs: number,
): Promise<NotifyResult> {
  const received = new Map<string, number>();
  const sendErrors = new Map<string, string>();
  const sentAt = new Map<string, number>();
  const nonce = randomBytes(8).toString('hex');
  const listener = new pg.Client({
    ...clientConfig(db, 'pump-monitor-diagnose-listen'),
    query_timeout: timeoutMs,
  });
  listener.on('error', () => {});
  let wake: () => void = () => {};
  listener.on('notification', (msg) => {
    const at = performance.now();
    const started = sentAt.get(msg.channel);
    if (started === undefined || received.has(msg.channel)) return;
    try {
      const body = JSON.parse(msg.payload ?? '') as { diagnostic?: unknown; nonce?: unknown };
      if (body.diagnostic !== true || body.nonce !== nonce) return;
    } catch {
      return;
    }
    received.set(msg.channel, round(at - started));
    if (received.size + sendErrors.size >= channels.length) wake();
  });
  try {
    await listener.connect();
    for (const channel of channels) await listener.query(`LISTEN ${quoteIdent(channel)}`);
  } catch (err) {
    await listener.end().catch(() => {});
    return { received, sendErrors, listenError: describePgError(err), waitedMs: 0 };
  }
  const started = performance.now();
  try {
    const payload = JSON.stringify({ diagnostic: true, nonce, source: 'pump-monitor diagnose' });
    for (const channel of channels) {
      sentAt.set(channel, performance.now());
      try {
        await sender.query('SELECT pg_notify($1, $2)', [channel, payload]);
      } catch (err) {
        sentAt.delete(channel);
        sendErrors.set(channel, describePgError(err));
      }
    }
    const remaining = timeoutMs - (performance.now() - started);
    if (received.size + sendErrors.size < channels.length && remaining > 0) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, remaining);
        wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
  } finally {
    await listener.end().catch(() => {});
  }
  return { received, sendErrors, waitedMs: elapsed(started) };
}

async function databaseChecks(config: DiagnoseConfig, timeoutMs: number): Promise<Check[]> {
  const db = config.database;
  const target = describeDatabase(db);
  const checks: Check[] = [];
  const client = new pg.Client({
    ...clientConfig(db, 'pump-monitor-diagnose'),
    // A client-side limit: a statement_timeout startup parameter would be refused by PgBouncer.
    query_timeout: Math.max(timeoutMs, 1_000) * 2,
  });
  client.on('error', () => {});
  const connectStart = performance.now();
  try {
    await client.connect();
  } catch (err) {
    checks.push({
      name: 'connection',
      ok: false,
      detail: `cannot connect to ${target}: ${describePgError(err)}`,
      hint: DB_HINT,
      ms: elapsed(connectStart),
    });
    await client.end().catch(() => {});
    return checks;
  }
  try {
    const { rows: v } = await client.query<{ server_version: string }>('SHOW server_version');
    const { rows: s } = await client.query<{ ssl: boolean; version: string | null }>(
      'SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()',
    );
    const { rows: u } = await client.query<{ u: string }>('SELECT current_user AS u');
    const tls = s[0]?.ssl ? `TLS on${s[0].version ? ` (${s[0].version})` : ''}` : 'TLS off';
    checks.push({
      name: 'connection',
      ok: true,
      detail: `PostgreSQL ${v[0]?.server_version ?? '?'}, ${tls}, user ${u[0]?.u ?? db.user}, target ${target}`,
      ms: elapsed(connectStart),
    });

    const { rows: r } = await client.query<{ replica: boolean }>('SELECT pg_is_in_recovery() AS replica');
    const replica = r[0]?.replica === true;

    const { rows: q } = await client.query<{ usage: number }>(
      'SELECT pg_notification_queue_usage()::float8 AS usage',
    );
    const usage = Number(q[0]?.usage ?? 0);
    const queue: Check = {
      name: 'notification queue',
      ok: usage <= QUEUE_LIMIT,
      detail: `${(usage * 100).toFixed(1)}% of the notification queue in use (limit ${QUEUE_LIMIT * 100}%)`,
    };
    if (!queue.ok) {
      queue.hint =
        'a listening session is not consuming its notifications, or a long transaction holds the queue back: look in pg_stat_activity for sessions idle in transaction and end them';
    }

    const channels: Channel[] = config.pumps.flatMap((pump) =>
      pump.sensors.map((sensor) => ({ pump, sensor })),
    );
    const schemas: ChannelSchema[] = [];
    for (const ch of channels) {
      try {
        schemas.push(await checkChannelSchema(client, ch));
      } catch (err) {
        const failed = (kind: string, what: string): Check => ({
          name: label(kind, ch.pump, what),
          ok: false,
          detail: `could not inspect ${ch.sensor.table}: ${describePgError(err)}`,
          hint: 'the database user needs to read the catalog (pg_trigger, pg_proc) and the table',
        });
        schemas.push({
          table: failed('table', ch.sensor.table),
          trigger: failed('trigger', ch.sensor.channel),
        });
      }
    }

    const names = channels.map((c) => c.sensor.channel);
    const notified = replica
      ? undefined
      : await roundTrip(db, client, [...new Set(names)], timeoutMs).catch(
          (err): NotifyResult => ({
            received: new Map(),
            sendErrors: new Map(),
            listenError: describePgError(err),
            waitedMs: 0,
          }),
        );

    checks.push(listenCheck(replica, notified, names.length, timeoutMs), queue);
    channels.forEach((ch, i) => {
      const schema = schemas[i] as ChannelSchema;
      checks.push(schema.table, schema.trigger, notifyCheck(ch, replica, notified, timeoutMs));
    });
    checks.push(await engineTablesCheck(client));
    checks.push(
      await checkpointsCheck(
        client,
        channels.map((c) => c.sensor.table),
      ),
    );
  } catch (err) {
    checks.push({
      name: 'database',
      ok: false,
      detail: `diagnosis of ${target} stopped: ${describePgError(err)}`,
      hint: DB_HINT,
    });
  } finally {
    await client.end().catch(() => {});
  }
  return checks;
}

function listenCheck(
  replica: boolean,
  notified: NotifyResult | undefined,
  total: number,
  timeoutMs: number,
): Check {
  const name = 'listen';
  if (replica || notified === undefined) {
    return {
      name,
      ok: false,
      detail:
        'the server is a read replica (pg_is_in_recovery() is true): LISTEN/NOTIFY does not work on a replica',
      hint: 'point DB_HOST (or DATABASE_URL) at the primary server',
    };
  }
  if (notified.listenError !== undefined) {
    return {
      name,
      ok: false,
      detail: `LISTEN failed on a separate session: ${notified.listenError}`,
      hint: 'connect directly to PostgreSQL, or through a session-pooling pool; the user must be allowed to LISTEN',
    };
  }
  const times = [...notified.received.values()].sort((a, b) => a - b);
  const n = times.length;
  if (n === 0) {
    return {
      name,
      ok: false,
      detail: `LISTEN succeeded but none of the ${total} test notifications arrived within ${timeoutMs} ms: a transaction-pooling PgBouncer (or another pooler) is most likely between here and PostgreSQL`,
      hint: 'connect directly to PostgreSQL (DB_HOST/DB_PORT) or use a session-pooling PgBouncer pool (pool_mode = session)',
      ms: notified.waitedMs,
    };
  }
  const median = times[Math.floor((n - 1) / 2)] ?? 0;
  const max = times[n - 1] ?? 0;
  const summary = `${n} of ${total} test notifications arrived on a separate LISTEN session (median ${median} ms, max ${max} ms)`;
  if (n < total) {
    return {
      name,
      ok: false,
      detail: `only ${summary}; ${DIAGNOSTIC_NOTE}`,
      hint: 'see the failing notify lines; a loaded server or a pooler may drop or delay notifications',
      ms: notified.waitedMs,
    };
  }
  return { name, ok: true, detail: `${summary}; ${DIAGNOSTIC_NOTE}`, ms: notified.waitedMs };
}

function notifyCheck(
  { pump, sensor }: Channel,
  replica: boolean,
  notified: NotifyResult | undefined,
  timeoutMs: number,
): Check {
  const name = label('notify', pump, sensor.channel);
  if (replica || notified === undefined) {
    return {
      name,
      ok: false,
      detail: 'not tried: the server is a read replica',
      hint: 'point DB_HOST at the primary server',
    };
  }
  if (notified.listenError !== undefined) {
    return { name, ok: false, detail: 'not tried: LISTEN failed (see the listen line)', hint: DB_HINT };
  }
  const sendError = notified.sendErrors.get(sensor.channel);
  if (sendError !== undefined) {
    return {
      name,
      ok: false,
      detail: `pg_notify on ${sensor.channel} failed: ${sendError}`,
      hint: 'the database user must be allowed to run pg_notify; connect to the primary',
    };
  }
  const ms = notified.received.get(sensor.channel);
  if (ms === undefined) {
    return {
      name,
      ok: false,
      detail: `diagnostic notification on ${sensor.channel} not received within ${timeoutMs} ms`,
      hint:
        notified.received.size === 0
          ? 'no notification arrived at all: connect directly or use session pooling (a transaction-pooling PgBouncer drops LISTEN)'
          : 'the server is slow or overloaded; run diagnose again, or raise the timeout',
    };
  }
  return {
    name,
    ok: true,
    detail: `diagnostic notification on ${sensor.channel} received, round trip ${ms} ms (counted as invalid by running listeners)`,
    ms,
  };
}

/** POSTs `{}` to the unified path: 422 means reachable and key accepted, without writing anything. */
async function backendCheck(
  pump: PumpConfig,
  apiKey: string,
  agent: Agent,
  timeoutMs: number,
): Promise<Check> {
  const url = `${pump.baseUrl}${pump.unifiedPath}`;
  const name = `backend ${pump.id}`;
  const envHint = `check ${pump.baseUrlEnv} (now ${pump.baseUrl}) and that the backend is running and reachable from here`;
  const started = performance.now();
  const signal = AbortSignal.timeout(timeoutMs);
  let status: number;
  let location: string | undefined;
  try {
    const res = await request(url, {
      method: 'POST',
      dispatcher: agent,
      headers: { 'content-type': 'application/json', 'x-api-key': apiKey },
      body: '{}',
      signal,
      headersTimeout: timeoutMs,
      bodyTimeout: timeoutMs,
    });
    status = res.statusCode;
    const loc = res.headers.location;
    location = Array.isArray(loc) ? loc[0] : loc;
    await res.body.dump().catch(() => {});
  } catch (err) {
    const e = err as { code?: string; message?: string; cause?: { code?: string } };
    const code = e.code ?? e.cause?.code;
    const timedOut = signal.aborted || (code !== undefined && /^UND_ERR_.*TIMEOUT$/.test(code));
    const what = timedOut ? `no answer within ${timeoutMs} ms` : (code ?? e.message ?? 'error');
    return {
      name,
      ok: false,
      detail: `POST ${url}: ${what}; the backend is down or unreachable`,
      hint: envHint,
      ms: elapsed(started),
    };
  }
  const ms = elapsed(started);
  const head = `POST ${url} with {} answered ${status}`;
  if (status === 422) {
    return {
      name,
      ok: true,
      detail: `${head} (validation error, as expected): reachable, API key accepted`,
      ms,
    };
  }
  if (status >= 200 && status < 300) {
    return {
      name,
      ok: true,
      detail: `${head}: reachable and API key accepted, although an empty body should get 422`,
      ms,
    };
  }
  // A refused route: the listener holds this pump's deliveries (nothing dead-lettered) until it is fixed.
  const held =
    "while it lasts, the listener holds this pump's vectors and per-sensor posts (none dead-lettered)";
  if (status === 401 || status === 403) {
    return {
      name,
      ok: false,
      detail: `${head}: the backend rejected the API key${apiKey === '' ? ' (API_KEY is empty)' : ''}; ${held}`,
      hint: "check API_KEY: it must equal the backend's INTERNAL_API_KEY; then restart the listener, which delivers what it held",
      ms,
    };
  }
  if (status >= 300 && status < 400) {
    return {
      name,
      ok: false,
      detail: `${head}: a redirect${location ? ` to ${location}` : ' (no Location)'}, which the listener does not follow; ${held}`,
      hint: `set ${pump.baseUrlEnv} to the backend's current address${location ? ` (the redirect's target, ${location}, without ${pump.unifiedPath})` : ''}; then restart the listener, which delivers what it held`,
      ms,
    };
  }
  if (status === 404 || status === 405) {
    return {
      name,
      ok: false,
      detail: `${head}: no such endpoint at this base URL`,
      hint: `check ${pump.baseUrlEnv}: it must point at the prediction backend (e.g. http://host:8000${pump.pathPrefix})`,
      ms,
    };
  }
  return {
    name,
    ok: false,
    detail: `${head}: unexpected answer (expected 422)`,
    hint: status >= 500 ? 'the backend is failing: look at its logs' : envHint,
    ms,
  };
}

async function backendChecks(config: DiagnoseConfig, timeoutMs: number): Promise<Check[]> {
  const agent = new Agent({ connections: 2, keepAliveTimeout: 1_000 });
  try {
    return await Promise.all(config.pumps.map((p) => backendCheck(p, config.apiKey, agent, timeoutMs)));
  } finally {
    await agent.destroy().catch(() => {});
  }
}

/**
 * Checks, one line each, that notifications can flow from the sensor tables to this process and on to
 * the backend: the connection, LISTEN over it, the notification queue, each channel's table, trigger and
 * round trip, and each pump's backend. Never writes a row; never prints the password or the API key.
 */
export async function runDiagnostics(config: DiagnoseConfig, opts: DiagnoseOptions = {}): Promise<Check[]> {
  const timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  const [db, backends] = await Promise.all([
    databaseChecks(config, timeoutMs),
    backendChecks(config, timeoutMs),
  ]);
  return redact([...db, ...backends], [config.database.password, config.apiKey]);
}

/** One line per check: PASS or FAIL, the name, the detail, and for a failure how to fix it. */
export function formatTable(checks: Check[]): string {
  const width = Math.min(
    60,
    checks.reduce((w, c) => Math.max(w, c.name.length), 0),
  );
  const lines = checks.map((c) => {
    const hint = !c.ok && c.hint ? ` -> fix: ${c.hint}` : '';
    return `${c.ok ? 'PASS' : 'FAIL'}  ${c.name.padEnd(width)}  ${c.detail}${hint}`;
  });
  const failed = checks.filter((c) => !c.ok).length;
  lines.push(
    failed === 0 ? `all ${checks.length} checks passed` : `${failed} of ${checks.length} checks failed`,
  );
  return `${lines.join('\n')}\n`;
}

export interface DiagnosisJson {
  ok: boolean;
  passed: number;
  failed: number;
  checks: Check[];
}

/** The machine-readable form: overall verdict, counts and every check. */
export function toJson(checks: Check[]): DiagnosisJson {
  const failed = checks.filter((c) => !c.ok).length;
  return { ok: failed === 0, passed: checks.length - failed, failed, checks };
}

export function formatJson(checks: Check[]): string {
  return `${JSON.stringify(toJson(checks), null, 2)}\n`;
}

/**
 * No reader's checkpoint is past its table's last row: only a notification's id, trusted by versions
 * before the row was the truth, could put it there, and every row written since would be skipped.
 */
async function checkpointsCheck(client: pg.Client, tables: string[]): Promise<Check> {
  const { rows } = await client.query<{ t: string | null }>(
    "SELECT to_regclass('pump_monitor.checkpoints')::text AS t",
  );
  if (rows[0]?.t === null || rows[0]?.t === undefined) {
    return { name: 'checkpoints', ok: true, detail: 'no checkpoints yet (listen creates them)' };
  }
  try {
    // A missing table has its own failed check.
    const missing = new Set(await missingTables(client, [...new Set(tables)]));
    const passed = await passedCheckpoints(
      client,
      tables.filter((t) => !missing.has(t)),
    );
    if (passed.length === 0)
      return { name: 'checkpoints', ok: true, detail: 'every checkpoint is within its table' };
    return {
      name: 'checkpoints',
      ok: false,
      detail: `past the table's last row: ${passed.map((p) => `${p.table} (${p.pump}) at ${p.lastId}, last row ${p.lastRow}`).join('; ')}`,
      hint: 'start pump-monitor listen: it brings each back to the last row on record as delivered and reads the rows above it',
    };
  } catch (err) {
    return {
      name: 'checkpoints',
      ok: false,
      detail: `could not compare the checkpoints with their tables: ${describePgError(err)}`,
      hint: 'the database user needs to read pump_monitor.checkpoints and the sensor tables',
    };
  }
}

/** The engine schema's tables with their rows and sizes: what retention keeps bounded. */
async function engineTablesCheck(client: pg.Client): Promise<Check> {
  try {
    const stats = await engineTableStats(client);
    if (stats.length === 0) {
      return {
        name: 'engine tables',
        ok: true,
        detail: 'schema pump_monitor not created yet (listen creates it)',
      };
    }
    const mb = (b: number) => `${(b / 1_048_576).toFixed(1)} MB`;
    return {
      name: 'engine tables',
      ok: true,
      detail: stats.map((t) => `${t.table} ${t.rows} rows ${mb(t.bytes)}`).join('; '),
    };
  } catch (err) {
    return {
      name: 'engine tables',
      ok: false,
      detail: `could not read the sizes of schema pump_monitor: ${describePgError(err)}`,
      hint: 'the database user needs to read pg_class and pg_stat_user_tables',
    };
  }
}
