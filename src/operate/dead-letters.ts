import type pg from 'pg';
import type { LogbookConfig, PumpConfig } from '../config/env.js';
import type { LogbookStream } from '../config/pumps.js';
import { logbookKey, readingKey } from '../model/keys.js';
import { logbookEntryId, logbookEntryPayload } from '../model/payload.js';
import { Decoder } from '../source/decode.js';
import { inSavepoint, inTransaction } from '../store/db.js';
import {
  type DeadLetterFilter,
  type DeadLetterKind,
  lockDeadLetters,
  markHandled,
  matchingIds,
  type StoredDeadLetter,
} from '../store/dead-letters.js';
import { insertKeyedDeferred, type KeyedPost } from '../store/deferred-posts.js';
import { findDeadVector, requeueDead } from '../store/outbox.js';
import { logbookRowExists, postRecord, sensorRowPayload } from '../store/post-records.js';
import { recordSettledPosts } from '../store/sensor-posts.js';

/** What an operator command works with: the database, the configured pumps, and who is running it. */
export interface OperatorContext {
  pool: pg.Pool;
  pumps: PumpConfig[];
  /** The logbooks of the wiring: their letters are retried too; one kept without its key under its table's. */
  logbooks?: LogbookConfig[];
  /** Recorded as the handler of each letter (the OS user). */
  by: string;
}

/** What became of one dead letter. */
export interface Outcome {
  id: number;
  kind: string;
  /** `skipped`: the reading's post is on record as answered; `retry --again` re-posts it. */
  result: 'retried' | 'discarded' | 'refused' | 'skipped';
  detail: string;
}

/** How a letter goes back on the delivery path, decided inside the transaction that marks it. */
type Plan =
  /** Queue this per-sensor post for the owning replica. */
  | { post: KeyedPost; note: string }
  /** Done already within the transaction (a vector put back in the outbox). */
  | { note: string }
  | { refuse: string }
  /** Left as it is: the reading's post is on record as answered (without --again). */
  | { skip: string };

