import type pg from 'pg';
import { ENGINE_SCHEMA } from '../../src/store/schema.js';
import type { FakeBackend, RecordedRequest } from './fake-backend.js';
import { LOGBOOK_PATH } from './spec-oracle.js';
import { pause, waitFor } from './wait.js';

/**
 * Logbook entries against the facts of a kill, as test/helpers/bounds.ts does for sensor posts: what the
 * classifier answered 200 before the kill, what `sensor_posts` (pump = the logbook id) held then, and what
 * came after. An entry answered twice must be one that had no record at the kill.
 */

/** The logbook of plant-2026-03, as ../shared/spec/plant-2026-03.json names it. */
export const LOGBOOK_ID = 'bitacoras';
export const LOGBOOK_TABLES = { a: 'gm_bitacoras_a', b: 'gm_bitacoras_b' } as const;

/** The key every entry must carry: lb-<table>-<id>. */
export const logbookKey = (table: string, id: number) => `lb-${table}-${id}`;

export interface LogbookKill {
  killedAt: string;
  /** Requests at the backend once the dead process's in-flight ones were answered. */
  cut: number;
  /** `table|id` of every entry on record (sensor_posts) at the kill. */
  recorded: Set<string>;
}

export async function logbookFactsAtKill(admin: pg.Pool, backend: FakeBackend): Promise<LogbookKill> {
  const { rows: clock } = await admin.query<{ at: string }>('SELECT clock_timestamp()::text AS at');
  const killedAt = clock[0]?.at as string;
  const { rows } = await admin.query<{ k: string }>(
    `SELECT table_name || '|' || row_id AS k FROM ${ENGINE_SCHEMA}.sensor_posts
      WHERE pump = $1 AND settled_at <= $2::timestamptz`,
    [LOGBOOK_ID, killedAt],
  );
  const deadline = Date.now() + 1_000;
  while (Date.now() < deadline && backend.inFlight > 0) await pause(20);
  return { killedAt, cut: backend.requests.length, recorded: new Set(rows.map((r) => r.k)) };
}

export interface LogbookEntry {
  table: string;
  tabla: 'a' | 'b';
  id: number;
  text: string;
}

export interface LogbookCount {
  /** Entries never answered 200. */
  missing: string[];
  /** 200s whose body is not the row (id, bitacora, tabla) or whose key is not lb-<table>-<id>. */
  wrong: string[];
  /** Entries with no record at the kill that had been answered 200 before it. */
  unrecordedAtKill: number;
  /** Entries answered once before the kill and once after, with no record at the kill. */
  resent: number;
  /** Any other entry answered 200 more than once. */
  problems: string[];
}

/** Sorts every logbook 200 into before and after the kill, per entry, and sets repeats against the facts. */
export function countLogbook(
  backend: FakeBackend,
  entries: LogbookEntry[],
  kill?: LogbookKill,
): LogbookCount {
  const byKey = new Map(entries.map((e) => [logbookKey(e.table, e.id), e]));
  const answers = new Map<string, { before: number; after: number }>();
  const out: LogbookCount = { missing: [], wrong: [], unrecordedAtKill: 0, resent: 0, problems: [] };
  backend.requests.forEach((r: RecordedRequest, i) => {
    if (r.path !== LOGBOOK_PATH || r.status !== 200) return;
    const e = r.idempotencyKey ? byKey.get(r.idempotencyKey) : undefined;
    if (!e) {
      out.wrong.push(`#${r.seq} key ${r.idempotencyKey} names no entry written: ${r.raw.slice(0, 80)}`);
      return;
    }
    const b = r.body;
    if (b.id !== e.id || b.bitacora !== e.text || b.tabla !== e.tabla || Object.keys(b).length !== 3)
      out.wrong.push(`#${r.seq} ${r.idempotencyKey}: body ${r.raw.slice(0, 80)}`);
    const a = answers.get(r.idempotencyKey as string) ?? { before: 0, after: 0 };
    if (kill && i < kill.cut) a.before += 1;
    else a.after += 1;
    answers.set(r.idempotencyKey as string, a);
  });
  for (const e of entries) {
    const key = logbookKey(e.table, e.id);
    const a = answers.get(key);
    if (!a) {
      out.missing.push(key);
      continue;
    }
    const recorded = kill?.recorded.has(`${e.table}|${e.id}`) ?? false;
    if (a.before > 0 && !recorded) out.unrecordedAtKill += 1;
    if (a.before + a.after < 2) continue;
    if (a.before === 1 && a.after === 1 && !recorded) out.resent += 1;
    else
      out.problems.push(
        `${key}: answered ${a.before} times before the kill and ${a.after} after; ${recorded ? 'on record' : 'not on record'} at the kill`,
      );
  }
  return out;
}

/** Waits until the engine at `statusUrl` has nothing of the logbook queued and no catch-up or record pending. */
export async function logbookQuiet(statusUrl: string, timeoutMs = 60_000): Promise<void> {
  await waitFor(
    'the logbook lane quiet',
    async () => {
      const res = await fetch(`${statusUrl}/status`).catch(() => undefined);
      if (!res?.ok) return false;
      const s = (await res.json()) as {
        work?: { catch_up_running: boolean; rows_being_read: number; records_queued: number };
        logbooks: Record<string, { owned: boolean; queued: number }>;
      };
      const l = s.logbooks[LOGBOOK_ID];
      return (
        l?.owned === true &&
        l.queued === 0 &&
        s.work?.catch_up_running === false &&
        s.work.rows_being_read === 0 &&
        s.work.records_queued === 0
      );
    },
    timeoutMs,
  );
}
