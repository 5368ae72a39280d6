import {
  type Definitions,
  type LogbookDefinition,
  lintDefinitions,
  loadDefinitions,
  type PumpDefinition,
  parseDefinition,
  profileDir,
  selectDefinitions,
} from './pumps.js';
import { ConfigError, type Env, fail, num, read } from './read.js';
import { logbookBaseUrl, normalizeBaseUrl } from './urls.js';
import { type Wiring, wiringOf } from './wiring.js';

/**
 * What this process serves: the definitions folder (PUMPS_PROFILE, PUMPS_DIR, or the wiring `listen`
 * recorded), the pumps and logbooks picked from it (PUMPS), and each one's backend base URL.
 */

export interface PumpConfig extends PumpDefinition {
  /** The base URL with its path prefix, no trailing slash (e.g. http://host:8000/sensores). */
  baseUrl: string;
}

export interface LogbookConfig extends LogbookDefinition {
  /** The base variable's URL without a trailing /sensores or /sensores_b (e.g. http://host:8000). */
  baseUrl: string;
  /** Where each row is POSTed: baseUrl + endpoint (e.g. http://host:8000/gm-bitacoras/clasificar). */
  url: string;
  /** Per-attempt timeout of one POST (LOGBOOK_TIMEOUT_MS): the backend may call an LLM, sometimes twice. */
  timeoutMs: number;
}

/** The definitions as `listen` recorded them (pump_monitor.wiring). */
export interface RecordedWiring {
  profile: string | undefined;
  folder: string | undefined;
  definitions: unknown[];
}

export interface Served {
  pumps: PumpConfig[];
  logbooks: LogbookConfig[];
  profile: string | undefined;
  wiring: Wiring;
  warnings: string[];
}

/**
 * The definitions folder: PUMPS_PROFILE names a built-in one, PUMPS_DIR any folder (not both); by default
 * the top of the built-in pumps/ folder (a.json, b.json).
 */
function readDefinitions(
  env: Env,
  recorded: RecordedWiring | undefined,
): {
  definitions: Definitions;
  source: string;
  profile: string | undefined;
  folder: string | undefined;
} {
  if (recorded !== undefined) {
    const source = 'the wiring recorded by listen';
    try {
      const located = recorded.definitions.map((raw) => ({
        definition: parseDefinition(raw, source),
        source,
      }));
      const warnings = lintDefinitions(located);
      const all = located.map((l) => l.definition);
      return {
        definitions: {
          pumps: all.filter((d): d is PumpDefinition => d.kind === 'pump'),
          logbooks: all.filter((d): d is LogbookDefinition => d.kind === 'logbook'),
          warnings,
        },
        source,
        profile: recorded.profile,
        folder: recorded.folder,
      };
    } catch (err) {
      throw new ConfigError((err as Error).message);
    }
  }
  const dir = read(env, 'PUMPS_DIR');
  const profile = read(env, 'PUMPS_PROFILE');
  if (dir !== undefined && profile !== undefined) {
    fail(
      'PUMPS_PROFILE',
      profile,
      'unset when PUMPS_DIR is set (choose one: a built-in profile or a folder)',
    );
  }
  const variable = profile !== undefined ? 'PUMPS_PROFILE' : 'PUMPS_DIR';
  try {
    const folder = profile !== undefined ? profileDir(profile) : dir;
    return {
      definitions: loadDefinitions(folder),
      source: folder ?? 'the built-in pumps/',
      profile,
      folder: profile === undefined ? dir : undefined,
    };
  } catch (err) {
    throw new ConfigError(`${variable}: ${(err as Error).message}`);
  }
}

/** The pumps and logbooks to serve, at their base URLs; `requireBackend`: each URL variable must be set. */
export function servedDefinitions(
  env: Env,
  recorded: RecordedWiring | undefined,
  requireBackend: boolean | undefined,
): Served {
  const { definitions, source, profile, folder } = readDefinitions(env, recorded);
  const ids = (
    read(env, 'PUMPS') ?? [...definitions.pumps, ...definitions.logbooks].map((d) => d.id).join(',')
  )
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  if (ids.length === 0) fail('PUMPS', env.PUMPS, 'a comma-separated list of pump ids such as A,B');
  let selected: { pumps: PumpDefinition[]; logbooks: LogbookDefinition[] };
  try {
    selected = selectDefinitions(definitions, [...new Set(ids)]);
  } catch (err) {
    throw new ConfigError(`${(err as Error).message} (definitions from ${source})`);
  }
  /** A base URL from its variable; without it, an error when a backend is required, else the local default. */
  const baseFrom = (name: string, what: string, fallback: string, normalize: (raw: string) => string) => {
    const raw = read(env, name);
    if (raw !== undefined) return normalize(raw);
    return requireBackend ? fail(name, undefined, what) : fallback;
  };
  const pumps = selected.pumps.map((p) => {
    const baseUrl = baseFrom(
      p.baseUrlEnv,
      `the ${p.name} backend base URL, e.g. http://host:8000${p.pathPrefix}`,
      `http://127.0.0.1:8000${p.pathPrefix}`,
      (raw) => normalizeBaseUrl(p.baseUrlEnv, raw, p.pathPrefix),
    );
    return { ...p, baseUrl };
  });
  const logbookTimeoutMs = num(env, 'LOGBOOK_TIMEOUT_MS', 120_000, { min: 1 });
  const logbooks = selected.logbooks.map((l): LogbookConfig => {
    const baseUrl = baseFrom(
      l.baseUrlEnv,
      `the backend base URL for ${l.name}, e.g. http://host:8000/sensores`,
      'http://127.0.0.1:8000',
      (raw) => logbookBaseUrl(l.baseUrlEnv, raw),
    );
    return { ...l, baseUrl, url: `${baseUrl}${l.endpoint}`, timeoutMs: logbookTimeoutMs };
  });
  return {
    pumps,
    logbooks,
    profile,
    wiring: wiringOf(profile, folder, { pumps: definitions.pumps, logbooks: definitions.logbooks }),
    warnings: definitions.warnings,
  };
}
