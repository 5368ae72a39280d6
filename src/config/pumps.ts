import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { z } from 'zod';

/**
 * Definitions: what a folder of JSON files says about the plant. Two kinds of file:
 * - a pump (`"kind": "pump"`, or no kind at all): its sensors, each a channel and table feeding one field
 *   of the pump's unified vector (unless `inVector` is false) and posted on its own to an endpoint;
 * - a logbook (`"kind": "logbook"`): event streams whose rows are forwarded one by one, never grouped.
 * docs/pumps.md describes the format, the checks below and the built-in profiles.
 */

/** PostgreSQL identifiers (channels, tables) are at most 63 bytes. */
const identifier = z
  .string()
  .min(1)
  .refine((s) => Buffer.byteLength(s, 'utf8') <= 63, 'must be at most 63 bytes (a PostgreSQL identifier)');

const definitionId = z.string().regex(/^[A-Za-z0-9_-]{1,32}$/, 'letters, digits, _ or -, at most 32');
const envName = z.string().regex(/^[A-Z_][A-Z0-9_]*$/, 'an environment variable name such as BASE_URL');

const sensorSchema = z.object({
  channel: identifier,
  table: identifier,
  field: z.string().min(1),
  endpoint: z.string().startsWith('/'),
  description: z.string().default(''),
  unit: z.string().default(''),
  /** false: the reading is only posted to its endpoint and never enters the unified body. */
  inVector: z.boolean().default(true),
  /** Informational: where the channel/table pairing comes from (the facts file's tableBasis). */
  tableBasis: z.string().optional(),
  /** Informational: anything an operator should know about this sensor. */
  note: z.string().optional(),
  /**
   * When the channel counts as silent: no reading for this many of its cadences (its median interval),
   * or for this many seconds. Default 5 cadences (see docs/pumps.md, "Health").
   */
  silentAfter: z
    .union([
      z.object({ cadences: z.number().min(1).max(1_000) }).strict(),
      z
        .object({
          seconds: z
            .number()
            .positive()
            .max(7 * 86_400),
        })
        .strict(),
    ])
    .default({ cadences: 5 }),
  /** Flat: this many readings in a row with one value. Absent: never judged flat. */
  flatAfter: z.number().int().min(2).max(1_000_000).optional(),
});

/**
 * A pump's verdict from its failure probability (percent): levels, on-delay, recovery margin, staleness.
 * Defaults: warning 50, alarm 80, on-delay 3 vectors, off-delay 5 vectors, recovery 10 points, stale after
 * 120 s.
 */
const healthSchema = z
  .object({
    /** Warning and alarm levels on the failure probability, in percent (0..100). */
    warning: z.number().min(0).max(100).default(50),
    alarm: z.number().min(0).max(100).default(80),
    /**
     * A level is taken once it is held for `vectors` answers in a row, or for `seconds` (whichever comes
     * first; leave `seconds` out to count vectors only).
     */
    onDelay: z
      .object({
        vectors: z.number().int().min(1).max(10_000).default(3),
        seconds: z.number().positive().max(86_400).optional(),
      })
      .strict()
      .prefault({}),
    /**
     * A level is left once the probability stays below its clear point (the level minus `recovery`) for
     * `vectors` answers in a row, or for `seconds` (off-delay).
     */
    offDelay: z
      .object({
        vectors: z.number().int().min(1).max(10_000).default(5),
        seconds: z.number().positive().max(86_400).optional(),
      })
      .strict()
      .prefault({}),
    /** Percentage points below a level before it clears (hysteresis). */
    recovery: z.number().min(0).max(100).default(10),
    /** Seconds without an answer after which the verdict is unknown. */
    staleAfter: z
      .number()
      .positive()
      .max(7 * 86_400)
      .default(120),
  })
  .strict();

