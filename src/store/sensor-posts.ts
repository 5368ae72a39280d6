import type pg from 'pg';
import { bigintArray, textArray } from './db.js';
import { ENGINE_SCHEMA } from './migrations.js';

/** The per-sensor post ledger: posts taken care of (answered, deferred or dead-lettered), per pump and row. */
export const SENSOR_POSTS = `${ENGINE_SCHEMA}.sensor_posts`;

export interface SettledPost {
  pump: string;
  table: string;
  id: number;
}

/** Records settled posts in one statement; recording one twice is harmless. */
export async function recordSettledPosts(db: pg.Pool | pg.ClientBase, posts: SettledPost[]): Promise<void> {
  await db.query(
    `INSERT INTO ${SENSOR_POSTS} (table_name, row_id, pump)
     SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[]) ON CONFLICT DO NOTHING`,
    [
      textArray(posts.map((p) => p.table)),
      bigintArray(posts.map((p) => p.id)),
      textArray(posts.map((p) => p.pump)),
    ],
  );
}

/**
 * Whether row `id` of a table already has its per-sensor post settled for a pump, as an SQL expression over
 * a sensor table aliased `s`, with the table name and pump as parameters `$tableParam` and `$pumpParam`.
 */
export function settledPostExpr(tableParam: number, pumpParam: number): string {
  return `EXISTS (SELECT 1 FROM ${SENSOR_POSTS} p
                   WHERE p.table_name = $${tableParam} AND p.row_id = s.id AND p.pump = $${pumpParam})`;
}
