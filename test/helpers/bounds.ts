import { appendFileSync, mkdirSync } from 'node:fs';
import type pg from 'pg';
import { expect } from 'vitest';
import type { PumpDefinition } from '../../src/config/pumps.js';
import type { FakeBackend } from './fake-backend.js';
import {
  readingKeyPattern,
  sharedTables,
  specPumpFor,
  specSensorPath,
  specUnifiedPath,
} from './spec-oracle.js';
import { pause } from './wait.js';

/**
 * What a process killed mid-stream may send again once restarted, tied to what was on record at the kill.
 *
 * The promise (docs/reliability.md, "After a crash, per-sensor posts are sent again only if they were in
 * flight"): every settled post is recorded in `pump_monitor.sensor_posts`, in batches of at most 50, and
 * no new post starts while two batches wait to be written; a sender sends at most VECTOR_WINDOW vectors
 * (the one in flight included) whose deliveries are not on record yet. So after a kill:
 * - a post answered 200 again is one that had no record at the kill, and those are at most
 *   SENSOR_POST_CONCURRENCY (in flight) plus two batches of 50 (answered, not yet written);
 * - a vector answered 200 again is one whose outbox row was not `sent` at the kill: at most VECTOR_WINDOW
 *   per pump.
 *
 * The numbers are the documented ones, written here; none is read from `src/`. The test passes its own
 * SENSOR_POST_CONCURRENCY and VECTOR_WINDOW, those it set in the engine's environment.
 */
export const LEDGER_BATCH = 50;
export const BATCHES_WAITING = 2;

export interface CrashBound {
  posts: number;
  /** Excess vectors in all: the window of each pump the dead process sent for. */
  vectors: number;
  /** Vectors of one pump that may be unrecorded at the kill, and so sent again: its VECTOR_WINDOW. */
  vectorsPerPump: number;
}

export function crashReplayBound(o: {
  sensorPostConcurrency: number;
  pumps: number;
  vectorWindow: number;
}): CrashBound {
  return {
    posts: o.sensorPostConcurrency + BATCHES_WAITING * LEDGER_BATCH,
    vectors: o.pumps * o.vectorWindow,
    vectorsPerPump: o.vectorWindow,
  };
}

type Pump = Pick<PumpDefinition, 'id' | 'pathPrefix' | 'unifiedPath' | 'sensors'>;

/** What was on record, in the database and at the backends, the moment a process died. */
export interface KillFacts {
  pumps: Pump[];
  backends: Record<string, FakeBackend>;
  /** The pumps the dead process was sending for (its resends are allowed, nobody else's). */
  victims: Set<string>;
  /** The database's clock just after the process was seen dead. */
  killedAt: string;
  /** The test's clock then (the backends' `at`). */
  killedMs: number;
  /** Per backend: how many requests had arrived when the kill was taken as done. */
  cut: Map<FakeBackend, number>;
  /** `pump|table|row id` of every post in `sensor_posts` settled before the kill. */
  recordedPosts: Set<string>;
  /** `pump|Idempotency-Key` of every vector whose outbox row was `sent` before the kill. */
  recordedVectors: Set<string>;
}

/**
 * Reads the facts of a kill. Call it as soon as the killed process has exited, before anything is
 * restarted: the records are those settled by the database's clock at that moment, and the backends'
 * logs are cut once the requests the dead process left in flight have been answered (waited for at most
 * `settleMs`; a request the kill cut short mid-body is never answered).
 */
export async function factsAtKill(o: {
  admin: pg.Pool;
  pumps: Pump[];
  backends: Record<string, FakeBackend>;
  victims: string[];
  settleMs?: number;
}): Promise<KillFacts> {
  const killedMs = Date.now();
  const { rows: clock } = await o.admin.query<{ at: string }>('SELECT clock_timestamp()::text AS at');
  const killedAt = clock[0]?.at as string;
  const { rows: posts } = await o.admin.query<{ k: string }>(
    `SELECT pump || '|' || table_name || '|' || row_id AS k FROM pump_monitor.sensor_posts
      WHERE settled_at <= $1::timestamptz`,
    [killedAt],
  );
  const { rows: vectors } = await o.admin.query<{ k: string }>(
    `SELECT pump || '|' || idempotency_key AS k FROM pump_monitor.outbox
      WHERE status = 'sent' AND sent_at <= $1::timestamptz`,
    [killedAt],
  );
  const backends = [...new Set(Object.values(o.backends))];
  const deadline = Date.now() + (o.settleMs ?? 1_000);
  while (Date.now() < deadline && backends.some((b) => b.inFlight > 0)) await pause(20);
  return {
    pumps: o.pumps,
    backends: o.backends,
    victims: new Set(o.victims),
    killedAt,
    killedMs,
    cut: new Map(backends.map((b) => [b, b.requests.length])),
    recordedPosts: new Set(posts.map((r) => r.k)),
    recordedVectors: new Set(vectors.map((r) => r.k)),
  };
}

export interface Resends {
  /** Posts of the dead process's pumps answered 200 before the kill with no record then. */
  unrecordedPosts: number;
  /** Vectors of the dead process's pumps answered 200 before the kill whose outbox row was not `sent`. */
  unrecordedVectors: Map<string, number>;
  /** Posts and vectors answered 200 once before the kill and once after, having had no record. */
  resentPosts: number;
  resentVectors: number;
  /** The resent vectors, per pump. */
  resentVectorsByPump: Map<string, number>;
  /** Every other item answered 200 more than once: before the kill, after it, or on record. */
  problems: string[];
}

interface Seen {
  label: string;
  /** Each 200: its arrival (ms from the kill), its backend's arrival number and its Idempotency-Key. */
  answers: string[];
  pump: string;
  kind: 'post' | 'vector';
  recorded: boolean;
  before: number;
  after: number;
}