const pumpSchema = z.object({
  kind: z.literal('pump').default('pump'),
  id: definitionId,
  name: z.string().min(1),
  /** The environment variable holding this pump's backend base URL (BASE_URL, BASE_URL_B). */
  baseUrlEnv: envName,
  /** The suffix the base URL must end with; appended when missing. */
  pathPrefix: z.string().startsWith('/'),
  unifiedPath: z.string().startsWith('/'),
  /** A vector is sent once at least this many of its vector fields are present (after the settle time). */
  minFields: z.number().int().positive(),
  /** Fallback value per vector field for a partial vector, used when no recent last value is known. */
  defaults: z.record(z.string(), z.number()).default({}),
  /** Vector fields the backend accepts a vector without (it applies its own default). */
  optionalFields: z.record(z.string(), z.number()).default({}),
  /** Informational: the values an earlier version of the original filled in. Not used. */
  seedDefaults: z.record(z.string(), z.number()).optional(),
  /** The verdict's thresholds (docs/pumps.md, "Health"); every key has a default. */
  health: healthSchema.prefault({}),
  sensors: z.array(sensorSchema).min(1),
});

const logbookStreamSchema = z.object({
  channel: identifier,
  table: identifier,
  /** What the backend calls this stream in the request body (`"tabla": "a"`). */
  tabla: z.string().regex(/^[a-z0-9_]{1,32}$/, 'lower-case letters, digits or _, at most 32'),
  /** The pump whose operators write this logbook (a label for logs and pages). */
  pump: z.string().min(1),
});

const logbookSchema = z.object({
  kind: z.literal('logbook'),
  id: definitionId,
  name: z.string().min(1),
  /** The variable holding the base URL; a trailing /sensores or /sensores_b is removed from it. */
  baseUrlEnv: envName.default('BASE_URL'),
  /** Appended to the base URL: each row is POSTed there as {id, bitacora, tabla}. */
  endpoint: z.string().startsWith('/').default('/gm-bitacoras/clasificar'),
  streams: z.array(logbookStreamSchema).min(1),
});

export type SensorDefinition = z.infer<typeof sensorSchema>;
export type HealthDefinition = z.infer<typeof healthSchema>;
export type PumpDefinition = z.infer<typeof pumpSchema> & {
  /**
   * The unified body's fields: each distinct field of the sensors with inVector true, in the order the
   * sensors first name them. minFields, defaults and optionalFields refer to these.
   */
  vectorFields: string[];
};
/** A pump file as written: kind, defaults, inVector and the other defaulted keys may be left out. */
export type PumpFile = z.input<typeof pumpSchema>;
export type LogbookStream = z.infer<typeof logbookStreamSchema>;
export type LogbookDefinition = z.infer<typeof logbookSchema>;
export type LogbookFile = z.input<typeof logbookSchema>;
export type Definition = PumpDefinition | LogbookDefinition;

/** Everything one folder defines, with the linter's warnings (one line each, naming the file). */
export interface Definitions {
  pumps: PumpDefinition[];
  logbooks: LogbookDefinition[];
  warnings: string[];
}

/** The folder of pump definitions shipped with the package; its sub-folders are the built-in profiles. */
export const builtinPumpsDir = resolve(dirname(fileURLToPath(import.meta.url)), '../../pumps');

/** The name that selects the top-level files of pumps/ (a.json, b.json) as a profile. */
export const DEFAULT_PROFILE = 'default';

function problem(source: string, message: string): Error {
  return new Error(`pump definition ${source}: ${message}`);
}

function firstIssue(error: z.ZodError, source: string): Error {
  const issue = error.issues[0];
  const at = issue?.path.length ? ` at ${issue.path.join('.')}` : '';
  return new Error(`pump definition ${source}${at}: ${issue?.message ?? 'invalid'}`);
}

/** Parses one file's content: a pump unless its kind says logbook. Throws one line naming the file. */
export function parseDefinition(raw: unknown, source: string): Definition {
  const kind = typeof raw === 'object' && raw !== null ? (raw as { kind?: unknown }).kind : undefined;
  if (kind === 'logbook') {
    const result = logbookSchema.safeParse(raw);
    if (!result.success) throw firstIssue(result.error, source);
    lintLogbook(result.data, source);
    return result.data;
  }
  if (kind !== undefined && kind !== 'pump') {
    throw problem(source, `kind: got ${JSON.stringify(kind)}, expected "pump" (the default) or "logbook"`);
  }
  return parsePumpDefinition(raw, source);
}

