import type pg from 'pg';
import { quoteIdent } from './db.js';
import { MEMBER_BITS_MASK, MEMBER_SHIFT } from './members.js';
import { ENGINE_SCHEMA } from './migrations.js';
import { SENSOR_POSTS } from './sensor-posts.js';

const T = `${ENGINE_SCHEMA}.checkpoints`;

/** A reader's saved progress: every row at or below `lastId` is settled. `no` numbers the reader for members. */
export interface SavedCheckpoint {
  lastId: number;
  no: number;
}

/**
 * Who reads a table: a pump (or a logbook stream), each with its own checkpoint row, since one row of a
 * shared table is settled separately for every pump that reads it. Rows from before version 4 have the
 * pump '' (the table's single reader then).
 */
export interface Reader {
  pump: string;
  table: string;
}

/** The key of a reader in maps: pump and table. */
export function readerKey(pump: string, table: string): string {
  return `${pump}\u0000${table}`;
}

/**
 * Gives each reader without a checkpoint row one:
 * - the table's legacy row (pump '', from before version 4), when there is one, becomes this reader's,
 *   number and checkpoint kept: the first reader of an upgraded table goes on where the table was, and the
 *   groups stored before the upgrade still carry its number in their members;
 * - otherwise the lowest checkpoint another reader of the table has (a second reader of a table begins
 *   where the first one is);
 * - otherwise the table's current last row: a first start against a plant's existing database begins with
 *   new readings instead of re-sending its whole history.
 */
export async function initCheckpoints(db: pg.Pool | pg.ClientBase, readers: Reader[]): Promise<void> {
  const { rows } = await db.query<{ table_name: string; pump: string }>(
    `SELECT table_name, pump FROM ${T} WHERE table_name = ANY($1)`,
    [readers.map((r) => r.table)],
  );
  const known = new Set(rows.map((r) => readerKey(r.pump, r.table_name)));
  for (const r of readers.filter((x) => !known.has(readerKey(x.pump, x.table)))) {
    const claimed = await db.query(
      `UPDATE ${T} SET pump = $2, updated_at = now() WHERE table_name = $1 AND pump = ''
         AND NOT EXISTS (SELECT 1 FROM ${T} WHERE table_name = $1 AND pump = $2)`,
      [r.table, r.pump],
    );
    if ((claimed.rowCount ?? 0) > 0) continue;
    await db.query(
      `INSERT INTO ${T} (table_name, pump, last_id)
       SELECT $1, $2, coalesce((SELECT min(last_id) FROM ${T} WHERE table_name = $1),
                               (SELECT max(id) FROM ${quoteIdent(r.table)}), 0)
       ON CONFLICT (table_name, pump) DO NOTHING`,
      [r.table, r.pump],
    );
  }
}

/** The saved checkpoints of these readers, by readerKey. */
export async function loadCheckpoints(
  db: pg.Pool | pg.ClientBase,
  readers: Reader[],
): Promise<Map<string, SavedCheckpoint>> {
  const { rows } = await db.query<{ table_name: string; pump: string; last_id: string; table_no: number }>(
    `SELECT table_name, pump, last_id, table_no FROM ${T} WHERE table_name = ANY($1)`,
    [readers.map((r) => r.table)],
  );
  const out = new Map<string, SavedCheckpoint>();
  const wanted = new Set(readers.map((r) => readerKey(r.pump, r.table)));
  for (const r of rows) {
    const key = readerKey(r.pump, r.table_name);
    if (wanted.has(key)) out.set(key, { lastId: Number(r.last_id), no: r.table_no });
  }
  const missing = readers.filter((r) => !out.has(readerKey(r.pump, r.table)));
  if (missing.length > 0)
    throw new Error(
      `no checkpoint row for ${missing.map((r) => `${r.table} (${r.pump})`).join(', ')}; initCheckpoints first`,
    );
  return out;
}