/**
 * Sorts every 200 the backends answered into before and after the kill, per expected item (a post by its
 * pump's path, table, row id and value; a vector by its pump's path and Idempotency-Key, which the delivery
 * ledger ties to the vector's rows, so a resend under another key is a vector of its own there), and sets
 * each item answered more than once against the facts. Requests that match no pump's path are the
 * delivery ledger's `unexpected`.
 */
export function resendsAfterKill(f: KillFacts): Resends {
  const seen = new Map<string, Seen>();
  const killedMs = f.killedMs;
  for (const p of f.pumps) {
    const backend = f.backends[p.id];
    if (!backend) continue;
    const cut = f.cut.get(backend) ?? 0;
    const spec = specPumpFor(p);
    const shared = sharedTables(f.pumps);
    // Two tables of a pump may post to one path (plant-2026-03): the key's table tells them apart.
    const tables = new Map<string, string[]>();
    for (const s of p.sensors) {
      const path = spec ? specSensorPath(spec, s.table) : `${p.pathPrefix}${s.endpoint}`;
      tables.set(path, [...(tables.get(path) ?? []), s.table]);
    }
    const unified = spec ? specUnifiedPath(spec) : `${p.pathPrefix}${p.unifiedPath}`;
    backend.requests.forEach((r, i) => {
      if (r.status !== 200 || !r.json) return;
      let key: string;
      let item: Omit<Seen, 'before' | 'after' | 'answers'>;
      const candidates = tables.get(r.path);
      if (candidates !== undefined) {
        const { id_sensor: id, valor } = r.body;
        const table =
          candidates.find((t) =>
            readingKeyPattern(p.id, t, Number(id), shared.has(t)).test(r.idempotencyKey ?? ''),
          ) ?? (candidates[0] as string);
        key = `${p.id}|${table}|${id}`;
        item = {
          label: `${p.id} ${table} id ${id} valor ${valor}`,
          pump: p.id,
          kind: 'post',
          recorded: f.recordedPosts.has(key),
        };
        key += `|${valor}`;
      } else if (r.path === unified) {
        key = `${p.id}|${r.idempotencyKey}`;
        item = {
          label: `${p.id} vector ${r.idempotencyKey} ${r.raw.slice(0, 60)}…`,
          pump: p.id,
          kind: 'vector',
          recorded: f.recordedVectors.has(key),
        };
      } else return;
      const s = seen.get(key) ?? { ...item, before: 0, after: 0, answers: [] };
      s.answers.push(`#${r.seq} at ${r.at - killedMs} ms key ${r.idempotencyKey}`);
      if (i < cut) s.before += 1;
      else s.after += 1;
      seen.set(key, s);
    });
  }
  const out: Resends = {
    unrecordedPosts: 0,
    unrecordedVectors: new Map(),
    resentPosts: 0,
    resentVectors: 0,
    resentVectorsByPump: new Map(),
    problems: [],
  };
  for (const s of seen.values()) {
    const victim = f.victims.has(s.pump);
    if (victim && s.before > 0 && !s.recorded) {
      if (s.kind === 'post') out.unrecordedPosts += 1;
      else out.unrecordedVectors.set(s.pump, (out.unrecordedVectors.get(s.pump) ?? 0) + 1);
    }
    if (s.before + s.after < 2) continue;
    if (victim && s.before === 1 && s.after === 1 && !s.recorded) {
      if (s.kind === 'post') out.resentPosts += 1;
      else {
        out.resentVectors += 1;
        out.resentVectorsByPump.set(s.pump, (out.resentVectorsByPump.get(s.pump) ?? 0) + 1);
      }
      continue;
    }
    out.problems.push(
      `${s.label}: answered ${s.before} times before the kill and ${s.after} after; ` +
        `${s.recorded ? 'on record' : 'not on record'} at the kill${victim ? '' : ', a pump the dead process did not send for'}` +
        ` [${s.answers.join(', ')}]`,
    );
  }
  return out;
}

/**
 * Every resend was unrecorded at the kill, and what was unrecorded fits the promise: at most
 * `bound.posts` posts in all, and per pump at most its window of vectors unrecorded, and so sent again.
 */
export function expectResendsOnlyUnrecorded(
  r: Resends,
  bound: Pick<CrashBound, 'posts' | 'vectorsPerPump'>,
): void {
  const why = r.problems.slice(0, 8).join('\n');
  expect(r.problems, why).toEqual([]);
  expect(r.unrecordedPosts, 'posts answered before the kill with no record').toBeLessThanOrEqual(bound.posts);
  for (const [pump, n] of r.unrecordedVectors)
    expect(n, `pump ${pump}: vectors answered before the kill and not recorded`).toBeLessThanOrEqual(
      bound.vectorsPerPump,
    );
  for (const [pump, n] of r.resentVectorsByPump)
    expect(n, `pump ${pump}: vectors sent again after the kill`).toBeLessThanOrEqual(bound.vectorsPerPump);
}

/** One line in the test output and in test-artifacts/reliability.txt, beside the ledger's. */
export function reportResends(name: string, r: Resends): void {
  const vectors = [...r.unrecordedVectors.values()].reduce((a, b) => a + b, 0);
  const line =
    `fault ${name}: unrecorded at the kill ${r.unrecordedPosts} posts, ${vectors} vectors; ` +
    `sent again ${r.resentPosts} posts, ${r.resentVectors} vectors; other repeats ${r.problems.length}` +
    (r.problems.length > 0 ? ` (e.g. ${r.problems.slice(0, 3).join('; ')})` : '');
  console.log(line);
  mkdirSync('test-artifacts', { recursive: true });
  appendFileSync('test-artifacts/reliability.txt', `${line}\n`);
}
