import type pg from 'pg';
import { pgText, pgTextOrNull } from '../util/pg-text.js';
import { ENGINE_SCHEMA } from './migrations.js';

/** Payloads are kept truncated: enough to diagnose, never an unbounded row. */
export const DEAD_LETTER_PAYLOAD_CHARS = 1000;

export interface DeadLetter {
  kind: 'notification' | 'vector' | 'sensor_post' | 'logbook';
  pump?: string | undefined;
  channel?: string | undefined;
  payload?: string | undefined;
  reason: string;
  responseStatus?: number | undefined;
  responseBody?: string | undefined;
  /** A vector's outbox row, so that a retry can put that row back in the queue. */
  outboxId?: number | undefined;
  /** The request's Idempotency-Key when it is not the one derived from the payload (a replay's). */
  idempotencyKey?: string | undefined;
}

export type DeadLetterKind = DeadLetter['kind'];

export function truncate(s: string | undefined, max = DEAD_LETTER_PAYLOAD_CHARS): string | null {
  if (s === undefined) return null;
  return s.length > max ? `${s.slice(0, max)}…[${s.length} chars]` : s;
}

/**
 * Stores dead letters in one statement. Every text is what something outside the engine sent (a payload,
 * an answer, a reason quoting them): each goes through `pgText` after truncation (which may cut a surrogate
 * pair), so no NUL or lone surrogate can make the insert fail.
 */
export async function insertDeadLetters(db: pg.Pool | pg.ClientBase, items: DeadLetter[]): Promise<void> {
  await db.query(
    `INSERT INTO ${ENGINE_SCHEMA}.dead_letters
       (kind, pump, channel, payload, reason, response_status, response_body, outbox_id, idempotency_key)
     SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::int[], $7::text[],
                          $8::bigint[], $9::text[])`,
    [
      items.map((d) => pgText(d.kind)),
      items.map((d) => pgTextOrNull(d.pump)),
      items.map((d) => pgTextOrNull(d.channel)),
      items.map((d) => pgTextOrNull(truncate(d.payload))),
      items.map((d) => pgText(d.reason)),
      items.map((d) => d.responseStatus ?? null),
      items.map((d) => pgTextOrNull(truncate(d.responseBody))),
      items.map((d) => d.outboxId ?? null),
      items.map((d) => pgTextOrNull(d.idempotencyKey)),
    ],
  );
}

/**
 * A dead letter that PostgreSQL refused even sanitised, reduced to what the engine wrote itself (its kind,
 * pump, channel, status, key and reason) and why the rest is missing: stored instead, so that no letter is
 * lost to the data it carried.
 */
export function bareDeadLetter(d: DeadLetter, err: unknown): DeadLetter {
  const e = err as { code?: string; message?: string };
  return {
    kind: d.kind,
    pump: d.pump,
    channel: d.channel,
    reason: `${d.reason} [payload and answer not stored: ${e.code ?? 'error'} ${e.message ?? ''}]`,
    responseStatus: d.responseStatus,
    outboxId: d.outboxId,
    idempotencyKey: d.idempotencyKey,
  };
}

export type DeadLetterStatus = 'open' | 'retried' | 'discarded';

/** A dead letter as stored, with what an operator did about it. */
export interface StoredDeadLetter {
  id: number;
  createdAt: Date;
  /** A kind this version may not know (a newer replica wrote it): kept as text. */
  kind: string;
  pump: string | null;
  channel: string | null;
  payload: string | null;
  reason: string;
  responseStatus: number | null;
  responseBody: string | null;
  outboxId: number | null;
  idempotencyKey: string | null;
  status: DeadLetterStatus;
  handledAt: Date | null;
  handledBy: string | null;
  handledNote: string | null;
}

/** Which dead letters an operator means: every filter is optional, and they combine with AND. */
export interface DeadLetterFilter {
  pump?: string | undefined;
  /** Only letters written at or after this time. */
  since?: Date | undefined;
  /** A case-insensitive substring of the reason. */
  reason?: string | undefined;
  kind?: string | undefined;
  /** Include retried and discarded letters (by default only open ones). */
  all?: boolean | undefined;
}

const DL = `${ENGINE_SCHEMA}.dead_letters`;
const DL_COLUMNS = `id, created_at, kind, pump, channel, payload, reason, response_status, response_body,
  outbox_id, idempotency_key, status, handled_at, handled_by, handled_note`;