/** A reader whose saved checkpoint had passed its table's last row, and where it was brought back to. */
export interface RepairedCheckpoint {
  pump: string;
  table: string;
  was: number;
  /** The table's largest id (0 when empty). */
  lastRow: number;
  now: number;
  /** `now` is the last row on record as delivered; false: none is, and it is the table's last row. */
  recorded: boolean;
}

/**
 * Finds readers whose checkpoint is past their table's last row, and brings each back. Only a trusted
 * notification id could have put it there (versions before the row was the truth took the id of any
 * NOTIFY, forged or misrouted), and every row inserted since would be skipped for good. Each is brought
 * back to the last row on record as delivered for that reader (its per-sensor posts, its stored groups'
 * members), or to the table's last row when none is: rows above are read again, and the post ledger and
 * the outbox's members recognise any that were delivered before.
 */
/** Readers of these tables whose saved checkpoint is past the table's last row (0 for an empty table). */
export async function passedCheckpoints(
  db: pg.Pool | pg.ClientBase,
  tables: string[],
): Promise<{ pump: string; table: string; lastId: number; lastRow: number; tableNo: number }[]> {
  const distinct = [...new Set(tables)];
  if (distinct.length === 0) return [];
  const parts = distinct.map(
    (t, i) => `SELECT $${i + 1}::text AS t, (SELECT max(id) FROM ${quoteIdent(t)}) AS m`,
  );
  const { rows: tops } = await db.query<{ t: string; m: string | null }>(
    parts.join('\nUNION ALL\n'),
    distinct,
  );
  const { rows } = await db.query<{
    table_name: string;
    pump: string;
    last_id: string;
    table_no: number;
    top: string;
  }>(
    `SELECT c.table_name, c.pump, c.last_id, c.table_no, m.top FROM ${T} c
       JOIN unnest($1::text[], $2::bigint[]) AS m(t, top) ON c.table_name = m.t
      WHERE c.last_id > m.top`,
    [tops.map((r) => r.t), tops.map((r) => (r.m === null ? 0 : Number(r.m)))],
  );
  return rows.map((r) => ({
    pump: r.pump,
    table: r.table_name,
    lastId: Number(r.last_id),
    lastRow: Number(r.top),
    tableNo: r.table_no,
  }));
}

export async function repairPassedCheckpoints(
  db: pg.Pool | pg.ClientBase,
  readers: Reader[],
): Promise<RepairedCheckpoint[]> {
  const passed = await passedCheckpoints(
    db,
    readers.map((r) => r.table),
  );
  const wanted = new Set(readers.map((r) => readerKey(r.pump, r.table)));
  const out: RepairedCheckpoint[] = [];
  for (const c of passed) {
    if (!wanted.has(readerKey(c.pump, c.table))) continue;
    const top = c.lastRow;
    const { rows } = await db.query<{ n: string | null }>(
      `SELECT greatest(
         (SELECT max(row_id) FROM ${SENSOR_POSTS} WHERE table_name = $1 AND pump = $2 AND row_id <= $4),
         (SELECT max(m & ${MEMBER_BITS_MASK}::bigint) FROM ${ENGINE_SCHEMA}.outbox o, unnest(o.members) m
           WHERE o.pump = $2 AND (m >> ${MEMBER_SHIFT}) = $3 AND (m & ${MEMBER_BITS_MASK}::bigint) <= $4)) AS n`,
      [c.table, c.pump, c.tableNo, top],
    );
    const recorded = rows[0]?.n;
    const now = recorded === null || recorded === undefined ? top : Number(recorded);
    await db.query(`UPDATE ${T} SET last_id = $3, updated_at = now() WHERE table_name = $1 AND pump = $2`, [
      c.table,
      c.pump,
      now,
    ]);
    out.push({
      pump: c.pump,
      table: c.table,
      was: c.lastId,
      lastRow: top,
      now,
      recorded: recorded !== null && recorded !== undefined,
    });
  }
  return out;
}

