import { createHash } from 'node:crypto';
import type pg from 'pg';
import type { DroppedGroup, Vector } from '../assembler/assembler.js';
import { ENGINE_SCHEMA } from './schema.js';

const T = `${ENGINE_SCHEMA}.outbox`;

/** The Idempotency-Key of a pump's vector for one timestamp: stable across restarts and replicas. */
export function vectorKey(pump: string, tiempo: string): string {
  return `vec-${pump}-${createHash('sha256').update(`${pump}\n${tiempo}`).digest('hex').slice(0, 32)}`;
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

/**
 * Stores emitted vectors before they are sent. A vector whose (pump, tiempo_sensor) is already in the
 * outbox (sent, pending, dead or dropped) is not stored again: that is what keeps a timestamp from being
 * sent twice across restarts, catch-up overlaps and replicas. Returns the keys that were new.
 */
export async function insertVectors(db: pg.Pool, vectors: Vector[]): Promise<OutboxRow[]> {
  const { rows } = await db.query<RawRow>(
    `INSERT INTO ${T} (pump, tiempo_sensor, idempotency_key, body, filled, missing, status)
     SELECT v.pump, v.tiempo, v.key, v.body, ARRAY(SELECT jsonb_array_elements_text(v.filled)),
            ARRAY(SELECT jsonb_array_elements_text(v.omitted)), 'pending'
       FROM jsonb_to_recordset($1::jsonb) AS v(pump text, tiempo text, key text, body jsonb, filled jsonb, omitted jsonb)
     ON CONFLICT (pump, tiempo_sensor) DO NOTHING
     RETURNING ${COLUMNS}`,
    [
      JSON.stringify(
        vectors.map((v) => ({
          pump: v.pump,
          tiempo: v.tiempo,
          key: vectorKey(v.pump, v.tiempo),
          body: v.values,
          filled: v.filled.map((f) => `${f.field}:${f.from}`),
          omitted: v.omitted,
        })),
      ),
    ],
  );
  return rows.map(toRow).sort((a, b) => a.id - b.id);
}

/** Records groups dropped below the threshold, so their readings count as settled and are not re-sent. */
export async function insertDropped(db: pg.Pool, groups: DroppedGroup[]): Promise<void> {
  await db.query(
    `INSERT INTO ${T} (pump, tiempo_sensor, idempotency_key, body, missing, status)
     SELECT g.pump, g.tiempo, g.key, g.body, ARRAY(SELECT jsonb_array_elements_text(g.missing)), 'dropped'
       FROM jsonb_to_recordset($1::jsonb) AS g(pump text, tiempo text, key text, body jsonb, missing jsonb)
     ON CONFLICT (pump, tiempo_sensor) DO NOTHING`,
    [
      JSON.stringify(
        groups.map((g) => ({
          pump: g.pump,
          tiempo: g.tiempo,
          key: vectorKey(g.pump, g.tiempo),
          body: g.values,
          missing: g.missing,
        })),
      ),
    ],
  );
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

/** A pump's pending vectors, oldest first, but for those in `skip` (delivered, not yet recorded). */
export async function fetchPending(
  db: pg.Pool,
  pump: string,
  limit: number,
  skip: number[] = [],
): Promise<OutboxRow[]> {
  const { rows } = await db.query<RawRow>(
    `SELECT ${COLUMNS} FROM ${T}
      WHERE pump = $1 AND status = 'pending' AND NOT (id = ANY($3::bigint[])) ORDER BY id LIMIT $2`,
    [pump, limit, skip],
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
