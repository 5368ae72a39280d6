import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { PumpFile } from '../config/pumps.js';

export interface GenerateOptions {
  count: number;
  sensors: number;
  /** Every synthetic pump reads its base URL from this variable; its own path prefix is appended. */
  baseUrlEnv?: string;
}

/**
 * Synthetic pump definitions for scale tests and benchmarks: pump P001 has tables p001_s01.., channels
 * canal_p001_s01.., and its backend paths under /sensores_p001. Threshold: three quarters of the sensors.
 */
export function generatePumps(o: GenerateOptions): PumpFile[] {
  const width = Math.max(3, String(o.count).length);
  return Array.from({ length: o.count }, (_, i) => {
    const tag = `p${String(i + 1).padStart(width, '0')}`;
    return {
      id: tag.toUpperCase(),
      name: `Synthetic pump ${tag.toUpperCase()}`,
      baseUrlEnv: o.baseUrlEnv ?? 'BASE_URL_SYNTHETIC',
      pathPrefix: `/sensores_${tag}`,
      unifiedPath: '/predecir-bomba',
      minFields: Math.ceil(o.sensors * 0.75),
      defaults: {},
      optionalFields: {},
      sensors: Array.from({ length: o.sensors }, (_, j) => {
        const s = `s${String(j + 1).padStart(2, '0')}`;
        return {
          channel: `canal_${tag}_${s}`,
          table: `${tag}_${s}`,
          field: `sensor_${s}`,
          endpoint: `/prediccion_${s}`,
          description: `Synthetic sensor ${s} of ${tag}`,
          unit: '',
        };
      }),
    };
  });
}

/** Writes one definition file per pump into `dir` (usable as PUMPS_DIR). */
export function writePumpDefinitions(dir: string, pumps: PumpFile[]): void {
  mkdirSync(dir, { recursive: true });
  for (const p of pumps)
    writeFileSync(join(dir, `${p.id.toLowerCase()}.json`), `${JSON.stringify(p, null, 2)}\n`);
}