/**
 * Is `xmin` (a row's inserting transaction, 32 bits) at or after the horizon (the oldest transaction
 * still running, as the LISTEN session saw it)?
 * Compared modulo 2^32, as PostgreSQL compares transaction ids.
 */
const RECENT = `((xmin::text::bigint - (SELECT x FROM horizon) + 4294967296) % 4294967296) < 2147483648`;

/**
 * How far each table's checkpoint may safely go, given transactions not yet finished, or finished but not
 * yet heard of.
 *
 * Writers commit out of id order: a transaction holding a low id may commit after one holding a higher id.
 * While it runs, its rows are invisible, and a checkpoint past them would skip them forever. Any row
 * visible above such an id was inserted by a transaction newer than the oldest one still running. So the
 * first visible row above `from` whose xmin is that recent marks where unseen rows may hide: the
 * checkpoint stops at the last visible row below it. A table with no such row has no bound (undefined).
 *
 * "Still running" is judged at `horizon`, the LISTEN session's own view (Listener.horizon): a transaction
 * that committed after it may have rows visible here whose notifications the engine has not handled yet
 * (they wait in its socket while it catches up with a burst), and those rows count as unseen too. A
 * snapshot of this connection would judge them finished and let the checkpoint pass them.
 *
 * Rows come from ids allocated in the same statement that assigns the transaction id, so the argument
 * holds for plain INSERTs; see docs/reliability.md for what it does not cover.
 */
export async function stableBounds(
  db: pg.Pool | pg.ClientBase,
  tables: { table: string; from: number }[],
  horizon: number,
): Promise<Map<string, number | undefined>> {
  // Per table: several readers of one table ask from the lowest of their checkpoints (a bound from there
  // holds for every reader above it too; it may only stop one sooner).
  const lowest = new Map<string, number>();
  for (const x of tables) lowest.set(x.table, Math.min(lowest.get(x.table) ?? x.from, x.from));
  tables = [...lowest].map(([table, from]) => ({ table, from }));
  const out = new Map<string, number | undefined>();
  if (tables.length === 0) return out;
  const params: unknown[] = [horizon];
  const parts = tables.map(({ table, from }) => {
    params.push(table, from);
    const t = `$${params.length - 1}::text`;
    const p = `$${params.length}::bigint`;
    const q = quoteIdent(table);
    return `SELECT ${t} AS t, r.n AS first_recent,
              (SELECT max(s.id) FROM ${q} s WHERE s.id > ${p} AND s.id < r.n) AS below
              FROM (SELECT min(id) AS n FROM ${q} WHERE id > ${p} AND ${RECENT}) r`;
  });
  const { rows } = await db.query<{ t: string; first_recent: string | null; below: string | null }>(
    `WITH horizon AS (SELECT $1::bigint AS x)
     ${parts.join('\nUNION ALL\n')}`,
    params,
  );
  const from = new Map(tables.map((x) => [x.table, x.from]));
  for (const r of rows) {
    if (r.first_recent === null) out.set(r.t, undefined);
    else out.set(r.t, r.below === null ? (from.get(r.t) as number) : Number(r.below));
  }
  return out;
}

/** Writes readers' checkpoints; a checkpoint never goes backwards. */
export async function writeCheckpoints(
  db: pg.Pool | pg.ClientBase,
  moved: { table: string; pump: string; lastId: number }[],
): Promise<void> {
  if (moved.length === 0) return;
  await db.query(
    `UPDATE ${T} AS c SET last_id = GREATEST(c.last_id, m.id), updated_at = now()
       FROM unnest($1::text[], $2::text[], $3::bigint[]) AS m(t, p, id) WHERE c.table_name = m.t AND c.pump = m.p`,
    [moved.map((m) => m.table), moved.map((m) => m.pump), moved.map((m) => m.lastId)],
  );
}