/** Parses and checks one pump definition (the checks that need no other file). */
export function parsePumpDefinition(raw: unknown, source: string): PumpDefinition {
  const result = pumpSchema.safeParse(raw);
  if (!result.success) throw firstIssue(result.error, source);
  const pump = { ...result.data, vectorFields: vectorFieldsOf(result.data.sensors) };
  lintPump(pump, source);
  return pump;
}

function vectorFieldsOf(sensors: SensorDefinition[]): string[] {
  const fields: string[] = [];
  for (const s of sensors) if (s.inVector && !fields.includes(s.field)) fields.push(s.field);
  return fields;
}

/** What one pump's file cannot mean: errors, never warnings. */
function lintPump(p: PumpDefinition, source: string): void {
  const byChannel = new Map<string, SensorDefinition>();
  const byTable = new Map<string, SensorDefinition>();
  const inVector = new Map<string, boolean>();
  for (const s of p.sensors) {
    const sameChannel = byChannel.get(s.channel);
    if (sameChannel) {
      const what =
        sameChannel.field !== s.field || sameChannel.endpoint !== s.endpoint
          ? `for ${describeSensor(sameChannel)} and for ${describeSensor(s)}`
          : 'twice with the same field and endpoint';
      throw problem(source, `pump ${p.id} lists channel ${s.channel} ${what}; list each channel once`);
    }
    byChannel.set(s.channel, s);
    const sameTable = byTable.get(s.table);
    if (sameTable) {
      throw problem(
        source,
        `pump ${p.id} reads table ${s.table} on two channels (${sameTable.channel}, ${s.channel}); ` +
          'one row would feed two of its sensors',
      );
    }
    byTable.set(s.table, s);
    const seen = inVector.get(s.field);
    if (seen !== undefined && seen !== s.inVector) {
      throw problem(
        source,
        `pump ${p.id} field ${s.field} is inVector on one sensor and not on another; a field is in the vector or it is not`,
      );
    }
    inVector.set(s.field, s.inVector);
  }
  if (p.vectorFields.length === 0) throw problem(source, `pump ${p.id} has no sensor with inVector true`);
  lintHealth(p, source);
  if (p.minFields > p.vectorFields.length) {
    throw problem(
      source,
      `pump ${p.id} minFields ${p.minFields} exceeds its ${p.vectorFields.length} vector fields`,
    );
  }
  for (const [key, map] of [
    ['defaults', p.defaults],
    ['optionalFields', p.optionalFields],
  ] as const) {
    for (const f of Object.keys(map)) {
      if (!p.vectorFields.includes(f)) {
        const why = inVector.get(f) === false ? 'a field with inVector false' : 'not a field of its sensors';
        throw problem(source, `pump ${p.id} ${key} names ${f}, ${why}; it must name a vector field`);
      }
    }
  }
}

/** The levels must leave room for their recovery margin: a warning below its alarm, both above the margin. */
function lintHealth(p: PumpDefinition, source: string): void {
  const { warning, alarm, recovery } = p.health;
  if (!(warning < alarm)) {
    throw problem(source, `pump ${p.id} health.warning ${warning} must be below health.alarm ${alarm}`);
  }
  if (recovery > warning) {
    throw problem(
      source,
      `pump ${p.id} health.recovery ${recovery} exceeds health.warning ${warning}; a warning could never clear`,
    );
  }
}

function describeSensor(s: SensorDefinition): string {
  return `field ${s.field} → ${s.endpoint}`;
}

function lintLogbook(l: LogbookDefinition, source: string): void {
  const channels = new Set<string>();
  const tablas = new Set<string>();
  const tables = new Set<string>();
  for (const s of l.streams) {
    if (channels.has(s.channel)) throw problem(source, `logbook ${l.id} lists channel ${s.channel} twice`);
    if (tablas.has(s.tabla)) throw problem(source, `logbook ${l.id} lists tabla "${s.tabla}" twice`);
    if (tables.has(s.table)) throw problem(source, `logbook ${l.id} lists table ${s.table} twice`);
    channels.add(s.channel);
    tablas.add(s.tabla);
    tables.add(s.table);
  }
}

interface Located {
  definition: Definition;
  source: string;
}

