import { appendFileSync, mkdirSync } from 'node:fs';
import type pg from 'pg';
import { expect } from 'vitest';
import type { PumpDefinition } from '../../src/config/pumps.js';
import { quoteIdent } from '../../src/store/db.js';
import { ENGINE_SCHEMA } from '../../src/store/schema.js';
import type { FakeBackend, RecordedRequest } from './fake-backend.js';
import {
  readingKeyPattern,
  sharedTables,
  specPumpFor,
  specSensorPath,
  specUnifiedPath,
  vectorKeyPattern,
} from './spec-oracle.js';
import { pause } from './wait.js';

/**
 * The strict delivery ledger. Expectations come from the inputs only: the rows in the sensor tables and
 * the pump definitions, never from the code under test (no key formula). Every request a test backend
 * answered 200 is matched against them:
 *
 * - a reading (a row with a finite valor) must reach its pump's backend at `pathPrefix + endpoint`, with
 *   the body exactly `{"id_sensor": <row id>, "valor": <valor_sensor>}`;
 * - a vector (a pump timestamp whose rows cover every sensor; see `partial` for the others) must reach its
 *   pump's backend at `pathPrefix + unifiedPath`, with one field per sensor holding that row's value;
 * - a 200 that matches nothing expected (a wrong path, a wrong pump's backend, a wrong body) is
 *   `unexpected`;
 * - each item's 200s carry one Idempotency-Key, present, not shared with another item, and of the form
 *   the specification gives (`rd-<table>-<id>`, `rd-<pump>-<table>-<id>` for a table several configured
 *   pumps read, `vec-<pump>-<hash>`) (`keyProblems`).
 *
 * The paths of the default and plant-2026-03 wirings are the specification's (spec-oracle.ts, read from
 * ../shared/spec), not the product loader's.
 *
 * Each expected item is counted: 0 answers is `lost`, every answer past the first is `excess`.
 */

type Pump = Pick<
  PumpDefinition,
  'id' | 'pathPrefix' | 'unifiedPath' | 'sensors' | 'minFields' | 'defaults' | 'optionalFields'
>;

export interface LedgerOptions {
  pumps: Pump[];
  /** Each pump's own backend, by pump id: its readings and vectors must arrive there and nowhere else. */
  backends: Record<string, FakeBackend>;
  /** The X-API-Key every request must carry. */
  apiKey: string;
  /**
   * Timestamps with at least `minFields` but not every sensor: 'expected' (default) counts them like full
   * ones (their missing fields must hold a value of that sensor's table, the pump's default, or be an
   * optional field left out); 'allowed' lets them be sent at most once, or not at all.
   */
  partial?: 'expected' | 'allowed';
  /** Rows to leave out of the expected per-sensor posts (e.g. one a test makes the backend reject). */
  excludeReading?: (table: string, id: number) => boolean;
  /** Timestamps to leave out of the expected vectors (e.g. one a test makes the backend reject). */
  excludeVector?: (pump: string, tiempo: string) => boolean;
}

interface Item {
  kind: 'reading' | 'vector';
  pump: string;
  backend: FakeBackend;
  path: string;
  label: string;
  /** Counted as lost when never delivered (false for an allowed partial vector). */
  required: boolean;
  answers: number;
  keys: Set<string | undefined>;
  /** The form its Idempotency-Key must have (spec-oracle.ts). */
  keyPattern: RegExp;
}

interface VectorItem extends Item {
  kind: 'vector';
  fields: string[];
  /** Per field: the values its rows of this timestamp hold. */
  present: Map<string, Set<number>>;
  /** Per missing field: the values it may be filled with. */
  fills: Map<string, Set<number>>;
  optional: Set<string>;
}

export interface Expected {
  readings: Map<string, Item>;
  vectors: VectorItem[];
  /** The vectors by backend and path. */
  byPath: Map<string, VectorItem[]>;
}

