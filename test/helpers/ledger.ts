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

/** How the outbox stores a member row: `table_no * 2^40 + id` (engine schema version 2, frozen in test/fixtures). */
const MEMBER_BITS = 40n;

/**
 * The strict delivery ledger. Expectations come from the inputs only: the rows in the sensor tables and
 * the pump definitions, never from the code under test (no key formula). Every request a test backend
 * answered 200 is matched against them:
 *
 * - a reading (a row with a finite valor) must reach its pump's backend at `pathPrefix + endpoint`, with
 *   the body exactly `{"id_sensor": <row id>, "valor": <valor_sensor>}`;
 * - a vector (a pump timestamp whose rows cover every vector field; see `partial` for the others) must reach
 *   its pump's backend at `pathPrefix + unifiedPath`. It is identified by its rows, not by its body: the
 *   request's Idempotency-Key names an outbox row, whose `members` (the engine's record of the rows it built
 *   the vector from) must be exactly the rows the test inserted for that timestamp (one occurrence of a key
 *   text: see `occurrence`). The body must then be exactly what those rows give: each field the value of its
 *   row (where two tables feed one field, the first row to arrive wins, and a second row of that table is a
 *   correction; arrival order is the members' order), each missing field the value the fill policy must pick
 *   (see `fills`). A wrong value is `wrongValues`; a key the outbox does not hold, or members that are not
 *   one expected vector's rows, is `unexpected`;
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
  /**
   * Which occurrence of its key text a row belongs to, when a key text comes back (`HH:MM` on two days, a
   * clock reset): rows of one pump with the same key text and the same occurrence form one expected vector.
   * Default: one occurrence per key text.
   */
  occurrence?: (pump: string, table: string, id: number, tiempo: string) => string;
  /**
   * How a missing field's fill is checked. 'recorded' (default): the outbox records each fill's source; a
   * fill recorded as `field:default` must be exactly the pump's default, one recorded as `field:last` a
   * value of that field's own tables committed before the vector was recorded, and a field left out must be
   * one the backend makes optional and the pump has no default for. Which row was the engine's last value
   * depends on when rows arrived (a catch-up reads far behind the commits, a restart forgets last values),
   * so this is as exact as the facts allow in general. 'exact', for a test that makes arrival order known
   * (one engine saw every row, live, and nothing of the field's tables was committed while the vector
   * waited): the fill must be the policy's own pick, the newest row of that field's tables known to have
   * reached the engine before the vector was recorded (a member of a group recorded earlier, or committed
   * `fillAmbiguityMs` before), else the default, else the field left out where optional. A newer row of the
   * field committed before the record but not known to have arrived first may be the pick too: both values
   * are accepted and counted in `ambiguousFills`, which such a test asserts is 0.
   */
  fills?: 'exact' | 'recorded';
  /** See `fills`; default 1000 ms. */
  fillAmbiguityMs?: number;
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

/** A row of a vector field, as the test inserted it. */
interface VectorRow {
  table: string;
  id: number;
  field: string;
  valor: number;
  /** `tiempo_ejecucion` in ms: when its transaction began (the tests commit one statement at a time). */
  at: number;
}

interface VectorItem extends Item {
  kind: 'vector';
  tiempo: string;
  /** The pump's vector fields, in the specification's order. */
  fields: string[];
  /** Its rows, by `table:id`. */
  rows: Map<string, VectorRow>;
  /** The pump's rows of each vector field, for the fill policy's last value. */
  fieldRows: Map<string, VectorRow[]>;
  defaults: Record<string, number>;
  optional: Set<string>;
}

/** The test's own copy of every outbox row the engine wrote (`keepOutboxRecords`). */
const OUTBOX_COPY = 'public.ledger_outbox_copy';

async function outboxCopyExists(db: pg.Pool): Promise<boolean> {
  const { rows } = await db.query<{ t: string | null }>('SELECT to_regclass($1)::text AS t', [OUTBOX_COPY]);
  return rows[0]?.t != null;
}

