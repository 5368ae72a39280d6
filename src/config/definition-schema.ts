import { z } from 'zod';

/**
 * The shape of a definition file, as zod schemas, and the types they give. What a file cannot mean beyond
 * its shape is checked in definition-lint.ts; docs/pumps.md describes the format.
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

/** How long a level must hold: `vectors` answers in a row (this many by default), or `seconds`. */
function holdFor(vectors: number) {
  return z
    .object({
      vectors: z.number().int().min(1).max(10_000).default(vectors),
      seconds: z.number().positive().max(86_400).optional(),
    })
    .strict()
    .prefault({});
}

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
    onDelay: holdFor(3),
    /**
     * A level is left once the probability stays below its clear point (the level minus `recovery`) for
     * `vectors` answers in a row, or for `seconds` (off-delay).
     */
    offDelay: holdFor(5),
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

export const pumpSchema = z.object({
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

export const logbookSchema = z.object({
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
export type Definition = PumpDefinition | LogbookDefinition;

/** Everything one folder defines, with the linter's warnings (one line each, naming the file). */
export interface Definitions {
  pumps: PumpDefinition[];
  logbooks: LogbookDefinition[];
  warnings: string[];
}
