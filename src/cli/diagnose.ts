import { type Config, type DatabaseConfig, describeDatabase, loadConfig } from '../config/env.js';
import { formatJson, formatTable, runDiagnostics } from '../tools/diagnose.js';

export interface DiagnoseCommandOptions {
  json?: boolean;
}

/**
 * Checks the database, every channel's table, trigger and notification round trip, and each backend;
 * prints a table (or JSON) and exits 1 when any check fails. A configuration error throws ConfigError,
 * which main prints as one line.
 */
export async function diagnoseCommand(opts: DiagnoseCommandOptions = {}): Promise<void> {
  const config = loadConfig(process.env, { requireDatabase: true, requireBackend: true });
  if (!config.database) throw new Error('unreachable: requireDatabase');
  const target = config as Config & { database: DatabaseConfig };
  if (!opts.json) {
    const pumps = config.pumps.map((p) => p.id).join(', ');
    process.stdout.write(`pump-monitor diagnose: ${describeDatabase(config.database)}, pumps ${pumps}\n`);
    for (const warning of config.warnings) process.stdout.write(`warning: ${warning}\n`);
  }
  const checks = await runDiagnostics(target);
  process.stdout.write(opts.json ? formatJson(checks) : formatTable(checks));
  process.exitCode = checks.every((c) => c.ok) ? 0 : 1;
}
