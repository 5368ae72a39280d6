import { type Config, ConfigError, type Env, type LoadOptions, loadConfig } from '../config/env.js';
import { describeSource } from '../config/wiring.js';
import type { RecordedWiring } from '../store/wiring.js';

/** The wiring an operator command runs with, and what it says about it. */
export interface ChosenWiring {
  config: Config;
  /** One line: which wiring, where it came from. */
  line: string;
  /** Lines an operator should read: the wiring given differs from the recorded one, two were recorded. */
  warnings: string[];
}

/** Two recordings this close together are two wirings served at once (or one replaced by the other). */
const RECENT_MS = 3_600_000;

function when(d: Date): string {
  return `${d.toISOString().slice(0, 19).replace('T', ' ')}Z`;
}

function describeRecord(r: RecordedWiring): string {
  return `${describeSource(r)} (digest ${r.digest}, served ${r.served.join(', ') || 'by none'}, recorded ${when(r.recordedAt)})`;
}

function describeServed(config: Config): string {
  const pumps = config.pumps.map((p) => p.id).join(', ');
  const logbooks = config.logbooks.map((l) => l.id).join(', ');
  return `pumps ${pumps || 'none'}${logbooks ? `, logbooks ${logbooks}` : ''}`;
}

/** Whether the environment chooses the definitions itself (PUMPS_PROFILE or PUMPS_DIR). */
export function wiringConfigured(env: Env): boolean {
  return ['PUMPS_PROFILE', 'PUMPS_DIR'].some((name) => (env[name] ?? '').trim() !== '');
}

/**
 * The wiring for an operator command (diagnose, dead-letters, replay). What the environment configures
 * (PUMPS_PROFILE, PUMPS_DIR) wins, with a warning when listen recorded another one last. With nothing
 * configured, the wiring listen recorded last in the engine schema, with the pumps and logbooks it served
 * (PUMPS narrows them); with nothing recorded either, the built-in default. `records`: newest first.
 */
export function chooseWiring(env: Env, records: RecordedWiring[], opts: LoadOptions = {}): ChosenWiring {
  const latest = records[0];
  const warnings: string[] = [];
  if (wiringConfigured(env) || latest === undefined) {
    const config = loadConfig(env, opts);
    const given = wiringConfigured(env)
      ? `${describeSource(config.wiring)}, from ${env.PUMPS_PROFILE?.trim() ? 'PUMPS_PROFILE' : 'PUMPS_DIR'}`
      : `${describeSource(config.wiring)} (nothing configured, and no wiring recorded by listen)`;
    if (latest !== undefined && latest.digest !== config.wiring.digest) {
      warnings.push(
        `the wiring given (${describeSource(config.wiring)}, digest ${config.wiring.digest}) differs from the one listen recorded last: ${describeRecord(latest)}; this command follows the one given`,
      );
    }
    return { config, line: `wiring: ${given}: ${describeServed(config)}`, warnings };
  }
  let config: Config;
  const known = new Set(
    latest.definitions.map((d) => (d as { id?: unknown }).id).filter((id) => typeof id === 'string'),
  );
  const served = latest.served.filter((id) => known.has(id));
  try {
    config = loadConfig(
      { ...env, PUMPS: env.PUMPS?.trim() ? env.PUMPS : served.join(',') || undefined },
      { ...opts, recorded: latest },
    );
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    const fallback = loadConfig(env, opts);
    warnings.push(
      `the wiring listen recorded (${describeRecord(latest)}) cannot be used: ${err.message}; this command uses ${describeSource(fallback.wiring)}`,
    );
    return {
      config: fallback,
      line: `wiring: ${describeSource(fallback.wiring)}: ${describeServed(fallback)}`,
      warnings,
    };
  }
  for (const other of records.slice(1)) {
    if (latest.recordedAt.getTime() - other.recordedAt.getTime() <= RECENT_MS) {
      warnings.push(
        `listen also recorded another wiring within the hour: ${describeRecord(other)}; this command uses the latest (set PUMPS_PROFILE or PUMPS_DIR to choose)`,
      );
    }
  }
  return {
    config,
    line: `wiring: ${describeSource(latest)} (digest ${latest.digest}), as listen recorded it at ${when(latest.recordedAt)}: ${describeServed(config)}`,
    warnings,
  };
}
