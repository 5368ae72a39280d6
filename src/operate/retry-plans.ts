import type pg from 'pg';
import type { LogbookConfig } from '../config/env.js';
import type { LogbookStream } from '../config/pumps.js';
import { logbookKey, readingKey } from '../model/keys.js';
import { logbookEntryId, logbookEntryPayload } from '../model/payload.js';
import type { Decoder } from '../source/decode.js';
import type { DeadLetterKind, StoredDeadLetter } from '../store/dead-letters.js';
import type { KeyedPost } from '../store/deferred-posts.js';
import { findDeadVector, requeueDead } from '../store/outbox.js';
import { logbookRowExists, postRecord, sensorRowPayload } from '../store/post-records.js';
import { recordSettledPosts } from '../store/sensor-posts.js';

/**
 * How each kind of dead letter goes back on the delivery path: one handler per kind decides its plan
 * inside the transaction that marks the letter (dead-letters.ts runs them and writes the outcome).
 */

/** How a letter goes back on the delivery path, decided inside the transaction that marks it. */
export type Plan =
  /** Queue this per-sensor post for the owning replica. */
  | { post: KeyedPost; note: string }
  /** Done already within the transaction (a vector put back in the outbox). */
  | { note: string }
  | { refuse: string }
  /** Left as it is: the reading's post is on record as answered (without --again). */
  | { skip: string };

export interface RetryScope {
  tx: pg.ClientBase;
  decoder: Decoder;
  /** The logbooks of the wiring, by channel: a notification on one names an entry, not a reading. */
  logbookOf: Map<string, { logbook: LogbookConfig; stream: LogbookStream }>;
  logbooks: LogbookConfig[];
  /** `retry --again`: re-post readings on record as answered too. */
  again: boolean;
}

function answeredNote(table: string, id: number): string {
  return `row ${id} of ${table} has its per-sensor post on record as answered; not sent again (--again re-posts it; discard closes the letter)`;
}

type RetryHandler = (letter: StoredDeadLetter, scope: RetryScope) => Promise<Plan>;

/**
 * One handler per kind of dead letter. The type makes every kind have one: a new kind (such as the
 * logbook's) is one more entry here.
 */
const RETRY: { [K in DeadLetterKind]: RetryHandler } = {
  sensor_post: retrySensorPost,
  vector: retryVector,
  notification: retryNotification,
  logbook: retryLogbook,
};

/**
 * A logbook entry that was not delivered: queued again (deferred_posts, pump = the logbook's id) for the
 * replica holding the logbook's lease, which reads the entry's text from its row and POSTs it under the
 * same key. A row gone since comes back as a new dead letter.
 */
async function retryLogbook(letter: StoredDeadLetter, { logbooks }: RetryScope): Promise<Plan> {
  const id = logbookEntryId(letter.payload);
  if (!letter.pump || !letter.channel || id === undefined) {
    return { refuse: 'it names no logbook entry (logbook, channel and row id are needed)' };
  }
  const channel = letter.channel;
  let key = letter.idempotencyKey;
  if (key === null) {
    // Kept without its key: the lane's key names the stream's table, which the channel is not.
    const stream = logbooks.find((l) => l.id === letter.pump)?.streams.find((s) => s.channel === channel);
    if (!stream) {
      return {
        refuse: `its key was not kept and channel "${channel}" belongs to no stream of logbook ${letter.pump} (PUMPS)`,
      };
    }
    key = logbookKey(stream.table, id);
  }
  return {
    post: { pump: letter.pump, channel, payload: logbookEntryPayload(id), key },
    note: `logbook entry ${id} queued again (${key})`,
  };
}

export function handlerFor(kind: string): RetryHandler | undefined {
  return Object.hasOwn(RETRY, kind) ? RETRY[kind as DeadLetterKind] : undefined;
}

/** A per-sensor post the backend rejected or that ran out of tries: sent again as it was, with its key. */
async function retrySensorPost(letter: StoredDeadLetter, { tx, decoder, again }: RetryScope): Promise<Plan> {
  const channel = letter.channel ?? '';
  // A shared table's channel feeds several pumps: the letter names the one it was for.
  const route = decoder.routesOf(channel).find((x) => x.pump === letter.pump) ?? decoder.route(channel);
  if (!route) return { refuse: `channel "${channel}" belongs to none of the configured pumps (PUMPS)` };
  const decoded = decoder.decode(channel, letter.payload ?? '', Date.now(), 'catchup', route.pump);
  if (!decoded.ok) return { refuse: `its payload is not a reading: ${decoded.rejection.detail}` };
  const key = letter.idempotencyKey ?? readingKey(decoded.reading);
  if (!again) {
    const table = route.sensor.table;
    const record = await postRecord(tx, { pump: route.pump, table, channel, id: decoded.reading.id, key });
    if (record.answered) return { skip: answeredNote(table, decoded.reading.id) };
  }
  return {
    post: { pump: route.pump, channel, payload: letter.payload ?? '', key },
    note: `per-sensor post queued again (${key})`,
  };
}

