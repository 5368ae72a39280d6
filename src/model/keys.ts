import { createHash } from 'node:crypto';
import type { Reading } from './reading.js';

/**
 * Every Idempotency-Key the engine and its operator commands send. A key names what was sent, never how
 * it came (a notification, a catch-up, a retry or another replica), so the same row or group always
 * gets the same key.
 */

/**
 * A vector's key: derived from its pump, its key text and its first member row, so that a timestamp that
 * comes back (HH:MM the next day, a clock reset) gets a key of its own, while the same rows always give
 * the same key: on a restart, in a catch-up overlap and on another replica.
 */
export function vectorKey(pump: string, tiempo: string, members: readonly number[]): string {
  let first = Number.POSITIVE_INFINITY;
  for (const m of members) if (m < first) first = m;
  const anchor = Number.isFinite(first) ? String(first) : '';
  return `vec-${pump}-${createHash('sha256').update(`${pump}\n${tiempo}\n${anchor}`).digest('hex').slice(0, 32)}`;
}

/**
 * A per-sensor post's key: one row of one table (`rd-<table>-<id>`), unless the post carries its own (a
 * replay's). A row of a table several pumps read is posted once per pump, so its key names the pump:
 * `rd-<pump>-<table>-<id>`.
 */
export function readingKey(
  r: Pick<Reading, 'pump' | 'id' | 'key' | 'shared'> & { sensor: { table: string } },
): string {
  return r.key ?? (r.shared ? `rd-${r.pump}-${r.sensor.table}-${r.id}` : `rd-${r.sensor.table}-${r.id}`);
}

/** A logbook entry's key: `lb-<table>-<id>`, the table its stream reads (never its channel). */
export function logbookKey(table: string, id: number): string {
  return `lb-${table}-${id}`;
}

/** The suffix that marks a replay's requests: new for each run, the same within one. */
export function replaySuffix(id: number): string {
  return `-replay-${id}`;
}