interface Use {
  source: string;
  owner: string;
  kind: Definition['kind'];
  table: string;
}

/**
 * The checks across files. Errors (thrown): two definitions with one id; a channel that fires for two
 * tables; a table notified on two channels; a logbook table or channel that is also a sensor's.
 * Warnings (returned): an endpoint that receives rows of two tables, where id_sensor no longer names one
 * row; a channel no pump's vector uses (its readings are only posted on their own).
 */
export function lintDefinitions(located: Located[]): string[] {
  const ids = new Map<string, string>();
  const channelUse = new Map<string, Use>();
  const tableUse = new Map<string, { source: string; owner: string; channel: string }>();
  for (const { definition: d, source } of located) {
    const other = ids.get(d.id.toLowerCase());
    if (other !== undefined) {
      throw problem(source, `id ${d.id} is already defined by ${other} (ids are compared ignoring case)`);
    }
    ids.set(d.id.toLowerCase(), source);
    const pairs =
      d.kind === 'pump'
        ? d.sensors.map((s) => ({ channel: s.channel, table: s.table }))
        : d.streams.map((s) => ({ channel: s.channel, table: s.table }));
    const kind = d.kind;
    const owner = `${kind} ${d.id}`;
    for (const { channel, table } of pairs) {
      const byChannel = channelUse.get(channel);
      if (byChannel && byChannel.table !== table) {
        throw problem(
          source,
          `channel ${channel} fires for table ${table} in ${owner} but for table ${byChannel.table} in ${byChannel.owner} (${byChannel.source}); a channel names one table`,
        );
      }
      const byTable = tableUse.get(table);
      if (byTable && byTable.channel !== channel) {
        throw problem(
          source,
          `table ${table} notifies channel ${channel} in ${owner} but channel ${byTable.channel} in ${byTable.owner} (${byTable.source}); a table notifies one channel`,
        );
      }
      if (byChannel && byChannel.kind !== kind) {
        throw problem(
          source,
          `table ${table} (channel ${channel}) is both a sensor table and a logbook table (${owner}; ${byChannel.owner} in ${byChannel.source})`,
        );
      }
      channelUse.set(channel, { source, owner, kind, table });
      tableUse.set(table, { source, owner, channel });
    }
  }
  return [...endpointWarnings(located), ...vectorlessChannelWarnings(located)];
}

function endpointWarnings(located: Located[]): string[] {
  const byPath = new Map<string, { sources: Set<string>; tables: string[]; who: string[] }>();
  for (const { definition: p, source } of located) {
    if (p.kind !== 'pump') continue;
    for (const s of p.sensors) {
      // Two pumps reach one URL only with the same base variable and path prefix.
      const key = `${p.baseUrlEnv} ${p.pathPrefix}${s.endpoint}`;
      const entry = byPath.get(key) ?? { sources: new Set(), tables: [], who: [] };
      entry.sources.add(source);
      if (!entry.tables.includes(s.table)) entry.tables.push(s.table);
      entry.who.push(`${p.id} ${s.channel}`);
      byPath.set(key, entry);
    }
  }
  const warnings: string[] = [];
  for (const [key, e] of byPath) {
    if (e.tables.length < 2) continue;
    const [env, path] = key.split(' ');
    warnings.push(
      `pump definition ${[...e.sources].join(', ')}: ${path} (on ${env}) receives rows of ${e.tables.length} tables ` +
        `(${e.tables.join(', ')}, from ${e.who.join(', ')}), so its id_sensor no longer names one row`,
    );
  }
  return warnings;
}

function vectorlessChannelWarnings(located: Located[]): string[] {
  const byChannel = new Map<string, { sources: Set<string>; inAnyVector: boolean; who: string[] }>();
  for (const { definition: p, source } of located) {
    if (p.kind !== 'pump') continue;
    for (const s of p.sensors) {
      const entry = byChannel.get(s.channel) ?? { sources: new Set(), inAnyVector: false, who: [] };
      entry.sources.add(source);
      entry.inAnyVector ||= s.inVector;
      entry.who.push(`${p.id} ${s.field} → ${p.pathPrefix}${s.endpoint}`);
      byChannel.set(s.channel, entry);
    }
  }
  const warnings: string[] = [];
  for (const [channel, e] of byChannel) {
    if (e.inAnyVector) continue;
    warnings.push(
      `pump definition ${[...e.sources].join(', ')}: channel ${channel} feeds no pump's vector; ` +
        `its readings are only posted on their own (${e.who.join('; ')})`,
    );
  }
  return warnings;
}

