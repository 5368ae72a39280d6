import type pg from 'pg';
import { quoteIdent } from './db.js';

/**
 * The engine's dedicated sessions (the LISTEN connection, the lease session): helpers in one place.
 * Each session has a name of its own (`application_name`), unique per replica.
 */

/**
 * Ends earlier sessions of the same name. One that died half-open is still alive at the server until it
 * notices: it would keep its advisory locks, and its LISTEN would hold back the notification queue.
 */
export async function endStaleSessions(client: pg.ClientBase, name: string): Promise<void> {
  await client.query(
    'SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1 AND pid <> pg_backend_pid()',
    [name],
  );
}

/** Tears the socket down at once: for a peer that no longer answers. */
export function destroySession(client: pg.Client): void {
  const stream = (client as unknown as { connection?: { stream?: { destroy(): void } } }).connection?.stream;
  stream?.destroy();
  client.end().catch(() => {});
}

/**
 * Ends a session at once, in whatever state it is: its socket destroyed with an error (`why`). A
 * connection still opening fails its connect, and every query waiting fails, where pg's end() would leave
 * a connect in progress pending for ever (pg 8.23).
 */
export function abortSession(client: pg.Client, why: string): void {
  const stream = (client as unknown as { connection?: { stream?: { destroy(err?: Error): void } } })
    .connection?.stream;
  stream?.destroy(new Error(why));
}

/** Ends a session politely, or tears it down when the peer does not answer within `graceMs`. */
export async function endSession(client: pg.Client, graceMs: number): Promise<void> {
  client.on('error', () => {});
  const timer = setTimeout(() => destroySession(client), graceMs);
  await client.end().catch(() => {});
  clearTimeout(timer);
}

/** LISTENs on every channel in one round trip. Channels are identifiers: quoted (case, punctuation). */
export async function listenOn(client: pg.ClientBase, channels: string[]): Promise<void> {
  await client.query(channels.map((c) => `LISTEN ${quoteIdent(c)}`).join(';'));
}

/** The channels this session LISTENs on, as the server sees it. */
export async function listeningChannels(client: pg.ClientBase): Promise<Set<string>> {
  const { rows } = await client.query<{ c: string }>('SELECT pg_listening_channels() AS c');
  return new Set(rows.map((r) => r.c));
}

/**
 * The oldest transaction still running (its id modulo 2^32), as seen by this LISTEN session, once every
 * notification of a transaction that finished before that moment has reached the client. The second
 * query is the barrier: the server sends a listener its pending notifications when it goes idle, so those
 * committed before the first query's snapshot come before the second's answer, and the client handles
 * messages in order.
 */
export async function streamHorizon(client: pg.ClientBase): Promise<number> {
  const { rows } = await client.query<{ x: string }>(
    'SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint % 4294967296 AS x',
  );
  await client.query('SELECT 1');
  return Number(rows[0]?.x);
}

/** How full the server's notification queue is, 0 to 1. */
export async function notificationQueueUsage(db: pg.Pool | pg.ClientBase): Promise<number> {
  const { rows } = await db.query<{ u: number }>('SELECT pg_notification_queue_usage() AS u');
  return Number(rows[0]?.u ?? 0);
}
