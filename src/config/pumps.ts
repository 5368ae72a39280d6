import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { z } from 'zod';
import { lintDefinitions, lintLogbook, lintPump, problem } from './definition-lint.js';
import {
  type Definition,
  type Definitions,
  type LogbookDefinition,
  logbookSchema,
  type PumpDefinition,
  pumpSchema,
  type SensorDefinition,
} from './definition-schema.js';

/**
 * Definitions: what a folder of JSON files says about the plant. Two kinds of file:
 * - a pump (`"kind": "pump"`, or no kind at all): its sensors, each a channel and table feeding one field
 *   of the pump's unified vector (unless `inVector` is false) and posted on its own to an endpoint;
 * - a logbook (`"kind": "logbook"`): event streams whose rows are forwarded one by one, never grouped.
 * docs/pumps.md describes the format, the checks below and the built-in profiles.
 */

export { lintDefinitions } from './definition-lint.js';
export type {
  Definition,
  Definitions,
  HealthDefinition,
  LogbookDefinition,
  LogbookStream,
  PumpDefinition,
  PumpFile,
  SensorDefinition,
} from './definition-schema.js';

/** The folder of pump definitions shipped with the package; its sub-folders are the built-in profiles. */
export const builtinPumpsDir = resolve(dirname(fileURLToPath(import.meta.url)), '../../pumps');

/** The name that selects the top-level files of pumps/ (a.json, b.json) as a profile. */
export const DEFAULT_PROFILE = 'default';

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

/** The distinct sensor tables of some pumps with the channel each notifies, in first-listed order. */
export function distinctSensorTables(pumps: PumpDefinition[]): { table: string; channel: string }[] {
  const seen = new Map<string, string>();
  for (const p of pumps) for (const s of p.sensors) if (!seen.has(s.table)) seen.set(s.table, s.channel);
  return [...seen].map(([table, channel]) => ({ table, channel }));
}
