import type { Logger } from 'pino';
import type { RowFields } from '../decode.js';
import type { Change } from './messages.js';
import type { RowRef } from './positions.js';
import type { TableRoute } from './routes.js';
import { sensorRow } from './rows.js';

/** Where a row from the slot goes: the engine's doors for rows, and the ledger's answers about them. */
export interface RowDoors {
  routes: Map<string, TableRoute>;
  /** A sensor row, for every pump listing the channel (the intake's door for rows read from a table). */
  sensor: (channel: string, row: RowFields) => void;
  /**
   * A row the slot gives again (committed before this session began: it may have been handled before a
   * crash or a hand-over), for one pump, as catch-up hands a row: `postSettled` when its post is on record.
   */
  replay: (channel: string, row: RowFields, pump: string, postSettled: boolean) => void;
  /** A logbook row: its id, read by the logbook lane as a notified one. */
  logbook: (channel: string, id: number) => void;
  /** A logbook row given again whose post is on record: only its place in the ledger is rebuilt. */
  logbookOnRecord: (logbook: string, table: string, id: number) => void;
  /** Whether a reader's saved checkpoint is at or past the row (settled before; nothing to do). */
  passed: (reader: string, table: string, id: number) => boolean;
  logger: Logger;
}

/**
 * One row of a committed transaction to its readers. Each reader's place is registered first (`track`),
 * so a row settled at once (a duplicate) is seen settled. `onRecord`, for a replayed transaction, holds
 * the readers whose post of the row is on record (`reader\0table\0id`): those rows go the way catch-up
 * hands a row, and a reader whose saved checkpoint passed the row skips it. Returns what became of it.
 */
export function handRow(
  doors: RowDoors,
  c: Change,
  onRecord: Set<string> | undefined,
  track: (r: RowRef) => void,
): 'skipped' | 'live' | 'replayed' {
  const route = doors.routes.get(c.table);
  if (!route) return 'skipped';
  const id = Number(c.values.id);
  if (!Number.isSafeInteger(id)) {
    doors.logger.warn({ table: c.table, id: c.values.id }, 'a row from the slot with no usable id; skipped');
    return 'skipped';
  }
  for (const reader of route.readers) track({ reader, table: c.table, id });
  const row = route.channels.length > 0 ? (sensorRow(c.values, c.types) as RowFields) : undefined;
  if (!onRecord) {
    if (row) for (const ch of route.channels) doors.sensor(ch.channel, row);
    if (route.logbook) doors.logbook(route.logbook.channel, id);
    return 'live';
  }
  if (row) {
    for (const ch of route.channels) {
      for (const pump of ch.pumps) {
        if (doors.passed(pump, c.table, id)) continue;
        doors.replay(ch.channel, row, pump, onRecord.has(`${pump}\0${c.table}\0${id}`));
      }
    }
  }
  if (route.logbook) {
    const { id: logbook, channel } = route.logbook;
    if (doors.passed(logbook, c.table, id)) return 'replayed';
    if (onRecord.has(`${logbook}\0${c.table}\0${id}`)) doors.logbookOnRecord(logbook, c.table, id);
    else doors.logbook(channel, id);
  }
  return 'replayed';
}
