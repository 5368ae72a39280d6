import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { z } from 'zod';

/** PostgreSQL identifiers (channels, tables) are at most 63 bytes. */
const identifier = z
  .string()
  .min(1)
  .refine((s) => Buffer.byteLength(s, 'utf8') <= 63, 'must be at most 63 bytes (a PostgreSQL identifier)');

const sensorSchema = z.object({
  channel: identifier,
  table: identifier,
  field: z.string().min(1),
  endpoint: z.string().startsWith('/'),
  description: z.string().default(''),
  unit: z.string().default(''),
});

const pumpSchema = z
  .object({
    id: z.string().regex(/^[A-Za-z0-9_-]{1,32}$/, 'letters, digits, _ or -, at most 32'),
    name: z.string().min(1),
    /** The environment variable holding this pump's backend base URL (BASE_URL, BASE_URL_B). */
    baseUrlEnv: z.string().regex(/^[A-Z_][A-Z0-9_]*$/),
    /** The suffix the base URL must end with; appended when missing. */
    pathPrefix: z.string().startsWith('/'),
    unifiedPath: z.string().startsWith('/'),
    /** A vector is sent once at least this many fields are present (after the settle time). */
    minFields: z.number().int().positive(),
    /** Fallback value per field for a partial vector, used when no recent last value is known. */
    defaults: z.record(z.string(), z.number()).default({}),
    /** Fields the backend accepts a vector without (it applies its own default). */
    optionalFields: z.record(z.string(), z.number()).default({}),
    /** Informational: the values an earlier version of the original filled in. Not used. */
    seedDefaults: z.record(z.string(), z.number()).optional(),
    sensors: z.array(sensorSchema).min(1),
  })
  .superRefine((p, ctx) => {
    const fields = new Set<string>();
    for (const s of p.sensors) {
      if (fields.has(s.field)) ctx.addIssue({ code: 'custom', message: `field ${s.field} appears twice` });
      fields.add(s.field);
    }
    if (p.minFields > p.sensors.length) {
      ctx.addIssue({
        code: 'custom',
        message: `minFields ${p.minFields} exceeds the ${p.sensors.length} sensors`,
      });
    }
    for (const f of Object.keys(p.defaults)) {
      if (!fields.has(f)) ctx.addIssue({ code: 'custom', message: `default for unknown field ${f}` });
    }
  });

export type SensorDefinition = z.infer<typeof sensorSchema>;
export type PumpDefinition = z.infer<typeof pumpSchema>;

/** The folder of pump definitions shipped with the package. */
export const builtinPumpsDir = resolve(dirname(fileURLToPath(import.meta.url)), '../../pumps');

export function parsePumpDefinition(raw: unknown, source: string): PumpDefinition {
  const result = pumpSchema.safeParse(raw);
  if (!result.success) {
    const issue = result.error.issues[0];
    const at = issue?.path.length ? ` at ${issue.path.join('.')}` : '';
    throw new Error(`pump definition ${source}${at}: ${issue?.message ?? 'invalid'}`);
  }
  return result.data;
}

/** Reads every `*.json` pump definition in a folder. */
export function loadPumpDefinitions(dir: string = builtinPumpsDir): PumpDefinition[] {
  const files = readdirSync(dir)
    .filter((f) => f.endsWith('.json'))
    .sort();
  const pumps = files.map((f) => {
    const path = join(dir, f);
    let raw: unknown;
    try {
      raw = JSON.parse(readFileSync(path, 'utf8'));
    } catch (err) {
      throw new Error(`pump definition ${path}: not valid JSON (${(err as Error).message})`);
    }
    return parsePumpDefinition(raw, path);
  });
  assertDisjoint(pumps);
  return pumps;
}

/** Two pumps must not share an id, a channel or a table: a reading must map to exactly one pump. */
export function assertDisjoint(pumps: PumpDefinition[]): void {
  const seen = new Map<string, string>();
  for (const p of pumps) {
    for (const key of [
      `id ${p.id}`,
      ...p.sensors.flatMap((s) => [`channel ${s.channel}`, `table ${s.table}`]),
    ]) {
      const other = seen.get(key);
      if (other !== undefined && other !== p.id) throw new Error(`pumps ${other} and ${p.id} share ${key}`);
      if (other === p.id && key.startsWith('id')) throw new Error(`pump id ${p.id} is defined twice`);
      seen.set(key, p.id);
    }
  }
}

/** Picks the pumps named in PUMPS ("A", "B", "A,B"); unknown names are an error naming the known ones. */
export function selectPumps(all: PumpDefinition[], ids: string[]): PumpDefinition[] {
  return ids.map((id) => {
    const p = all.find((x) => x.id.toLowerCase() === id.toLowerCase());
    if (!p)
      throw new Error(`PUMPS: unknown pump "${id}"; expected one of ${all.map((x) => x.id).join(', ')}`);
    return p;
  });
}
