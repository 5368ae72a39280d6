import { type Config, type DatabaseConfig, describeDatabase, loadConfig } from '../config/env.js';
import { formatJson, formatTable, runDiagnostics } from '../operate/diagnose.js';
import { resolveDemoTarget, shellPath } from './demo.js';

export interface DiagnoseCommandOptions {
  json?: boolean;
}

/**
 * Checks the database, every channel's table, trigger and notification round trip, and each backend;
 * prints a table (or JSON) and exits 1 when any check fails. A configuration error throws ConfigError,
 * which main prints as one line. With nothing configured it checks the `npm start` running from here.
 */
export async function diagnoseCommand(opts: DiagnoseCommandOptions = {}): Promise<void> {
  const target = resolveDemoTarget(process.env);
  const config = loadConfig(target.env, { requireDatabase: true, requireBackend: true });
  if (!config.database) throw new Error('unreachable: requireDatabase');
  if (!opts.json) {
    const pumps = config.pumps.map((p) => p.id).join(', ');
    const demo =
      target.kind === 'demo'
        ? ` (nothing configured: the npm start running as pid ${target.state.pid}, found in ${shellPath(target.stateFile)})`
        : '';
    process.stdout.write(
      `pump-monitor diagnose: ${describeDatabase(config.database)}, pumps ${pumps}${demo}\n`,
    );
    for (const warning of config.warnings) process.stdout.write(`warning: ${warning}\n`);
  }
  const checks = await runDiagnostics(config as Config & { database: DatabaseConfig });
  process.stdout.write(opts.json ? formatJson(checks) : formatTable(checks));
  process.exitCode = checks.every((c) => c.ok) ? 0 : 1;
}