export interface LedgerCount {
  /** Expected per-sensor posts (rows with a finite valor). */
  readings: number;
  /** Expected vectors (required ones). */
  vectors: number;
  readingsDelivered: number;
  vectorsDelivered: number;
  /** Expected items never answered 200. */
  lost: number;
  /** Per-sensor posts answered 200 more than once: the sum of (answers - 1). */
  excessPosts: number;
  /** Vectors answered 200 more than once: the sum of (answers - 1). */
  excessVectors: number;
  /** 200 answers that match no expected reading or vector. */
  unexpected: number;
  /** An item answered without an Idempotency-Key, with two keys, or with another item's key. */
  keyProblems: number;
  /** 200 answers to a request without the right X-API-Key. */
  wrongApiKey: number;
  /** Whether the engine was seen quiescent (and then quiet) before counting. */
  quiescent: boolean;
  /** A few findings, to investigate with. */
  examples: string[];
}

/** What quiescence reads of an engine's `/status`. */
interface EngineStatus {
  sensor_posts_queued: number;
  owned_pumps: string[];
  pumps: Record<string, unknown>;
  logbooks?: Record<string, { queued: number }>;
  work?: { catch_up_running: boolean; rows_being_read: number; readers_held: number; records_queued: number };
}

export interface SettleOptions {
  /** A pool straight to the database (not through a test's proxy). */
  admin: pg.Pool;
  /** In-process engines whose status to read. */
  monitors?: { status(): EngineStatus }[];
  /** Child processes' status servers: `http://127.0.0.1:<port>`, read at `/status`. */
  statusUrls?: string[];
  /** How long to wait for the expected deliveries, and then separately for quiescence. */
  timeoutMs?: number;
  /** How long nothing may arrive at any backend, once the engine is quiescent, before counting. */
  quietMs?: number;
}

export class Ledger {
  private last: LedgerCount | undefined;

  constructor(private readonly o: LedgerOptions) {}

  private backendOf(pump: string): FakeBackend {
    const b = this.o.backends[pump];
    if (!b) throw new Error(`the ledger has no backend for pump ${pump}`);
    return b;
  }

  /** What must be delivered, read from the sensor tables. */
  async expected(db: pg.Pool): Promise<Expected> {
    const readings = new Map<string, Item>();
    const vectors: VectorItem[] = [];
    const shared = sharedTables(this.o.pumps);
    for (const p of this.o.pumps) {
      const backend = this.backendOf(p.id);
      const spec = specPumpFor(p);
      const byTiempo = new Map<string, Map<string, Set<number>>>();
      const everyValue = new Map<string, Set<number>>();
      for (const s of p.sensors) {
        const { rows } = await db.query<{ id: number; tiempo_sensor: string; valor_sensor: number | null }>(
          `SELECT id, tiempo_sensor, valor_sensor FROM ${quoteIdent(s.table)}`,
        );
        const values = new Set<number>();
        everyValue.set(s.field, values);
        for (const r of rows) {
          // A null or non-finite valor is bad input: dead-lettered, never posted, no part of a vector.
          if (r.valor_sensor === null || !Number.isFinite(r.valor_sensor)) continue;
          // So is a row with no timestamp text: it names no vector.
          if (r.tiempo_sensor === null || r.tiempo_sensor.trim() === '') continue;
          const path = spec ? specSensorPath(spec, s.table) : `${p.pathPrefix}${s.endpoint}`;
          if (!this.o.excludeReading?.(s.table, r.id)) {
            readings.set(readingId(backend, path, r.id, r.valor_sensor), {
              kind: 'reading',
              pump: p.id,
              backend,
              path,
              label: `${p.id} ${s.table} id ${r.id} valor ${r.valor_sensor}`,
              required: true,
              answers: 0,
              keys: new Set(),
              keyPattern: readingKeyPattern(p.id, s.table, r.id, shared.has(s.table)),
            });
          }
          values.add(r.valor_sensor);
          const group = byTiempo.get(r.tiempo_sensor) ?? new Map<string, Set<number>>();
          byTiempo.set(r.tiempo_sensor, group);
          const set = group.get(s.field) ?? new Set<number>();
          set.add(r.valor_sensor);
          group.set(s.field, set);
        }
      }
      const fields = p.sensors.map((s) => s.field);
      const optional = new Set(Object.keys(p.optionalFields ?? {}));
      for (const [tiempo, group] of byTiempo) {
        const full = group.size === fields.length;
        if (!full && group.size < p.minFields) continue;
        if (this.o.excludeVector?.(p.id, tiempo)) continue;
        const fills = new Map<string, Set<number>>();
        for (const f of fields) {
          if (group.has(f)) continue;
          const allowed = new Set(everyValue.get(f));
          const fallback = p.defaults?.[f];
          if (fallback !== undefined) allowed.add(fallback);
          fills.set(f, allowed);
        }
        const v: VectorItem = {
          kind: 'vector',
          pump: p.id,
          backend,
          path: spec ? specUnifiedPath(spec) : `${p.pathPrefix}${p.unifiedPath}`,
          label: `${p.id} vector ${tiempo}${full ? '' : ` (${group.size} of ${fields.length})`}`,
          required: full || (this.o.partial ?? 'expected') === 'expected',
          answers: 0,
          keys: new Set(),
          keyPattern: vectorKeyPattern(p.id),
          fields,
          present: group,
          fills,
          optional,
        };
        vectors.push(v);
      }
    }
    const byPath = new Map<string, VectorItem[]>();
    for (const v of vectors) {
      const k = `${v.backend.port}|${v.path}`;
      byPath.set(k, [...(byPath.get(k) ?? []), v]);
    }
    return { readings, vectors, byPath };
  }