function readJson(path: string): unknown {
  try {
    return JSON.parse(readFileSync(path, 'utf8'));
  } catch (err) {
    throw problem(path, `not valid JSON (${(err as Error).message})`);
  }
}

/** Reads and checks every `*.json` definition in a folder (sub-folders are not read). */
export function loadDefinitions(dir: string = builtinPumpsDir): Definitions {
  const files = readdirSync(dir)
    .filter((f) => f.endsWith('.json'))
    .sort();
  const located = files.map((f) => {
    const source = join(dir, f);
    return { definition: parseDefinition(readJson(source), source), source };
  });
  const warnings = lintDefinitions(located);
  const definitions = located.map((l) => l.definition);
  return {
    pumps: definitions.filter((d): d is PumpDefinition => d.kind === 'pump'),
    logbooks: definitions.filter((d): d is LogbookDefinition => d.kind === 'logbook'),
    warnings,
  };
}

/** The pumps of a folder, checked as loadDefinitions checks them (its logbooks and warnings set aside). */
export function loadPumpDefinitions(dir: string = builtinPumpsDir): PumpDefinition[] {
  return loadDefinitions(dir).pumps;
}

/** The built-in profiles: `default` (the files at the top of pumps/) and each sub-folder with definitions. */
export function builtinProfiles(): string[] {
  const folders = readdirSync(builtinPumpsDir)
    .filter((name) => {
      const path = join(builtinPumpsDir, name);
      return statSync(path).isDirectory() && readdirSync(path).some((f) => f.endsWith('.json'));
    })
    .sort();
  return [DEFAULT_PROFILE, ...folders];
}

/** The folder of a built-in profile; an unknown name is an error listing the profiles. */
export function profileDir(name: string): string {
  const profiles = builtinProfiles();
  if (!profiles.includes(name)) {
    throw new Error(`unknown profile "${name}"; the built-in profiles are ${profiles.join(', ')}`);
  }
  const dir = name === DEFAULT_PROFILE ? builtinPumpsDir : join(builtinPumpsDir, name);
  if (!existsSync(dir)) throw new Error(`profile "${name}" has no folder ${dir}`);
  return dir;
}

/**
 * Picks the definitions named in PUMPS ("A", "A,B", "A,B,bitacoras"), ignoring case, in the order given.
 * An unknown name is an error naming the known ones.
 */
export function selectDefinitions(
  all: Pick<Definitions, 'pumps' | 'logbooks'>,
  ids: string[],
): { pumps: PumpDefinition[]; logbooks: LogbookDefinition[] } {
  const known: Definition[] = [...all.pumps, ...all.logbooks];
  const picked = ids.map((id) => {
    const d = known.find((x) => x.id.toLowerCase() === id.toLowerCase());
    if (!d)
      throw new Error(`PUMPS: unknown id "${id}"; expected one of ${known.map((x) => x.id).join(', ')}`);
    return d;
  });
  return {
    pumps: picked.filter((d): d is PumpDefinition => d.kind === 'pump'),
    logbooks: picked.filter((d): d is LogbookDefinition => d.kind === 'logbook'),
  };
}

/** Picks the pumps named in PUMPS; kept for callers that hold pumps only. */
export function selectPumps(all: PumpDefinition[], ids: string[]): PumpDefinition[] {
  return selectDefinitions({ pumps: all, logbooks: [] }, ids).pumps;
}

/** The distinct sensor tables of some pumps with the channel each notifies, in first-listed order. */
export function distinctSensorTables(pumps: PumpDefinition[]): { table: string; channel: string }[] {
  const seen = new Map<string, string>();
  for (const p of pumps) for (const s of p.sensors) if (!seen.has(s.table)) seen.set(s.table, s.channel);
  return [...seen].map(([table, channel]) => ({ table, channel }));
}
