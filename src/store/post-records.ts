import type pg from 'pg';
import { quoteIdent } from './db.js';
import { ENGINE_SCHEMA } from './migrations.js';
import { SENSOR_POSTS } from './sensor-posts.js';

/** What `dead-letters retry` reads about a reading before it posts it again. */

/** What the engine's records say about one reading's per-sensor post. */
export interface PostRecord {
  /** Settled in the ledger: answered, deferred or dead-lettered. */
  settled: boolean;
  /** A post of it waits in deferred_posts: queued, not yet sent. */
  waiting: boolean;
  /** The newest per-sensor dead letter of the reading, if any. */
  letter: { id: number; status: string } | undefined;
  /** Settled, nothing waiting, and every refusal on record was followed by a retry that did not come back. */
  answered: boolean;
}

/**
 * Reads what is on record of a reading's per-sensor post. The ledger (pump_monitor.sensor_posts) records a
 * post once it is answered, deferred or dead-lettered; a dead letter records a refusal, and a retry that
 * fails again writes a new one. So a reading's post is on record as answered when its ledger row is there,
 * no post of it waits in deferred_posts, and it has no per-sensor dead letter, or the latest retry of one is
 * newer than every one of them. Retention removes ledger rows once the reader's checkpoint has passed them:
 * what it removed is no longer on record, and is not taken as answered.
 */
export async function postRecord(
  tx: pg.ClientBase,
  r: { pump: string; table: string; channel: string; id: number; key: string },
): Promise<PostRecord> {
  const S = ENGINE_SCHEMA;
  // The engine writes payloads as {"id_sensor":N,...}; PostgreSQL's json_build_object as {"id_sensor" : N, ...}.
  const names = `"id_sensor"\\s*:\\s*${r.id}([^0-9]|$)`;
  const { rows } = await tx.query<{
    settled: boolean;
    waiting: boolean;
    letter_id: string | null;
    status: string | null;
    retried_last: boolean;
  }>(
    `WITH letters AS (
       SELECT id, status, created_at, handled_at FROM ${S}.dead_letters
        WHERE kind = 'sensor_post' AND pump = $3 AND channel = $4 AND (idempotency_key = $5 OR payload ~ $6))
     SELECT EXISTS (SELECT 1 FROM ${SENSOR_POSTS} WHERE table_name = $1 AND row_id = $2 AND pump = $3) AS settled,
            EXISTS (SELECT 1 FROM ${S}.deferred_posts
                     WHERE pump = $3 AND (idempotency_key = $5 OR (channel = $4 AND payload ~ $6))) AS waiting,
            (SELECT id FROM letters ORDER BY id DESC LIMIT 1) AS letter_id,
            (SELECT status FROM letters ORDER BY id DESC LIMIT 1) AS status,
            coalesce((SELECT max(handled_at) FROM letters WHERE status = 'retried')
                       > (SELECT max(created_at) FROM letters), false) AS retried_last`,
    [r.table, r.id, r.pump, r.channel, r.key, names],
  );
  const row = rows[0];
  const settled = row?.settled === true;
  const waiting = row?.waiting === true;
  const letter =
    row?.letter_id == null ? undefined : { id: Number(row.letter_id), status: row.status ?? 'open' };
  const refusalsAnswered = letter === undefined || row?.retried_last === true;
  return { settled, waiting, letter, answered: settled && !waiting && refusalsAnswered };
}

/** A sensor row as its trigger renders it ({id_sensor, valor, tiempo_sensor}); undefined when it is gone. */
export async function sensorRowPayload(
  tx: pg.ClientBase,
  table: string,
  id: number,
): Promise<string | undefined> {
  const { rows } = await tx.query<{ payload: string }>(
    `SELECT json_build_object('id_sensor', id, 'valor', valor_sensor, 'tiempo_sensor', tiempo_sensor)::text
            AS payload
       FROM ${quoteIdent(table)} WHERE id = $1`,
    [id],
  );
  return rows[0]?.payload;
}

/** Whether a logbook table holds the row. */
export async function logbookRowExists(tx: pg.ClientBase, table: string, id: number): Promise<boolean> {
  const { rows } = await tx.query(`SELECT 1 FROM ${quoteIdent(table)} WHERE id = $1`, [id]);
  return rows.length > 0;
}