  /** Matches every 200 the backends answered against `exp`. Pure: it can be called again and again. */
  count(exp: Expected): LedgerCount {
    const items = [...exp.readings.values(), ...exp.vectors];
    for (const it of items) {
      it.answers = 0;
      it.keys = new Set();
    }
    const examples: string[] = [];
    const note = (s: string) => {
      if (examples.length < 8) examples.push(s);
    };
    let unexpected = 0;
    let wrongApiKey = 0;
    const byKey = new Map<string, Item>();
    const backends = [...new Set(Object.values(this.o.backends))];
    for (const backend of backends) {
      for (const r of backend.requests) {
        if (r.status !== 200) continue;
        if (r.apiKey !== this.o.apiKey) {
          wrongApiKey += 1;
          note(`200 without the right X-API-Key: ${describe(r)}`);
        }
        const item = this.match(exp, backend, r, byKey);
        if (!item) {
          unexpected += 1;
          note(`unexpected 200: ${describe(r)}`);
          continue;
        }
        item.answers += 1;
        item.keys.add(r.idempotencyKey);
        if (r.idempotencyKey !== undefined && !byKey.has(r.idempotencyKey)) byKey.set(r.idempotencyKey, item);
      }
    }
    const c: LedgerCount = {
      readings: exp.readings.size,
      vectors: exp.vectors.filter((v) => v.required).length,
      readingsDelivered: 0,
      vectorsDelivered: 0,
      lost: 0,
      excessPosts: 0,
      excessVectors: 0,
      unexpected,
      keyProblems: 0,
      wrongApiKey,
      quiescent: this.last?.quiescent ?? false,
      examples,
    };
    const owners = new Map<string, Item>();
    for (const it of items) {
      if (it.answers === 0) {
        if (it.required) {
          c.lost += 1;
          note(`lost: ${it.label}`);
        }
        continue;
      }
      if (it.kind === 'reading') c.readingsDelivered += 1;
      else if (it.required) c.vectorsDelivered += 1;
      if (it.answers > 1) {
        if (it.kind === 'reading') c.excessPosts += it.answers - 1;
        else c.excessVectors += it.answers - 1;
        note(`answered ${it.answers} times: ${it.label}`);
      }
      if (it.keys.size !== 1 || it.keys.has(undefined)) {
        c.keyProblems += 1;
        note(`Idempotency-Key ${[...it.keys].join(' / ') || 'missing'}: ${it.label}`);
      }
      for (const k of it.keys) {
        if (k === undefined) continue;
        if (!it.keyPattern.test(k)) {
          c.keyProblems += 1;
          note(`Idempotency-Key ${k} is not of the form ${it.keyPattern.source}: ${it.label}`);
        }
        const other = owners.get(k);
        if (other && other !== it) {
          c.keyProblems += 1;
          note(`Idempotency-Key ${k} shared by ${other.label} and ${it.label}`);
        }
        owners.set(k, it);
      }
    }
    return c;
  }