/** A vector the backend rejected: its outbox row goes back in the pump's queue, same key, same body. */
async function retryVector(letter: StoredDeadLetter, { tx }: RetryScope): Promise<Plan> {
  let outboxId = letter.outboxId ?? undefined;
  if (outboxId === undefined && letter.pump !== null) {
    // Written before letters named their row: found by pump, key text, body and time.
    const tiempo = /for tiempo_sensor (.*)$/.exec(letter.reason)?.[1];
    if (tiempo !== undefined) {
      let body: unknown;
      try {
        body = JSON.parse(letter.payload ?? '');
      } catch {
        body = undefined; // truncated: matched without it
      }
      outboxId = await findDeadVector(tx, { pump: letter.pump, tiempo, body, at: letter.createdAt });
    }
  }
  const gone = 'its outbox row is gone (deleted after OUTBOX_RETENTION); replay its time range instead';
  if (outboxId === undefined) return { refuse: gone };
  const r = await requeueDead(tx, outboxId);
  if (r === undefined) return { refuse: gone };
  if ('status' in r) {
    return {
      refuse:
        r.status === 'pending'
          ? `outbox row ${outboxId} is pending already`
          : `outbox row ${outboxId} is ${r.status}, not dead: nothing to send again`,
    };
  }
  return { note: `outbox row ${outboxId} pending again as row ${r.requeued}` };
}

/** The row id a notification payload names, if it names one. */
function namedRow(payload: string | null): number | undefined {
  let body: unknown;
  try {
    body = JSON.parse(payload ?? '');
  } catch {
    return undefined;
  }
  if (typeof body !== 'object' || body === null || Array.isArray(body)) return undefined;
  const id = (body as Record<string, unknown>).id_sensor;
  return typeof id === 'number' && Number.isSafeInteger(id) && id >= 0 ? id : undefined;
}

/**
 * A notification that could not be decoded: when its payload names a row, the row is read again from its
 * table and, if it is a valid reading now (fixed since), its per-sensor post is queued. Its group is not
 * rebuilt: use replay for that.
 */
async function retryNotification(letter: StoredDeadLetter, scope: RetryScope): Promise<Plan> {
  const { tx, decoder, again } = scope;
  const channel = letter.channel ?? '';
  const logbook = scope.logbookOf.get(channel);
  if (logbook) return retryLogbookNotification(letter, logbook, scope);
  // A shared table's channel feeds several pumps: the letter names the one it was for.
  const route = decoder.routesOf(channel).find((x) => x.pump === letter.pump) ?? decoder.route(channel);
  if (!route) return { refuse: `channel "${channel}" belongs to none of the configured pumps (PUMPS)` };
  const id = namedRow(letter.payload);
  if (id === undefined) return { refuse: 'its payload names no row, so there is nothing to read again' };
  const table = route.sensor.table;
  const payload = await sensorRowPayload(tx, table, id);
  if (payload === undefined) return { refuse: `row ${id} is not in table ${table}` };
  const decoded = decoder.decode(channel, payload, Date.now(), 'catchup', route.pump);
  if (!decoded.ok)
    return { refuse: `row ${id} of ${table} is still not a valid reading: ${decoded.rejection.detail}` };
  const key = readingKey(decoded.reading);
  if (!again) {
    // The row was read again since (a later notification, a catch-up): what became of its post decides.
    const record = await postRecord(tx, { pump: route.pump, table, channel, id, key });
    if (record.answered) return { skip: answeredNote(table, id) };
    if (record.waiting) return { refuse: `row ${id} of ${table} has a post queued already, not yet sent` };
    if (record.letter !== undefined) {
      return {
        refuse: `row ${id} of ${table} has its per-sensor post in dead letter ${record.letter.id} (${record.letter.status}): retry that one`,
      };
    }
    if (record.settled) {
      return {
        refuse: `row ${id} of ${table} has its per-sensor post on record already (notified again since)`,
      };
    }
  }
  // On record as the engine records a deferred post: a catch-up that reads the row again does not post it.
  await recordSettledPosts(tx, [{ pump: route.pump, table, id }]);
  return {
    post: { pump: route.pump, channel, payload, key },
    note: `row ${id} read again; post queued (${key})`,
  };
}

/**
 * A logbook notification that could not be taken as it was (no such row then, a text that differed):
 * when its payload names an entry the table holds now, the entry is queued for the replica holding the
 * logbook's lease, which reads its text from the row. An entry on record as handled is skipped unless
 * --again.
 */
async function retryLogbookNotification(
  letter: StoredDeadLetter,
  { logbook, stream }: { logbook: LogbookConfig; stream: LogbookStream },
  { tx, again }: RetryScope,
): Promise<Plan> {
  let id: unknown;
  try {
    id = (JSON.parse(letter.payload ?? '') as Record<string, unknown>).id;
  } catch {
    id = undefined;
  }
  if (typeof id !== 'number' || !Number.isSafeInteger(id) || id < 0) {
    return { refuse: 'its payload names no logbook entry, so there is nothing to read again' };
  }
  const table = stream.table;
  if (!(await logbookRowExists(tx, table, id))) return { refuse: `row ${id} is not in table ${table}` };
  const key = logbookKey(table, id);
  if (!again) {
    const record = await postRecord(tx, { pump: logbook.id, table, channel: stream.channel, id, key });
    if (record.waiting) return { refuse: `entry ${id} of ${table} is queued already, not yet sent` };
    if (record.settled) {
      return {
        skip: `entry ${id} of ${table} is on record as handled by logbook ${logbook.id}; not sent again (--again sends it; discard closes the letter)`,
      };
    }
  }
  // On record as the logbook lane records a queued entry: a catch-up that reads the row again skips it.
  await recordSettledPosts(tx, [{ pump: logbook.id, table, id }]);
  return {
    post: { pump: logbook.id, channel: stream.channel, payload: JSON.stringify({ id }), key },
    note: `entry ${id} of ${table} read again; queued for logbook ${logbook.id} (${key})`,
  };
}