/**
 * For a test whose engines delete outbox rows while it runs (retention): a trigger of the test's own keeps a
 * copy of each row as the engine writes it, so that `refresh` still finds the vector a key names after the
 * row itself is gone. The engine schema must exist (call it after the first engine has started).
 */
export async function keepOutboxRecords(db: pg.Pool): Promise<void> {
  await db.query(`
    CREATE TABLE IF NOT EXISTS ${OUTBOX_COPY} (LIKE ${ENGINE_SCHEMA}.outbox);
    CREATE OR REPLACE FUNCTION public.ledger_copy_outbox() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      DELETE FROM ${OUTBOX_COPY} WHERE idempotency_key = NEW.idempotency_key;
      INSERT INTO ${OUTBOX_COPY} SELECT NEW.*;
      RETURN NULL;
    END $$;
    DROP TRIGGER IF EXISTS ledger_copy_outbox ON ${ENGINE_SCHEMA}.outbox;
    CREATE TRIGGER ledger_copy_outbox AFTER INSERT OR UPDATE ON ${ENGINE_SCHEMA}.outbox
      FOR EACH ROW EXECUTE FUNCTION public.ledger_copy_outbox();
    INSERT INTO ${OUTBOX_COPY} SELECT * FROM ${ENGINE_SCHEMA}.outbox o
      WHERE NOT EXISTS (SELECT 1 FROM ${OUTBOX_COPY} c WHERE c.idempotency_key = o.idempotency_key);
  `);
}

/** An outbox row as the engine recorded it: which rows a vector was built from, and how it was filled. */
interface OutboxRecord {
  pump: string;
  tiempo: string;
  /** `table:id` of each member, in the order the engine recorded them (the order they arrived). */
  members: string[];
  /** `field:last` / `field:default` per filled field. */
  filled: string[];
  /** When the engine recorded it (database clock, ms). */
  recordedAt: number;
}

export interface Expected {
  readings: Map<string, Item>;
  /** The tables whose posts go to each backend and path. */
  readingTables: Map<string, { pump: string; table: string; shared: boolean }[]>;
  vectors: VectorItem[];
  /** The vectors by backend and path, and the pump that path belongs to. */
  byPath: Map<string, { pump: string; items: VectorItem[] }>;
  /** Each expected vector by `pump|table:id` of each of its rows. */
  byRow: Map<string, VectorItem>;
  /** The engine's outbox by Idempotency-Key (refreshed by `refresh`). */
  outbox: Map<string, OutboxRecord>;
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
  /** Vector 200s whose body is not exactly what its rows and the fill policy give. */
  wrongValues: number;
  /** Fills of a row committed so close to the vector's record that either value is the policy's (see `fills`). */
  ambiguousFills: number;
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
  /** `pump|table:id` → when the first outbox row holding that row as a member was recorded (refresh). */
  private recordedWith = new Map<string, number>();

  constructor(private readonly o: LedgerOptions) {}

  private backendOf(pump: string): FakeBackend {
    const b = this.o.backends[pump];
    if (!b) throw new Error(`the ledger has no backend for pump ${pump}`);
    return b;
  }

