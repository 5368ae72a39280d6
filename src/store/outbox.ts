import { createHash } from 'node:crypto';
import type pg from 'pg';
import { ENGINE_SCHEMA } from './migrations.js';

const T = `${ENGINE_SCHEMA}.outbox`;

/**
 * The Idempotency-Key of one vector: derived from its pump, its key text and its first member row, so that
 * a timestamp that comes back (HH:MM the next day, a clock reset) gets a key of its own, while the same
 * rows always give the same key: on a restart, in a catch-up overlap and on another replica.
 */
export function vectorKey(pump: string, tiempo: string, members: readonly number[]): string {
  let first = Number.POSITIVE_INFINITY;
  for (const m of members) if (m < first) first = m;
  const anchor = Number.isFinite(first) ? String(first) : '';
  return `vec-${pump}-${createHash('sha256').update(`${pump}\n${tiempo}\n${anchor}`).digest('hex').slice(0, 32)}`;
}

export interface OutboxRow {
  id: number;
  pump: string;
  tiempo: string;
  key: string;
  body: Record<string, number>;
  attempts: number;
  createdAt: Date;
}

/** A resolved group as the outbox stores it: a vector to send (`pending`), or a group `dropped` below the threshold. */
export interface OutboxGroup {
  pump: string;
  tiempo: string;
  status: 'pending' | 'dropped';
  body: Record<string, number>;
  /** `field:last` or `field:default` for each field filled in. */
  filled: string[];
  /** Fields absent from the body (left to the backend's default, or missing from a dropped group). */
  missing: string[];
  /** The rows it was built from, as member numbers (`table_no * 2^40 + id`). */
  members: number[];
}

/**
 * Stores resolved groups. A group that shares a member row with a stored group of the same pump and key
 * text is that group built again (a restart, a catch-up overlap, another replica): it is not stored, and
 * so never sent, twice. Rows stored before members were recorded (schema version 1) are recognised by key
 * text alone for 12 hours. Returns the rows stored, in id order, with each group's key in `keys`.
 */
export async function insertGroups(
  db: pg.Pool,
  groups: OutboxGroup[],
): Promise<{ stored: (OutboxRow & { status: string })[]; keys: string[] }> {
  const keys = groups.map((g) => vectorKey(g.pump, g.tiempo, g.members));
  const { rows } = await db.query<RawRow & { status: string }>(
    `WITH g AS (
       SELECT v.pump, v.tiempo, v.key, v.body, v.status,
              ARRAY(SELECT jsonb_array_elements_text(v.filled)) AS filled,
              ARRAY(SELECT jsonb_array_elements_text(v.missing)) AS missing,
              ARRAY(SELECT jsonb_array_elements_text(v.members)::bigint) AS members
         FROM jsonb_to_recordset($1::jsonb)
           AS v(pump text, tiempo text, key text, body jsonb, status text, filled jsonb, missing jsonb, members jsonb)
     )
     INSERT INTO ${T} (pump, tiempo_sensor, idempotency_key, body, filled, missing, members, status)
     SELECT g.pump, g.tiempo, g.key, g.body, g.filled, g.missing, g.members, g.status FROM g
      WHERE NOT EXISTS (
        SELECT 1 FROM ${T} o WHERE o.pump = g.pump AND o.tiempo_sensor = g.tiempo
           AND (o.members && g.members
                OR (cardinality(o.members) = 0 AND o.created_at > now() - interval '12 hours')))
     ON CONFLICT (idempotency_key) DO NOTHING
     RETURNING ${COLUMNS}, status`,
    [
      JSON.stringify(
        groups.map((g, i) => ({
          pump: g.pump,
          tiempo: g.tiempo,
          key: keys[i],
          body: g.body,
          status: g.status,
          filled: g.filled,
          missing: g.missing,
          members: g.members,
        })),
      ),
    ],
  );
  return { stored: rows.map((r) => ({ ...toRow(r), status: r.status })).sort((a, b) => a.id - b.id), keys };
}

const COLUMNS = 'id, pump, tiempo_sensor, idempotency_key, body, attempts, created_at';

interface RawRow {
  id: string;
  pump: string;
  tiempo_sensor: string;
  idempotency_key: string;
  body: Record<string, number>;
  attempts: number;
  created_at: Date;
}

function toRow(r: RawRow): OutboxRow {
  return {
    id: Number(r.id),
    pump: r.pump,
    tiempo: r.tiempo_sensor,
    key: r.idempotency_key,
    body: r.body,
    attempts: r.attempts,
    createdAt: r.created_at,
  };
}

/** A pump's pending vectors, oldest first. */
export async function fetchPending(db: pg.Pool, pump: string, limit: number): Promise<OutboxRow[]> {
  const { rows } = await db.query<RawRow>(
    `SELECT ${COLUMNS} FROM ${T} WHERE pump = $1 AND status = 'pending' ORDER BY id LIMIT $2`,
    [pump, limit],
  );
  return rows.map(toRow);
}

/** Records many delivered vectors in one statement. */
export async function markSent(
  db: pg.Pool,
  sent: { id: number; attempts: number; status: number }[],
): Promise<void> {
  await db.query(
    `UPDATE ${T} AS o SET status = 'sent', attempts = s.attempts, response_status = s.status, sent_at = now()
       FROM unnest($1::bigint[], $2::int[], $3::int[]) AS s(id, attempts, status) WHERE o.id = s.id`,
    [sent.map((s) => s.id), sent.map((s) => s.attempts), sent.map((s) => s.status)],
  );
}

export async function countPending(db: pg.Pool): Promise<Map<string, number>> {
  const { rows } = await db.query<{ pump: string; n: string }>(
    `SELECT pump, count(*) AS n FROM ${T} WHERE status = 'pending' GROUP BY pump`,
  );
  return new Map(rows.map((r) => [r.pump, Number(r.n)]));
}

export async function markDelivered(
  db: pg.Pool,
  id: number,
  outcome: {
    status: 'sent' | 'dead';
    attempts: number;
    responseStatus: number | null;
    responseBody: string | null;
  },
): Promise<void> {
  await db.query(
    `UPDATE ${T} SET status = $2, attempts = $3, response_status = $4, response_body = $5, sent_at = now()
      WHERE id = $1`,
    [id, outcome.status, outcome.attempts, outcome.responseStatus, outcome.responseBody],
  );
}
