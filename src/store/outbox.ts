import type pg from 'pg';
import { vectorKey } from '../model/keys.js';
import { pgText, pgTextOrNull } from '../util/pg-text.js';
import { ENGINE_SCHEMA } from './migrations.js';

const T = `${ENGINE_SCHEMA}.outbox`;

export interface OutboxRow {
  id: number;
  pump: string;
  tiempo: string;
  key: string;
  body: Record<string, number>;
  attempts: number;
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
       SELECT v.ord, v.pump, v.tiempo, v.key, v.body, v.status,
              ARRAY(SELECT jsonb_array_elements_text(v.filled)) AS filled,
              ARRAY(SELECT jsonb_array_elements_text(v.missing)) AS missing,
              ARRAY(SELECT jsonb_array_elements_text(v.members)::bigint) AS members
         FROM jsonb_to_recordset($1::jsonb)
           AS v(ord int, pump text, tiempo text, key text, body jsonb, status text, filled jsonb, missing jsonb, members jsonb)
     )
     INSERT INTO ${T} (pump, tiempo_sensor, idempotency_key, body, filled, missing, members, status)
     SELECT g.pump, g.tiempo, g.key, g.body, g.filled, g.missing, g.members, g.status FROM g
      WHERE NOT EXISTS (
        SELECT 1 FROM ${T} o WHERE o.pump = g.pump AND o.tiempo_sensor = g.tiempo
           AND (o.members && g.members
                OR (cardinality(o.members) = 0 AND o.created_at > now() - interval '12 hours')))
      -- Ids in the order the groups were resolved: a pump's outbox order is its sending order.
      ORDER BY g.ord
     ON CONFLICT (idempotency_key) DO NOTHING
     RETURNING ${COLUMNS}, status`,
    [
      JSON.stringify(
        groups.map((g, i) => ({
          ord: i,
          pump: g.pump,
          // A key text is what a notification said: never a NUL or a lone surrogate in a jsonb escape.
          tiempo: pgText(g.tiempo),
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

const COLUMNS = 'id, pump, tiempo_sensor, idempotency_key, body, attempts';

interface RawRow {
  id: string;
  pump: string;
  tiempo_sensor: string;
  idempotency_key: string;
  body: Record<string, number>;
  attempts: number;
}

function toRow(r: RawRow): OutboxRow {
  return {
    id: Number(r.id),
    pump: r.pump,
    tiempo: r.tiempo_sensor,
    key: r.idempotency_key,
    body: r.body,
    attempts: r.attempts,
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
  db: pg.Pool | pg.ClientBase,
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
    [id, outcome.status, outcome.attempts, outcome.responseStatus, pgTextOrNull(outcome.responseBody)],
  );
}

/**
 * Puts a dead vector back in its pump's queue: pending again, with its key, body and members, under a new
 * id. The new id matters: a running sender remembers the ids it has finished with (so that a row both
 * handed over and read is sent once), and would pass over the old one. The new id also places the vector
 * after those already waiting, as a vector just stored would be. Returns the new id, or what the row is
 * now when it is not dead (someone put it back already, or it was sent), or undefined when it is gone.
 */
export async function requeueDead(
  client: pg.ClientBase,
  id: number,
): Promise<{ requeued: number } | { status: string } | undefined> {
  const { rows } = await client.query<{ id: string }>(
    `UPDATE ${T} SET id = nextval(pg_get_serial_sequence('${T}', 'id')), status = 'pending', sent_at = NULL,
            response_status = NULL, response_body = NULL
      WHERE id = $1 AND status = 'dead' RETURNING id`,
    [id],
  );
  if (rows[0]) return { requeued: Number(rows[0].id) };
  const { rows: now } = await client.query<{ status: string }>(`SELECT status FROM ${T} WHERE id = $1`, [id]);
  return now[0] ? { status: now[0].status } : undefined;
}

/**
 * The outbox row of a vector dead letter written before letters named their row (schema version 2): the
 * pump's dead row for that key text, with the same body when the payload is whole, recorded closest in
 * time to the letter.
 */
export async function findDeadVector(
  db: pg.Pool | pg.ClientBase,
  letter: { pump: string; tiempo: string; body: unknown; at: Date },
): Promise<number | undefined> {
  const { rows } = await db.query<{ id: string }>(
    `SELECT id FROM ${T}
      WHERE pump = $1 AND tiempo_sensor = $2 AND status = 'dead' AND ($3::jsonb IS NULL OR body = $3::jsonb)
      ORDER BY abs(extract(epoch FROM coalesce(sent_at, created_at) - $4::timestamptz)) LIMIT 1`,
    [letter.pump, letter.tiempo, letter.body === undefined ? null : JSON.stringify(letter.body), letter.at],
  );
  return rows[0] ? Number(rows[0].id) : undefined;
}

/** A vector a replay rebuilt: stored pending under a key of its own, naming its replay. */
export interface ReplayVector {
  pump: string;
  tiempo: string;
  key: string;
  body: Record<string, number>;
  filled: string[];
  missing: string[];
  members: number[];
  replayId: number;
}

/**
 * Stores a replay's vectors as pending rows of their pump. Unlike insertGroups it does not look for a
 * stored group sharing a member: a replay sends again on purpose. The unique key still holds, so an insert
 * retried after a lost answer stores nothing twice. Returns how many rows were new.
 */
export async function insertReplayVectors(
  db: pg.Pool | pg.ClientBase,
  vectors: ReplayVector[],
): Promise<number> {
  if (vectors.length === 0) return 0;
  const r = await db.query(
    `INSERT INTO ${T} (pump, tiempo_sensor, idempotency_key, body, filled, missing, members, status, replay_id)
     SELECT v.pump, v.tiempo, v.key, v.body,
            ARRAY(SELECT jsonb_array_elements_text(v.filled)),
            ARRAY(SELECT jsonb_array_elements_text(v.missing)),
            ARRAY(SELECT jsonb_array_elements_text(v.members)::bigint),
            'pending', v.replay_id
       FROM jsonb_to_recordset($1::jsonb)
         AS v(pump text, tiempo text, key text, body jsonb, filled jsonb, missing jsonb, members jsonb, replay_id bigint)
     ON CONFLICT (idempotency_key) DO NOTHING`,
    [
      JSON.stringify(
        vectors.map((v) => ({
          pump: v.pump,
          tiempo: pgText(v.tiempo),
          key: v.key,
          body: v.body,
          filled: v.filled,
          missing: v.missing,
          members: v.members,
          replay_id: v.replayId,
        })),
      ),
    ],
  );
  return r.rowCount ?? 0;
}