  /** What must be delivered, read from the sensor tables. */
  async expected(db: pg.Pool): Promise<Expected> {
    const readings = new Map<string, Item>();
    const readingTables = new Map<string, { pump: string; table: string; shared: boolean }[]>();
    const vectors: VectorItem[] = [];
    const byRow = new Map<string, VectorItem>();
    const shared = sharedTables(this.o.pumps);
    for (const p of this.o.pumps) {
      const backend = this.backendOf(p.id);
      const spec = specPumpFor(p);
      // The vector's fields: the specification's where the pump is a specified one (a sensor with
      // inVector false feeds only its own endpoint; two tables may feed one field), else the test's own.
      const vectorSensors = (spec?.sensors ?? p.sensors).filter((s) => s.inVector !== false);
      const fields = [...new Set(vectorSensors.map((s) => s.field))];
      const fieldOf = new Map(vectorSensors.map((s) => [s.table, s.field]));
      /** Occurrence (`tiempo` + tag) → its rows. */
      const byOccurrence = new Map<string, { tiempo: string; rows: VectorRow[] }>();
      const fieldRows = new Map<string, VectorRow[]>(fields.map((f) => [f, []]));
      for (const s of p.sensors) {
        const sensorPath = spec ? specSensorPath(spec, s.table) : `${p.pathPrefix}${s.endpoint}`;
        const at = `${backend.port}|${sensorPath}`;
        readingTables.set(at, [
          ...(readingTables.get(at) ?? []),
          { pump: p.id, table: s.table, shared: shared.has(s.table) },
        ]);
        const { rows } = await db.query<{
          id: number;
          tiempo_sensor: string;
          valor_sensor: number | null;
          at: number;
        }>(
          `SELECT id, tiempo_sensor, valor_sensor, (extract(epoch FROM tiempo_ejecucion) * 1000)::float8 AS at
             FROM ${quoteIdent(s.table)} ORDER BY id`,
        );
        const field = fieldOf.get(s.table);
        for (const r of rows) {
          // A null or non-finite valor is bad input: dead-lettered, never posted, no part of a vector.
          if (r.valor_sensor === null || !Number.isFinite(r.valor_sensor)) continue;
          // So is a row with no timestamp text: it names no vector.
          if (r.tiempo_sensor === null || r.tiempo_sensor.trim() === '') continue;
          const path = spec ? specSensorPath(spec, s.table) : `${p.pathPrefix}${s.endpoint}`;
          if (!this.o.excludeReading?.(s.table, r.id)) {
            readings.set(readingId(backend, path, s.table, r.id, r.valor_sensor), {
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
          if (field === undefined) continue;
          const row: VectorRow = { table: s.table, id: r.id, field, valor: r.valor_sensor, at: r.at };
          fieldRows.get(field)?.push(row);
          const tag = this.o.occurrence?.(p.id, s.table, r.id, r.tiempo_sensor) ?? '';
          const k = `${r.tiempo_sensor}\u0000${tag}`;
          const occ = byOccurrence.get(k) ?? { tiempo: r.tiempo_sensor, rows: [] };
          occ.rows.push(row);
          byOccurrence.set(k, occ);
        }
      }
      const optional = new Set(Object.keys(p.optionalFields ?? {}));
      for (const { tiempo, rows } of byOccurrence.values()) {
        const present = new Set(rows.map((r) => r.field)).size;
        const full = present === fields.length;
        if (!full && present < p.minFields) continue;
        if (this.o.excludeVector?.(p.id, tiempo)) continue;
        const v: VectorItem = {
          kind: 'vector',
          pump: p.id,
          backend,
          path: spec ? specUnifiedPath(spec) : `${p.pathPrefix}${p.unifiedPath}`,
          label: `${p.id} vector ${tiempo} (rows ${rows
            .slice(0, 3)
            .map((r) => `${r.table}:${r.id}`)
            .join(', ')}${rows.length > 3 ? ', …' : ''})${full ? '' : ` (${present} of ${fields.length})`}`,
          required: full || (this.o.partial ?? 'expected') === 'expected',
          answers: 0,
          keys: new Set(),
          keyPattern: vectorKeyPattern(p.id),
          tiempo,
          fields,
          rows: new Map(rows.map((r) => [`${r.table}:${r.id}`, r])),
          fieldRows,
          defaults: p.defaults ?? {},
          optional,
        };
        vectors.push(v);
        for (const r of rows) byRow.set(`${p.id}|${r.table}:${r.id}`, v);
      }
    }
    const byPath = new Map<string, { pump: string; items: VectorItem[] }>();
    for (const v of vectors) {
      const k = `${v.backend.port}|${v.path}`;
      const e = byPath.get(k) ?? { pump: v.pump, items: [] };
      e.items.push(v);
      byPath.set(k, e);
    }
    return { readings, readingTables, vectors, byPath, byRow, outbox: new Map() };
  }

  /**
   * Reads the engine's outbox into `exp`: each vector's Idempotency-Key, its member rows (decoded through
   * the checkpoints' table numbers, per reader) and its fills. Call it before `count`.
   */
  async refresh(db: pg.Pool, exp: Expected): Promise<void> {
    const { rows: tables } = await db.query<{ table_name: string; pump: string; table_no: number }>(
      `SELECT table_name, pump, table_no FROM ${ENGINE_SCHEMA}.checkpoints`,
    );
    const tableOf = new Map(tables.map((t) => [t.table_no, t.table_name]));
    const { rows } = await db.query<{
      idempotency_key: string;
      pump: string;
      tiempo_sensor: string;
      members: string[];
      filled: string[] | null;
      at: number;
    }>(
      `SELECT idempotency_key, pump, tiempo_sensor, members::text[] AS members, filled,
              (extract(epoch FROM created_at) * 1000)::float8 AS at
         FROM ${ENGINE_SCHEMA}.outbox
       ${(await outboxCopyExists(db)) ? `UNION SELECT idempotency_key, pump, tiempo_sensor, members::text[], filled, (extract(epoch FROM created_at) * 1000)::float8 FROM ${OUTBOX_COPY} c WHERE NOT EXISTS (SELECT 1 FROM ${ENGINE_SCHEMA}.outbox o WHERE o.idempotency_key = c.idempotency_key)` : ''}`,
    );
    exp.outbox = new Map(
      rows.map((r) => [
        r.idempotency_key,
        {
          pump: r.pump,
          tiempo: r.tiempo_sensor,
          members: r.members.map((m) => {
            const n = BigInt(m);
            const no = Number(n >> MEMBER_BITS);
            const id = n & ((1n << MEMBER_BITS) - 1n);
            return `${tableOf.get(no) ?? `table#${no}`}:${id}`;
          }),
          filled: r.filled ?? [],
          recordedAt: r.at,
        },
      ]),
    );
    this.recordedWith = new Map();
    for (const [, rec] of exp.outbox)
      for (const m of rec.members) {
        const k = `${rec.pump}|${m}`;
        if (rec.recordedAt < (this.recordedWith.get(k) ?? Number.POSITIVE_INFINITY))
          this.recordedWith.set(k, rec.recordedAt);
      }
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
    const values = { wrong: 0, ambiguous: 0 };
    const backends = [...new Set(Object.values(this.o.backends))];
    for (const backend of backends) {
      for (const r of backend.requests) {
        if (r.status !== 200) continue;
        if (r.apiKey !== this.o.apiKey) {
          wrongApiKey += 1;
          note(`200 without the right X-API-Key: ${describe(r)}`);
        }
        const item = this.match(exp, backend, r, note, values);
        if (!item) {
          unexpected += 1;
          note(`unexpected 200: ${describe(r)}`);
          continue;
        }
        item.answers += 1;
        item.keys.add(r.idempotencyKey);
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
      wrongValues: values.wrong,
      ambiguousFills: values.ambiguous,
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
   * its rows: the outbox row its Idempotency-Key names must be this path's pump's, and its members exactly
   * one expected vector's rows; its body is then checked value by value (`wrongValues`).
   */
  private match(
    exp: Expected,
    backend: FakeBackend,
    r: RecordedRequest,
    note: (s: string) => void,
    values: { wrong: number; ambiguous: number },
  ): Item | undefined {
    if (!r.json) return undefined;
    const keys = Object.keys(r.body);
    if (keys.length === 2 && 'id_sensor' in r.body && 'valor' in r.body) {
      const id = r.body.id_sensor;
      const valor = r.body.valor;
      if (typeof id !== 'number' || typeof valor !== 'number') return undefined;
      // Two tables of a pump may post to one path (plant-2026-03): the key tells them apart, where it
      // has the specification's form; otherwise the first table whose row this is.
      const tables = exp.readingTables.get(`${backend.port}|${r.path}`) ?? [];
      const byKey = tables.find((t) =>
        readingKeyPattern(t.pump, t.table, id, t.shared).test(r.idempotencyKey ?? ''),
      );
      for (const t of byKey ? [byKey] : tables) {
        const item = exp.readings.get(readingId(backend, r.path, t.table, id, valor));
        if (item) return item;
      }
      return undefined;
    }
    const route = exp.byPath.get(`${backend.port}|${r.path}`);
    if (!route) return undefined;
    const rec = r.idempotencyKey === undefined ? undefined : exp.outbox.get(r.idempotencyKey);
    if (!rec) {
      note(`a vector under a key the outbox does not hold: ${r.idempotencyKey} ${describe(r)}`);
      return undefined;
    }
    if (rec.pump !== route.pump) {
      note(`pump ${rec.pump}'s vector ${rec.tiempo} at pump ${route.pump}'s path: ${describe(r)}`);
      return undefined;
    }
    const item = exp.byRow.get(`${rec.pump}|${rec.members[0]}`);
    const members = new Set(rec.members);
    if (
      !item ||
      item.tiempo !== rec.tiempo ||
      members.size !== item.rows.size ||
      ![...members].every((m) => item.rows.has(m))
    ) {
      note(
        `vector ${rec.pump} ${rec.tiempo} of rows ${rec.members.slice(0, 4).join(', ')}${rec.members.length > 4 ? ', …' : ''} ` +
          `is not one expected vector's rows${item ? ` (${item.label} has ${item.rows.size})` : ''}`,
      );
      return undefined;
    }
    const problems = this.checkBody(item, rec, r.body, values);
    if (problems.length > 0) {
      values.wrong += 1;
      note(`${item.label}: ${problems.slice(0, 3).join('; ')}`);
    }
    return item;
  }

  /**
   * What is wrong with a vector's body, given its rows (arrival order from the members) and the fill policy.
   * Present fields: the first table to deliver a field keeps it; a later row of that same table replaces
   * its value (a correction). Missing fields: see `fills`.
   */
  private checkBody(
    v: VectorItem,
    rec: OutboxRecord,
    body: Record<string, unknown>,
    values: { ambiguous: number },
  ): string[] {
    const problems: string[] = [];
    const want = new Map<string, { table: string; valor: number }>();
    for (const m of rec.members) {
      const row = v.rows.get(m) as VectorRow;
      const held = want.get(row.field);
      if (!held || held.table === row.table) want.set(row.field, { table: row.table, valor: row.valor });
    }
    for (const k of Object.keys(body))
      if (!v.fields.includes(k)) problems.push(`field ${k} is no vector field`);
    const claims = new Map(
      rec.filled.map((f) => {
        const i = f.lastIndexOf(':');
        return [f.slice(0, i), f.slice(i + 1)];
      }),
    );
    for (const f of v.fields) {
      const got = body[f];
      const present = want.get(f);
      if (present) {
        if (got !== present.valor)
          problems.push(`${f} = ${String(got)}, its row ${present.table} holds ${present.valor}`);
        continue;
      }
      const allowed = this.fillFor(v, f, rec, claims.get(f));
      if (allowed.ambiguous) values.ambiguous += 1;
      if (allowed.values.has(Number.NaN)) {
        problems.push(`${f} has no row, no fresh last value, no default, and is required: not sendable`);
      } else if (allowed.values.size === 0) {
        if (got !== undefined) problems.push(`${f} = ${String(got)}, the policy leaves it out`);
      } else if (typeof got !== 'number' || !allowed.values.has(got)) {
        problems.push(
          `${f} filled with ${String(got)}, the policy picks ${[...allowed.values].join(' or ')}`,
        );
      }
    }
    return problems;
  }

  /** The values the fill policy may pick for a missing field (none: the field is left out). */
  private fillFor(
    v: VectorItem,
    field: string,
    rec: OutboxRecord,
    claim: string | undefined,
  ): { values: Set<number>; ambiguous: boolean } {
    const fallback = v.defaults[field];
    const orDefault = () => new Set(fallback !== undefined ? [fallback] : v.optional.has(field) ? [] : [NaN]);
    const rows = (v.fieldRows.get(field) ?? []).filter((r) => r.at <= rec.recordedAt);
    const newest = (rs: VectorRow[]) =>
      rs.reduce<VectorRow | undefined>(
        (a, r) => (!a || r.at > a.at || (r.at === a.at && r.id > a.id) ? r : a),
        undefined,
      );
    if ((this.o.fills ?? 'recorded') === 'recorded') {
      if (claim === 'default') return { values: new Set([fallback ?? Number.NaN]), ambiguous: false };
      if (claim === undefined) return { values: orDefault(), ambiguous: false };
      return { values: new Set(rows.map((r) => r.valor)), ambiguous: false };
    }
    // A row is known to have reached the engine before this vector was resolved when a group holding it
    // was recorded before (the engine built it from that row), or when it was committed long before.
    const margin = this.o.fillAmbiguityMs ?? 1_000;
    const known = (r: VectorRow) =>
      r.at <= rec.recordedAt - margin ||
      (this.recordedWith.get(`${v.pump}|${r.table}:${r.id}`) ?? Number.POSITIVE_INFINITY) < rec.recordedAt;
    const last = newest(rows.filter(known));
    // Rows of the field newer than that one, not known to have arrived first: either may be the pick.
    const unsure = rows.filter(
      (r) => !known(r) && (!last || r.at > last.at || (r.at === last.at && r.id > last.id)),
    );
    const out = last
      ? new Set([last.valor])
      : unsure.length > 0 && fallback !== undefined
        ? new Set([fallback])
        : orDefault();
    if (!last && unsure.length > 0) out.delete(Number.NaN);
    for (const r of unsure) out.add(r.valor);
    return { values: out, ambiguous: unsure.length > 0 };
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
    const lost = async () => {
      await this.refresh(o.admin, exp);
      return this.count(exp).lost > 0;
    };
    while (Date.now() < deadline && (await lost())) await pause(200);
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
    await this.refresh(o.admin, exp);
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
      `unexpected ${c.unexpected}; key problems ${c.keyProblems}; wrong values ${c.wrongValues}` +
      `${c.ambiguousFills > 0 ? ` (${c.ambiguousFills} fills either of two)` : ''}; wrong API key ${c.wrongApiKey}; ` +
      `quiescent ${c.quiescent ? 'yes' : 'no'}` +
      (c.examples.length > 0 ? ` (e.g. ${c.examples.slice(0, 3).join('; ')})` : '');
    console.log(line);
    mkdirSync('test-artifacts', { recursive: true });
    appendFileSync('test-artifacts/reliability.txt', `${line}\n`);
    return c;
  }
}

function readingId(backend: FakeBackend, path: string, table: string, id: number, valor: number): string {
  return `${backend.port}|${path}|${table}|${id}|${valor}`;
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
      wrongValues: c.wrongValues,
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
    wrongValues: 0,
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
      wrongValues: c.wrongValues,
      wrongApiKey: c.wrongApiKey,
      quiescent: c.quiescent,
    },
    c.examples.join('\n'),
  ).toEqual({ lost: 0, unexpected: 0, keyProblems: 0, wrongValues: 0, wrongApiKey: 0, quiescent: true });
  expect(c.excessPosts, c.examples.join('\n')).toBeLessThanOrEqual(bound.posts);
  expect(c.excessVectors, c.examples.join('\n')).toBeLessThanOrEqual(bound.vectors);
}
