import { randomBytes } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import pg from 'pg';
import type { DatabaseConfig } from '../../config/env.js';
import { probeNonce, probePayload } from '../../source/probe.js';
import { listenOn, notify } from '../../store/catalog.js';
import { clientConfig, describePgError } from '../../store/db.js';
import { type Channel, label } from './channels.js';
import { type Check, elapsed, round } from './report.js';

/** What one round of test notifications gave. */
export interface NotifyResult {
  /** Per channel: the round trip in ms; absent when it never arrived. */
  received: Map<string, number>;
  sendErrors: Map<string, string>;
  listenError?: string;
  waitedMs: number;
}

const PROBE_NOTE =
  'running listeners count each test notification as a probe (pump_monitor_probes_total): no dead letter, no invalid reading';

export const DB_HINT =
  'check DB_HOST, DB_PORT, DB_USER, DB_PASSWORD and DB_SSLMODE (or DATABASE_URL), and that PostgreSQL accepts connections from here';

/**
 * Sends one probe (source/probe.ts) on every channel from `sender` and waits for each on a LISTEN session
 * of its own. A probe names no row: running listeners count it and write nothing.
 */
export async function roundTrip(
  db: DatabaseConfig,
  sender: pg.ClientBase,
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
    if (probeNonce(msg.payload ?? '') !== nonce) return;
    received.set(msg.channel, round(at - started));
    if (received.size + sendErrors.size >= channels.length) wake();
  });
  try {
    await listener.connect();
    for (const channel of channels) await listenOn(listener, channel);
  } catch (err) {
    await listener.end().catch(() => {});
    return { received, sendErrors, listenError: describePgError(err), waitedMs: 0 };
  }
  const started = performance.now();
  try {
    const payload = probePayload(nonce);
    for (const channel of channels) {
      sentAt.set(channel, performance.now());
      try {
        await notify(sender, channel, payload);
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

/** The whole round: every channel once, however many readers it has. */
export function listenCheck(
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
      detail: `only ${summary}; ${PROBE_NOTE}`,
      hint: 'see the failing notify lines; a loaded server or a pooler may drop or delay notifications',
      ms: notified.waitedMs,
    };
  }
  return { name, ok: true, detail: `${summary}; ${PROBE_NOTE}`, ms: notified.waitedMs };
}

/** One channel's own test notification. */
export function notifyCheck(
  ch: Channel,
  replica: boolean,
  notified: NotifyResult | undefined,
  timeoutMs: number,
): Check {
  const name = label('notify', ch, ch.channel);
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
  const sendError = notified.sendErrors.get(ch.channel);
  if (sendError !== undefined) {
    return {
      name,
      ok: false,
      detail: `pg_notify on ${ch.channel} failed: ${sendError}`,
      hint: 'the database user must be allowed to run pg_notify; connect to the primary',
    };
  }
  const ms = notified.received.get(ch.channel);
  if (ms === undefined) {
    return {
      name,
      ok: false,
      detail: `test notification on ${ch.channel} not received within ${timeoutMs} ms`,
      hint:
        notified.received.size === 0
          ? 'no notification arrived at all: connect directly or use session pooling (a transaction-pooling PgBouncer drops LISTEN)'
          : 'the server is slow or overloaded; run diagnose again, or raise the timeout',
    };
  }
  return {
    name,
    ok: true,
    detail: `test notification on ${ch.channel} received, round trip ${ms} ms (a probe to running listeners)`,
    ms,
  };
}
