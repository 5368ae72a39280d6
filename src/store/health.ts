import type pg from 'pg';
import { ENGINE_SCHEMA } from './migrations.js';
import { underRetentionLock } from './retention.js';

const TABLE = `${ENGINE_SCHEMA}.health_transitions`;

/** The subject of a pump's own verdict; any other subject is one of its channels. */
export const PUMP_SUBJECT = 'pump';

/** One stored change of a verdict. */
export interface StoredTransition {
  pump: string;
  subject: string;
  from: string;
  to: string;
  value: number | null;
  /** Epoch ms. */
  at: number;
}

/** Writes transitions in one statement. */
export async function insertTransitions(
  db: pg.Pool | pg.ClientBase,
  items: StoredTransition[],
  recordedBy: string,
): Promise<void> {
  if (items.length === 0) return;
  await db.query(
    `INSERT INTO ${TABLE} (pump, subject, from_state, to_state, value, at, recorded_by)
     SELECT pump, subject, from_state, to_state, value, to_timestamp(at_ms / 1000.0), recorded_by
       FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::float8[], $6::float8[], $7::text[])
         AS t(pump, subject, from_state, to_state, value, at_ms, recorded_by)`,
    [
      items.map((t) => t.pump),
      items.map((t) => t.subject),
      items.map((t) => t.from),
      items.map((t) => t.to),
      items.map((t) => (t.value === null || !Number.isFinite(t.value) ? null : t.value)),
      items.map((t) => t.at),
      items.map(() => recordedBy),
    ],
  );
}

interface Row {
  pump: string;
  subject: string;
  from_state: string;
  to_state: string;
  value: number | null;
  at_ms: string;
}

function toTransition(r: Row): StoredTransition {
  return {
    pump: r.pump,
    subject: r.subject,
    from: r.from_state,
    to: r.to_state,
    value: r.value,
    at: Number(r.at_ms),
  };
}

/** The latest transition of every subject of these pumps: the states a restart resumes. */
export async function latestTransitions(
  db: pg.Pool | pg.ClientBase,
  pumps: string[],
): Promise<StoredTransition[]> {
  const { rows } = await db.query<Row>(
    `SELECT DISTINCT ON (pump, subject) pump, subject, from_state, to_state, value,
            (extract(epoch FROM at) * 1000)::bigint AS at_ms
       FROM ${TABLE} WHERE pump = ANY($1)
      ORDER BY pump, subject, at DESC, id DESC`,
    [pumps],
  );
  return rows.map(toTransition);
}

/** The newest `limit` transitions of each of these pumps (pump and channels together), newest first. */
export async function recentTransitions(
  db: pg.Pool | pg.ClientBase,
  pumps: string[],
  limit: number,
): Promise<StoredTransition[]> {
  const { rows } = await db.query<Row>(
    `SELECT t.pump, t.subject, t.from_state, t.to_state, t.value, (extract(epoch FROM t.at) * 1000)::bigint AS at_ms
       FROM unnest($1::text[]) AS p(pump)
       CROSS JOIN LATERAL (
         SELECT * FROM ${TABLE} h WHERE h.pump = p.pump ORDER BY h.at DESC, h.id DESC LIMIT $2) t
      ORDER BY t.at DESC, t.id DESC`,
    [pumps, limit],
  );
  return rows.map(toTransition);
}

/**
 * Deletes transitions older than `olderThanMs`, at most `limit` per call, keeping each subject's latest
 * (the state a restart resumes, however old). One replica at a time, under the retention lock.
 */
export async function deleteOldTransitions(db: pg.Pool, olderThanMs: number, limit: number): Promise<number> {
  return underRetentionLock(db, `${TABLE}.retention`, async (tx) => {
    const r = await tx.query(
      `DELETE FROM ${TABLE} WHERE id = ANY(ARRAY(
         SELECT h.id FROM ${TABLE} h
          WHERE h.at < now() - make_interval(secs => $1::float8 / 1000)
            AND EXISTS (SELECT 1 FROM ${TABLE} n
                         WHERE n.pump = h.pump AND n.subject = h.subject AND (n.at, n.id) > (h.at, h.id))
          ORDER BY h.at LIMIT $2))`,
      [olderThanMs, limit],
    );
    return r.rowCount ?? 0;
  });
}