interface RetryScope {
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

function handlerFor(kind: string): RetryHandler | undefined {
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

/** Letters per transaction: short transactions, few locks. */
const PAGE = 200;

function notOpen(letter: StoredDeadLetter): string {
  const when = letter.handledAt ? ` at ${letter.handledAt.toISOString()}` : '';
  const how = letter.handledNote ? ` (${letter.handledNote})` : '';
  return `already ${letter.status} by ${letter.handledBy ?? 'someone'}${when}${how}`;
}

/**
 * Puts dead letters back on the normal delivery path, each marked `retried` in the same transaction as the
 * work that retries it: a per-sensor post is queued in deferred_posts for the pump's owning replica, a
 * vector's outbox row is pending again. A letter already retried or discarded is refused unless `again`.
 * A retry that fails again comes back as a new dead letter, written by the engine.
 */
export async function retryDeadLetters(
  ctx: OperatorContext,
  ids: number[],
  opts: { again?: boolean } = {},
): Promise<Outcome[]> {
  const decoder = new Decoder(ctx.pumps);
  const logbookOf = new Map(
    (ctx.logbooks ?? []).flatMap((logbook) =>
      logbook.streams.map((stream) => [stream.channel, { logbook, stream }] as const),
    ),
  );
  const out: Outcome[] = [];
  for (let i = 0; i < ids.length; i += PAGE) {
    const page = ids.slice(i, i + PAGE);
    const outcomes = await inTransaction(ctx.pool, async (tx) => {
      const letters = await lockDeadLetters(tx, page);
      const found = new Set(letters.map((l) => l.id));
      const results: Outcome[] = page
        .filter((id) => !found.has(id))
        .map((id) => ({ id, kind: '-', result: 'refused', detail: 'no such dead letter' }));
      const posts: { letter: StoredDeadLetter; post: KeyedPost; note: string }[] = [];
      const done: { id: number; note: string }[] = [];
      for (const letter of letters) {
        const refuse = (detail: string) =>
          results.push({ id: letter.id, kind: letter.kind, result: 'refused', detail });
        if (letter.status !== 'open' && !opts.again) {
          refuse(`${notOpen(letter)}; --again retries it anyway`);
          continue;
        }
        const handler = handlerFor(letter.kind);
        if (!handler) {
          refuse(`this version of pump-monitor cannot retry a dead letter of kind "${letter.kind}"`);
          continue;
        }
        let plan: Plan;
        try {
          plan = await inSavepoint(tx, () =>
            handler(letter, {
              tx,
              decoder,
              logbookOf,
              logbooks: ctx.logbooks ?? [],
              again: opts.again === true,
            }),
          );
        } catch (err) {
          refuse(`failed: ${(err as Error).message}`);
          continue;
        }
        if ('refuse' in plan) refuse(plan.refuse);
        else if ('skip' in plan)
          results.push({ id: letter.id, kind: letter.kind, result: 'skipped', detail: plan.skip });
        else if ('post' in plan) posts.push({ letter, post: plan.post, note: plan.note });
        else done.push({ id: letter.id, note: plan.note });
      }
      // One post per key: two letters for the same reading queue it once.
      const byKey = new Map<string, number>();
      const unique: KeyedPost[] = [];
      for (const p of posts) {
        if (!byKey.has(p.post.key)) {
          byKey.set(p.post.key, p.letter.id);
          unique.push(p.post);
        }
      }
      const queued = await insertKeyedDeferred(tx, unique);
      for (const p of posts) {
        const first = byKey.get(p.post.key) as number;
        const note =
          first !== p.letter.id
            ? `same post as dead letter ${first} (${p.post.key})`
            : queued.has(p.post.key)
              ? p.note
              : `already queued, not yet sent (${p.post.key})`;
        done.push({ id: p.letter.id, note });
      }
      await markHandled(tx, 'retried', ctx.by, done);
      const kinds = new Map(letters.map((l) => [l.id, l.kind]));
      for (const d of done)
        results.push({ id: d.id, kind: kinds.get(d.id) ?? '-', result: 'retried', detail: d.note });
      return results.sort((a, b) => a.id - b.id);
    });
    out.push(...outcomes);
  }
  return out;
}

/** Marks open dead letters as handled by an operator. They stay, for the audit, until retention deletes them. */
export async function discardDeadLetters(
  ctx: OperatorContext,
  ids: number[],
  note?: string,
): Promise<Outcome[]> {
  const out: Outcome[] = [];
  for (let i = 0; i < ids.length; i += PAGE) {
    const page = ids.slice(i, i + PAGE);
    const outcomes = await inTransaction(ctx.pool, async (tx) => {
      const letters = await lockDeadLetters(tx, page);
      const found = new Map(letters.map((l) => [l.id, l]));
      const results: Outcome[] = [];
      const discard: { id: number; note: string }[] = [];
      for (const id of page) {
        const letter = found.get(id);
        if (!letter) results.push({ id, kind: '-', result: 'refused', detail: 'no such dead letter' });
        else if (letter.status !== 'open') {
          results.push({ id, kind: letter.kind, result: 'refused', detail: notOpen(letter) });
        } else {
          discard.push({ id, note: note ?? 'discarded' });
          results.push({
            id,
            kind: letter.kind,
            result: 'discarded',
            detail: note ?? 'kept until retention',
          });
        }
      }
      await markHandled(tx, 'discarded', ctx.by, discard);
      return results;
    });
    out.push(...outcomes);
  }
  return out;
}

/** Every id matching a filter, read in bounded pages (a bulk retry or discard of what `list` shows). */
export async function allMatching(pool: pg.Pool, filter: DeadLetterFilter, max = 100_000): Promise<number[]> {
  const ids: number[] = [];
  let after = 0;
  while (ids.length < max) {
    const page = await matchingIds(pool, filter, after, Math.min(1_000, max - ids.length));
    if (page.length === 0) break;
    ids.push(...page);
    after = page[page.length - 1] as number;
  }
  return ids;
}
