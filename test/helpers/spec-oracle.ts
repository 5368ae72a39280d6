import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * The wirings' paths, keys and headers as the specification states them, read straight from
 * `../shared/spec/pumps.json` (the default wiring) and `../shared/spec/plant-2026-03.json` (the March-2026
 * profile), never through the product's loader (src/config/): a wiring mistake in pumps/ or in the loader
 * must not agree with itself. A fresh clone without ../shared/spec reads the frozen copies in
 * test/fixtures/spec/ (the same data, formatted as the repository formats JSON).
 */

const here = path.dirname(fileURLToPath(import.meta.url));
const repoRoot = path.resolve(here, '..', '..');

function specFile(name: string): string {
  const shared = path.resolve(repoRoot, '..', 'shared', 'spec', name);
  return existsSync(shared) ? shared : path.join(repoRoot, 'test', 'fixtures', 'spec', name);
}

export interface SpecSensor {
  channel: string;
  table: string;
  field: string;
  endpoint: string;
  inVector?: boolean;
}

export interface SpecPump {
  id: string;
  pathPrefix: string;
  unifiedPath: string;
  sensors: SpecSensor[];
}

export interface SpecWiring {
  name: 'default' | 'plant-2026-03';
  pumps: SpecPump[];
  /** The logbook streams' tables (plant-2026-03 only). */
  logbookTables: string[];
}

function readWiring(name: SpecWiring['name'], file: string): SpecWiring {
  const doc = JSON.parse(readFileSync(specFile(file), 'utf8')) as {
    pumps: SpecPump[];
    logbooks?: { streams: { table: string }[] };
  };
  return {
    name,
    pumps: doc.pumps.map((p) => ({
      id: p.id,
      pathPrefix: p.pathPrefix,
      unifiedPath: p.unifiedPath,
      sensors: p.sensors.map((s) => ({
        channel: s.channel,
        table: s.table,
        field: s.field,
        endpoint: s.endpoint,
        ...(s.inVector === false ? { inVector: false } : {}),
      })),
    })),
    logbookTables: (doc.logbooks?.streams ?? []).map((s) => s.table),
  };
}

export const WIRINGS: SpecWiring[] = [
  readWiring('default', 'pumps.json'),
  readWiring('plant-2026-03', 'plant-2026-03.json'),
];

/** The logbook classifier's path: `{base}/gm-bitacoras/clasificar`, base without /sensores(_b). */
export const LOGBOOK_PATH = '/gm-bitacoras/clasificar';

/** The headers every request to the backend carries (besides Idempotency-Key). */
export const JSON_CONTENT_TYPE = /^application\/json(\s*;.*)?$/i;

/** A pump as a test configured it: its id and which table feeds which field. */
export interface ConfiguredPump {
  id: string;
  sensors: { table: string; field: string }[];
}

function sameSensors(a: { table: string; field: string }[], b: { table: string; field: string }[]): boolean {
  const key = (s: { table: string; field: string }) => `${s.table}\u0000${s.field}`;
  const x = new Set(a.map(key));
  return x.size === b.length && b.every((s) => x.has(key(s)));
}

/**
 * The specified pump this configured pump is: same id, and exactly the spec's tables and fields in one of
 * the wirings. Undefined for a test's own pump definitions (a PUMPS_DIR of the test's making).
 */
export function specPumpFor(p: ConfiguredPump): SpecPump | undefined {
  for (const w of WIRINGS) {
    const s = w.pumps.find((q) => q.id === p.id);
    if (s && sameSensors(s.sensors, p.sensors)) return s;
  }
  return undefined;
}

/** The per-sensor path of `table` for the specified pump. */
export function specSensorPath(p: SpecPump, table: string): string {
  const s = p.sensors.find((x) => x.table === table);
  if (!s) throw new Error(`the spec's pump ${p.id} reads no table ${table}`);
  return `${p.pathPrefix}${s.endpoint}`;
}

export function specUnifiedPath(p: SpecPump): string {
  return `${p.pathPrefix}${p.unifiedPath}`;
}

/** Tables that two or more of the configured pumps read. */
export function sharedTables(pumps: ConfiguredPump[]): Set<string> {
  const readers = new Map<string, number>();
  for (const p of pumps)
    for (const t of new Set(p.sensors.map((s) => s.table))) readers.set(t, (readers.get(t) ?? 0) + 1);
  return new Set([...readers].filter(([, n]) => n > 1).map(([t]) => t));
}

const REPLAY = '(-replay-[0-9]+)?';

function literal(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/**
 * The Idempotency-Key a reading's post must carry: `rd-<table>-<id>`, or `rd-<pump>-<table>-<id>` for a
 * table several configured pumps read; a replay appends `-replay-<n>`.
 */
export function readingKeyPattern(pump: string, table: string, id: number, shared: boolean): RegExp {
  const base = shared ? `rd-${pump}-${table}-${id}` : `rd-${table}-${id}`;
  return new RegExp(`^${literal(base)}${REPLAY}$`);
}

/** A vector's key: `vec-<pump>-` and 32 hex digits (a hash of pump, key text and first row). */
export function vectorKeyPattern(pump: string): RegExp {
  return new RegExp(`^vec-${literal(pump)}-[0-9a-f]{32}${REPLAY}$`);
}

/** A logbook entry's key: `lb-<table>-<id>`. */
export function logbookKeyPattern(table: string, id: number): RegExp {
  return new RegExp(`^${literal(`lb-${table}-${id}`)}$`);
}
