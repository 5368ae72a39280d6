import { type DatabaseConfig, describeDatabase, loadConfig } from '../config/env.js';
import { formatTable, runDiagnostics, toJson } from '../operate/diagnose/index.js';
import { chooseWiring } from '../operate/wiring.js';
import { withClient } from '../store/db.js';
import { type RecordedWiring, recordedWirings } from '../store/wiring.js';
import { resolveDemoTarget, shellPath } from './demo.js';

export interface DiagnoseCommandOptions {
  json?: boolean;
}

/** The wirings listen recorded in this database; none when it cannot be read (its own check says why). */
export async function readRecordedWirings(db: DatabaseConfig, app: string): Promise<RecordedWiring[]> {
  try {
    return await withClient(db, app, (c) => recordedWirings(c));
  } catch {
    return [];
  }
}

/**
 * Checks the database, every channel's table, trigger and notification round trip, and each backend;
 * prints a table (or JSON) and exits 1 when any check fails. A configuration error throws ConfigError,
 * which main prints as one line. With nothing configured it checks the `npm start` running from here;
 * with no wiring configured, the one listen recorded in the database.
 */
export async function diagnoseCommand(opts: DiagnoseCommandOptions = {}): Promise<void> {
  const target = resolveDemoTarget(process.env);
  const load = { requireDatabase: true, requireBackend: true } as const;
  const base = loadConfig(target.env, load);
  if (!base.database) throw new Error('unreachable: requireDatabase');
  const records = await readRecordedWirings(base.database, 'pump-monitor-diagnose');
  const wiring = chooseWiring(target.env, records, load);
  const config = { ...wiring.config, database: base.database };
  if (!opts.json) {
    const pumps = config.pumps.map((p) => p.id).join(', ');
    const logbooks = config.logbooks.map((l) => l.id).join(', ');
    const demo =
      target.kind === 'demo'
        ? ` (nothing configured: the npm start running as pid ${target.state.pid}, found in ${shellPath(target.stateFile)})`
        : '';
    process.stdout.write(
      `pump-monitor diagnose: ${describeDatabase(config.database)}, pumps ${pumps}${logbooks ? `, logbooks ${logbooks}` : ''}${demo}\n${wiring.line}\n`,
    );
    for (const warning of [...wiring.warnings, ...config.warnings])
      process.stdout.write(`warning: ${warning}\n`);
  }
  const checks = await runDiagnostics(config);
  process.stdout.write(
    opts.json
      ? `${JSON.stringify({ ...toJson(checks), wiring: wiring.line, warnings: wiring.warnings }, null, 2)}\n`
      : formatTable(checks),
  );
  process.exitCode = checks.every((c) => c.ok) ? 0 : 1;
}
