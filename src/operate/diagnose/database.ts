import { performance } from 'node:perf_hooks';
import pg from 'pg';
import { type Config, type DatabaseConfig, describeDatabase } from '../../config/env.js';
import { selectingEnv } from '../../config/wiring.js';
import { findTable, relationExists, serverFacts, type TriggerRow, triggersOf } from '../../store/catalog.js';
import { passedCheckpoints } from '../../store/checkpoints.js';
import { clientConfig, describePgError, quoteIdent } from '../../store/db.js';
import { ENGINE_SCHEMA } from '../../store/migrations.js';
import { engineTableStats } from '../../store/retention.js';
import { missingTables } from '../../store/sensor-rows.js';
import { type Channel, channelsOf, label, migrateCommand } from './channels.js';
import { DB_HINT, listenCheck, type NotifyResult, notifyCheck, roundTrip } from './notify.js';
import { type Check, elapsed } from './report.js';

export type DiagnoseConfig = Config & { database: DatabaseConfig };

/** Above this share of the notification queue in use, a listener is not keeping up. */
const QUEUE_LIMIT = 0.5;

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

interface ChannelSchema {
  table: Check;
  trigger: Check;
}

/** The channel's table exists, and a trigger on it notifies the channel FOR EACH ROW on INSERT. */
async function checkChannelSchema(
  client: pg.ClientBase,
  ch: Channel,
  migrate: string,
): Promise<ChannelSchema> {
  const tableName = label('table', ch, ch.table);
  const triggerName = label('trigger', ch, ch.channel);
  const createHint = `run ${migrate} to create table ${ch.table} with its trigger (or create the plant's own table)`;
  const found = await findTable(client, ch.table);
  if (found === undefined) {
    return {
      table: { name: tableName, ok: false, detail: `table ${ch.table} does not exist`, hint: createHint },
      trigger: {
        name: triggerName,
        ok: false,
        detail: `no table ${ch.table}, so nothing notifies ${ch.channel}`,
        hint: createHint,
      },
    };
  }
  const table: Check = { name: tableName, ok: true, detail: `table ${found.shown} exists` };
  const triggers = await triggersOf(client, found.oid);
  const notifying = triggers.filter(
    (t) =>
      mentionsIdentifier(t.src ?? '', ch.channel) ||
      triggerArgs(t.args, t.nargs).some((a) => mentionsIdentifier(a, ch.channel)),
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
        detail: `${ch.table}: ${onInsert.map(describe).join(', ')} notifies ${ch.channel}${also}`,
      },
    };
  }
  let detail: string;
  let hint = `run ${migrate} to install trigger pump_monitor_notify on ${ch.table} (or create the plant trigger that notifies ${ch.channel})`;
  if (enabled.length > 0) {
    detail = `${ch.table}: ${enabled.map(describe).join(', ')} mentions ${ch.channel} but does not fire FOR EACH ROW on INSERT`;
  } else if (notifying.length > 0) {
    detail = `${ch.table}: ${notifying.map(describe).join(', ')} notifies ${ch.channel} but is disabled`;
    hint = `ALTER TABLE ${quoteIdent(ch.table)} ENABLE TRIGGER ${notifying.map((t) => quoteIdent(t.name)).join(', ')}`;
  } else if (triggers.length > 0) {
    detail = `${ch.table}: no trigger notifies ${ch.channel} (its triggers: ${triggers.map(describe).join(', ')})`;
  } else {
    detail = `${ch.table} has no trigger, so nothing notifies ${ch.channel}`;
  }
  return { table, trigger: { name: triggerName, ok: false, detail, hint } };
}

/**
 * The database's checks: the connection, LISTEN over it, the notification queue, each distinct channel's
 * table, trigger and round trip (a shared table once), the engine tables and the checkpoints.
 */
export async function databaseChecks(config: DiagnoseConfig, timeoutMs: number): Promise<Check[]> {
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
    const server = await serverFacts(client);
    const tls = server.tls.on ? `TLS on${server.tls.version ? ` (${server.tls.version})` : ''}` : 'TLS off';
    checks.push({
      name: 'connection',
      ok: true,
      detail: `PostgreSQL ${server.version}, ${tls}, user ${server.user}, target ${target}`,
      ms: elapsed(connectStart),
    });
    const queue: Check = {
      name: 'notification queue',
      ok: server.queueUsage <= QUEUE_LIMIT,
      detail: `${(server.queueUsage * 100).toFixed(1)}% of the notification queue in use (limit ${QUEUE_LIMIT * 100}%)`,
    };
    if (!queue.ok) {
      queue.hint =
        'a listening session is not consuming its notifications, or a long transaction holds the queue back: look in pg_stat_activity for sessions idle in transaction and end them';
    }

    const channels = channelsOf(config);
    const migrate = migrateCommand(config);
    const schemas: ChannelSchema[] = [];
    for (const ch of channels) {
      try {
        schemas.push(await checkChannelSchema(client, ch, migrate));
      } catch (err) {
        const failed = (kind: string, what: string): Check => ({
          name: label(kind, ch, what),
          ok: false,
          detail: `could not inspect ${ch.table}: ${describePgError(err)}`,
          hint: 'the database user needs to read the catalog (pg_trigger, pg_proc) and the table',
        });
        schemas.push({ table: failed('table', ch.table), trigger: failed('trigger', ch.channel) });
      }
    }

    const names = channels.map((c) => c.channel);
    const notified = server.replica
      ? undefined
      : await roundTrip(db, client, names, timeoutMs).catch(
          (err): NotifyResult => ({
            received: new Map(),
            sendErrors: new Map(),
            listenError: describePgError(err),
            waitedMs: 0,
          }),
        );

    checks.push(listenCheck(server.replica, notified, names.length, timeoutMs), queue);
    channels.forEach((ch, i) => {
      const schema = schemas[i] as ChannelSchema;
      checks.push(schema.table, schema.trigger, notifyCheck(ch, server.replica, notified, timeoutMs));
    });
    checks.push(await engineTablesCheck(client));
    checks.push(
      await checkpointsCheck(
        client,
        channels.map((c) => c.table),
        `${selectingEnv(config.wiring)}pump-monitor listen`,
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

/**
 * No reader's checkpoint is past its table's last row: only a notification's id, trusted by versions
 * before the row was the truth, could put it there, and every row written since would be skipped.
 */
async function checkpointsCheck(client: pg.ClientBase, tables: string[], listen: string): Promise<Check> {
  if (!(await relationExists(client, `${ENGINE_SCHEMA}.checkpoints`))) {
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
      hint: `start ${listen}: it brings each back to the last row on record as delivered and reads the rows above it`,
    };
  } catch (err) {
    return unreadable(
      'checkpoints',
      'compare the checkpoints with their tables',
      err,
      'pump_monitor.checkpoints and the sensor tables',
    );
  }
}

/** A check that could not read what it needs: what it tried, PostgreSQL's error, and what to grant. */
function unreadable(name: string, tried: string, err: unknown, needs: string): Check {
  return {
    name,
    ok: false,
    detail: `could not ${tried}: ${describePgError(err)}`,
    hint: `the database user needs to read ${needs}`,
  };
}

/** The engine schema's tables with their rows and sizes: what retention keeps bounded. */
async function engineTablesCheck(client: pg.ClientBase): Promise<Check> {
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
    return unreadable(
      'engine tables',
      'read the sizes of schema pump_monitor',
      err,
      'pg_class and pg_stat_user_tables',
    );
  }
}
