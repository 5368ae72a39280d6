import type pg from 'pg';
import { ENGINE_SCHEMA } from './migrations.js';

/** Payloads are kept truncated: enough to diagnose, never an unbounded row. */
export const DEAD_LETTER_PAYLOAD_CHARS = 1000;

export interface DeadLetter {
  kind: 'notification' | 'vector' | 'sensor_post';
  pump?: string | undefined;
  channel?: string | undefined;
  payload?: string | undefined;
  reason: string;
  responseStatus?: number | undefined;
  responseBody?: string | undefined;
}

export function truncate(s: string | undefined, max = DEAD_LETTER_PAYLOAD_CHARS): string | null {
  if (s === undefined) return null;
  return s.length > max ? `${s.slice(0, max)}…[${s.length} chars]` : s;
}

export async function insertDeadLetters(db: pg.Pool | pg.ClientBase, items: DeadLetter[]): Promise<void> {
  await db.query(
    `INSERT INTO ${ENGINE_SCHEMA}.dead_letters (kind, pump, channel, payload, reason, response_status, response_body)
     SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::int[], $7::text[])`,
    [
      items.map((d) => d.kind),
      items.map((d) => d.pump ?? null),
      items.map((d) => d.channel ?? null),
      // NUL bytes cannot be stored in text columns.
      items.map((d) => truncate(d.payload)?.split(String.fromCharCode(0)).join('\\u0000') ?? null),
      items.map((d) => d.reason),
      items.map((d) => d.responseStatus ?? null),
      items.map((d) => truncate(d.responseBody)),
    ],
  );
}