  /**
   * The expected item a 200 delivered. A reading is identified by its path, row id and value. A vector by
   * its path and body; where several expected vectors fit one body (timestamps written with the same
   * values), a request under an Idempotency-Key already seen goes to the item that key delivered (it is a
   * second delivery of that request), and any other to a fitting item not delivered yet.
   */
  private match(exp: Expected, backend: FakeBackend, r: RecordedRequest, byKey: Map<string, Item>) {
    if (!r.json) return undefined;
    const keys = Object.keys(r.body);
    if (keys.length === 2 && 'id_sensor' in r.body && 'valor' in r.body) {
      const id = r.body.id_sensor;
      const valor = r.body.valor;
      if (typeof id !== 'number' || typeof valor !== 'number') return undefined;
      return exp.readings.get(readingId(backend, r.path, id, valor));
    }
    if (!Object.values(r.body).every((v) => typeof v === 'number')) return undefined;
    const body = r.body as Record<string, number>;
    const fitting = (exp.byPath.get(`${backend.port}|${r.path}`) ?? []).filter((v) => fits(v, body));
    const seen = r.idempotencyKey === undefined ? undefined : byKey.get(r.idempotencyKey);
    if (seen && fitting.includes(seen as VectorItem)) return seen;
    return fitting.find((v) => v.answers === 0) ?? fitting[0];
  }

  /** Whether the engines have nothing left to do: no pending outbox row or deferred post, nothing queued. */
  async quiescent(o: SettleOptions): Promise<boolean> {
    const { rows } = await o.admin.query<{ pending: number; deferred: number }>(
      `SELECT (SELECT count(*)::int FROM ${ENGINE_SCHEMA}.outbox WHERE status = 'pending') AS pending,
              (SELECT count(*)::int FROM ${ENGINE_SCHEMA}.deferred_posts) AS deferred`,
    );
    if (rows[0]?.pending !== 0 || rows[0]?.deferred !== 0) return false;
    const statuses: EngineStatus[] = [];
    for (const m of o.monitors ?? []) statuses.push(m.status());
    for (const url of o.statusUrls ?? []) {
      try {
        const res = await fetch(`${url}/status`);
        if (!res.ok) return false;
        statuses.push((await res.json()) as (typeof statuses)[number]);
      } catch {
        return false;
      }
    }
    // Ownership has settled: every pump is served by one replica and no more (with several replicas a
    // take-over may still be moving, and its catch-up still to come).
    if (statuses.length > 1) {
      const owners = new Map<string, number>();
      for (const s of statuses) for (const p of s.owned_pumps) owners.set(p, (owners.get(p) ?? 0) + 1);
      const pumps = new Set(statuses.flatMap((s) => Object.keys(s.pumps)));
      if ([...pumps].some((p) => owners.get(p) !== 1)) return false;
    }
    return statuses.every(
      (s) =>
        s.sensor_posts_queued === 0 &&
        Object.values(s.pumps).every((p) => (p as { open_groups: number }).open_groups === 0) &&
        Object.values(s.logbooks ?? {}).every((l) => l.queued === 0) &&
        // No catch-up running, no notified row being read, no reader waiting for a catch-up, no record
        // waiting for its write (the post ledger's included).
        (s.work === undefined ||
          (!s.work.catch_up_running &&
            s.work.rows_being_read === 0 &&
            s.work.readers_held === 0 &&
            s.work.records_queued === 0)),
    );
  }

  private arrivals(): number {
    return [...new Set(Object.values(this.o.backends))].reduce((n, b) => n + b.requests.length, 0);
  }

