import { mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  builtinPumpsDir,
  loadPumpDefinitions,
  type PumpDefinition,
  profileDir,
} from '../../src/config/pumps.js';
import { silentSensorTable } from '../../src/tools/simulator.js';

export type Wiring = 'default' | 'plant-2026-03';

/** The pumps of a built-in wiring. */
export function wiringPumps(wiring: Wiring): PumpDefinition[] {
  return loadPumpDefinitions(wiring === 'default' ? builtinPumpsDir : profileDir(wiring));
}

/**
 * A copy of a built-in wiring's pump files (a folder for PUMPS_DIR; the caller removes it) in which the
 * table the silent-sensor scenario stops is silent after `silentAfterS` seconds, and every other channel
 * only after a minute, so that a loaded machine's pauses turn no other channel silent.
 */
export function wiringWithShortSilence(wiring: Wiring, silentAfterS: number): { dir: string; table: string } {
  const from = wiring === 'default' ? builtinPumpsDir : profileDir(wiring);
  const table = silentSensorTable(wiringPumps(wiring));
  const dir = mkdtempSync(join(tmpdir(), 'pm-health-'));
  for (const f of readdirSync(from).filter((x) => x.endsWith('.json'))) {
    const d = JSON.parse(readFileSync(join(from, f), 'utf8'));
    if (d.kind === 'logbook') continue;
    for (const s of d.sensors) s.silentAfter = { seconds: s.table === table ? silentAfterS : 60 };
    writeFileSync(join(dir, f), JSON.stringify(d));
  }
  return { dir, table };
}
