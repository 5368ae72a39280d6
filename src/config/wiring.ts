import { createHash } from 'node:crypto';
import type { Definition, LogbookDefinition, PumpDefinition } from './pumps.js';

/**
 * The wiring a process runs with: where its definitions came from (a built-in profile, a folder, or the
 * default files) and every definition of that source, pumps and logbooks, with a digest of them. `listen`
 * records it in the engine schema (pump_monitor.wiring); the operator commands use that record when
 * nothing else is configured, and warn when what is configured differs from it.
 */
export interface Wiring {
  /** The built-in profile chosen with PUMPS_PROFILE; undefined for PUMPS_DIR or the default files. */
  profile: string | undefined;
  /** The folder given with PUMPS_DIR; undefined for a profile or the default files. */
  folder: string | undefined;
  /** Every definition of the source, whether this process serves it or not. */
  definitions: { pumps: PumpDefinition[]; logbooks: LogbookDefinition[] };
  /** A digest of the definitions: two wirings with the same digest route every row the same way. */
  digest: string;
}

/** JSON with every object's keys in order: the same definitions give the same text. */
function canonical(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonical).join(',')}]`;
  if (typeof value === 'object' && value !== null) {
    const entries = Object.entries(value as Record<string, unknown>)
      .filter(([, v]) => v !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonical(v)}`).join(',')}}`;
  }
  return JSON.stringify(value) ?? 'null';
}

/** The first 16 hex digits of the SHA-256 of the definitions, taken in id order. */
export function digestOf(definitions: Definition[]): string {
  const sorted = [...definitions].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  return createHash('sha256').update(canonical(sorted)).digest('hex').slice(0, 16);
}

export function wiringOf(
  profile: string | undefined,
  folder: string | undefined,
  definitions: { pumps: PumpDefinition[]; logbooks: LogbookDefinition[] },
): Wiring {
  return {
    profile,
    folder,
    definitions,
    digest: digestOf([...definitions.pumps, ...definitions.logbooks]),
  };
}

/** The source in a few words: `profile plant-2026-03`, `folder /etc/pumps`, `the built-in default`. */
export function describeSource(w: Pick<Wiring, 'profile' | 'folder'>): string {
  if (w.profile !== undefined) return `profile ${w.profile}`;
  if (w.folder !== undefined) return `folder ${w.folder}`;
  return 'the built-in default';
}

/** The variable that selects this wiring, for a command line to paste: `PUMPS_PROFILE=… ` or ''. */
export function selectingEnv(w: Pick<Wiring, 'profile' | 'folder'>): string {
  const quote = (s: string) => (/^[\w./+-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`);
  if (w.profile !== undefined && w.profile !== 'default') return `PUMPS_PROFILE=${quote(w.profile)} `;
  if (w.folder !== undefined) return `PUMPS_DIR=${quote(w.folder)} `;
  return '';
}