  /**
   * Waits until nothing expected is missing (bounded), then until the engines are quiescent and nothing
   * arrives at any backend for `quietMs` (bounded), then counts. It never fails by itself: the figures say
   * what happened, and the test's assertions fail on them.
   */
  async settle(o: SettleOptions): Promise<LedgerCount> {
    const timeoutMs = o.timeoutMs ?? 60_000;
    const quietMs = o.quietMs ?? 1_000;
    const exp = await this.expected(o.admin);
    this.last = undefined;
    let deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline && this.count(exp).lost > 0) await pause(200);
    deadline = Date.now() + timeoutMs;
    let quiescent = false;
    while (!quiescent && Date.now() < deadline) {
      if (!(await this.quiescent(o))) {
        await pause(50);
        continue;
      }
      const before = this.arrivals();
      await pause(quietMs);
      quiescent = this.arrivals() === before && (await this.quiescent(o));
    }
    this.last = { ...this.count(exp), quiescent };
    return this.last;
  }

  /** The last settled count, as one line in the test output and in test-artifacts/reliability.txt. */
  report(name: string, bound?: { posts: number; vectors: number }): LedgerCount {
    const c = this.last;
    if (!c) throw new Error('report() before settle()');
    const limits = bound ? `bound: posts <= ${bound.posts}, vectors <= ${bound.vectors}` : 'must be 0';
    const line =
      `fault ${name}: readings ${c.readings} expected, ${c.readingsDelivered} delivered; ` +
      `vectors ${c.vectors} expected, ${c.vectorsDelivered} delivered; lost ${c.lost}; ` +
      `excess posts ${c.excessPosts}, excess vectors ${c.excessVectors} (${limits}); ` +
      `unexpected ${c.unexpected}; key problems ${c.keyProblems}; wrong API key ${c.wrongApiKey}; ` +
      `quiescent ${c.quiescent ? 'yes' : 'no'}` +
      (c.examples.length > 0 ? ` (e.g. ${c.examples.slice(0, 3).join('; ')})` : '');
    console.log(line);
    mkdirSync('test-artifacts', { recursive: true });
    appendFileSync('test-artifacts/reliability.txt', `${line}\n`);
    return c;
  }
}

function readingId(backend: FakeBackend, path: string, id: number, valor: number): string {
  return `${backend.port}|${path}|${id}|${valor}`;
}

function fits(v: VectorItem, body: Record<string, number>): boolean {
  for (const k of Object.keys(body)) if (!v.fields.includes(k)) return false;
  for (const f of v.fields) {
    const present = v.present.get(f);
    if (present) {
      if (!(f in body) || !present.has(body[f] as number)) return false;
    } else if (f in body) {
      if (!v.fills.get(f)?.has(body[f] as number)) return false;
    } else if (!v.optional.has(f)) return false;
  }
  return true;
}

function describe(r: RecordedRequest): string {
  return `${r.path} ${r.raw.slice(0, 160)}`;
}

/** Where no process dies: every expected reading and vector answered 200 exactly once, nothing else. */
export function expectExactlyOnce(c: LedgerCount): void {
  expect(
    {
      lost: c.lost,
      excessPosts: c.excessPosts,
      excessVectors: c.excessVectors,
      unexpected: c.unexpected,
      keyProblems: c.keyProblems,
      wrongApiKey: c.wrongApiKey,
      quiescent: c.quiescent,
    },
    c.examples.join('\n'),
  ).toEqual({
    lost: 0,
    excessPosts: 0,
    excessVectors: 0,
    unexpected: 0,
    keyProblems: 0,
    wrongApiKey: 0,
    quiescent: true,
  });
}

/** Where a process dies: nothing lost or misdelivered, and the excess held to `bound`. */
export function expectWithinBound(c: LedgerCount, bound: { posts: number; vectors: number }): void {
  expect(
    {
      lost: c.lost,
      unexpected: c.unexpected,
      keyProblems: c.keyProblems,
      wrongApiKey: c.wrongApiKey,
      quiescent: c.quiescent,
    },
    c.examples.join('\n'),
  ).toEqual({ lost: 0, unexpected: 0, keyProblems: 0, wrongApiKey: 0, quiescent: true });
  expect(c.excessPosts, c.examples.join('\n')).toBeLessThanOrEqual(bound.posts);
  expect(c.excessVectors, c.examples.join('\n')).toBeLessThanOrEqual(bound.vectors);
}