interface RawDeadLetter {
  id: string;
  created_at: Date;
  kind: string;
  pump: string | null;
  channel: string | null;
  payload: string | null;
  reason: string;
  response_status: number | null;
  response_body: string | null;
  outbox_id: string | null;
  idempotency_key: string | null;
  status: DeadLetterStatus;
  handled_at: Date | null;
  handled_by: string | null;
  handled_note: string | null;
}

function toStored(r: RawDeadLetter): StoredDeadLetter {
  return {
    id: Number(r.id),
    createdAt: r.created_at,
    kind: r.kind,
    pump: r.pump,
    channel: r.channel,
    payload: r.payload,
    reason: r.reason,
    responseStatus: r.response_status,
    responseBody: r.response_body,
    outboxId: r.outbox_id === null ? null : Number(r.outbox_id),
    idempotencyKey: r.idempotency_key,
    status: r.status,
    handledAt: r.handled_at,
    handledBy: r.handled_by,
    handledNote: r.handled_note,
  };
}

/** The WHERE clause of a filter, its parameters numbered from `first`. */
function filterSql(f: DeadLetterFilter, first: number): { where: string; params: unknown[] } {
  const parts: string[] = [];
  const params: unknown[] = [];
  const add = (sql: (p: string) => string, value: unknown) => {
    params.push(value);
    parts.push(sql(`$${first + params.length - 1}`));
  };
  if (!f.all) parts.push(`status = 'open'`);
  if (f.pump !== undefined) add((p) => `pump = ${p}`, f.pump);
  if (f.kind !== undefined) add((p) => `kind = ${p}`, f.kind);
  if (f.since !== undefined) add((p) => `created_at >= ${p}`, f.since);
  if (f.reason !== undefined) add((p) => `strpos(lower(reason), lower(${p})) > 0`, f.reason);
  return { where: parts.length ? parts.join(' AND ') : 'true', params };
}

/** Matching dead letters, newest first, at most `limit`; and how many match in all. */
export async function listDeadLetters(
  db: pg.Pool | pg.ClientBase,
  filter: DeadLetterFilter,
  limit: number,
): Promise<{ rows: StoredDeadLetter[]; total: number }> {
  const { where, params } = filterSql(filter, 1);
  const { rows } = await db.query<RawDeadLetter>(
    `SELECT ${DL_COLUMNS} FROM ${DL} WHERE ${where} ORDER BY id DESC LIMIT $${params.length + 1}`,
    [...params, limit],
  );
  const { rows: n } = await db.query<{ n: string }>(`SELECT count(*) AS n FROM ${DL} WHERE ${where}`, params);
  return { rows: rows.map(toStored), total: Number(n[0]?.n ?? 0) };
}

/** The ids of matching dead letters above `afterId`, oldest first: a bounded page of a bulk action. */
export async function matchingIds(
  db: pg.Pool | pg.ClientBase,
  filter: DeadLetterFilter,
  afterId: number,
  limit: number,
): Promise<number[]> {
  const { where, params } = filterSql(filter, 3);
  const { rows } = await db.query<{ id: string }>(
    `SELECT id FROM ${DL} WHERE id > $1 AND ${where} ORDER BY id LIMIT $2`,
    [afterId, limit, ...params],
  );
  return rows.map((r) => Number(r.id));
}

/**
 * Locks the given dead letters until the transaction ends and returns them as they are now, in id order:
 * two operators handling the same letter at once take turns, and the second sees what the first did.
 */
export async function lockDeadLetters(client: pg.ClientBase, ids: number[]): Promise<StoredDeadLetter[]> {
  const { rows } = await client.query<RawDeadLetter>(
    `SELECT ${DL_COLUMNS} FROM ${DL} WHERE id = ANY($1::bigint[]) ORDER BY id FOR UPDATE`,
    [ids],
  );
  return rows.map(toStored);
}

/** Records what an operator did with each letter: its new status, who, now, and a note on how. */
export async function markHandled(
  client: pg.ClientBase,
  status: Exclude<DeadLetterStatus, 'open'>,
  by: string,
  handled: { id: number; note: string }[],
): Promise<void> {
  if (handled.length === 0) return;
  await client.query(
    `UPDATE ${DL} AS d SET status = $1, handled_at = now(), handled_by = $2, handled_note = h.note
       FROM unnest($3::bigint[], $4::text[]) AS h(id, note) WHERE d.id = h.id`,
    [status, pgText(by), handled.map((h) => h.id), handled.map((h) => pgText(h.note))],
  );
}
