import { backendChecks } from './backend.js';
import { type DiagnoseConfig, databaseChecks } from './database.js';
import { replicationChecks } from './replication.js';
import { type Check, redact } from './report.js';

export { type Channel, channelsOf } from './channels.js';
export { type DiagnoseConfig, mentionsIdentifier, triggerArgs } from './database.js';
export { type Check, type DiagnosisJson, formatJson, formatTable, toJson } from './report.js';

export interface DiagnoseOptions {
  /** Overall wait for the test notifications, and the timeout of each backend request. Default 5 s. */
  timeoutMs?: number;
}

const DEFAULT_TIMEOUT_MS = 5_000;

/**
 * Checks, one line each, that notifications can flow from the sensor and logbook tables to this process
 * and on to the backend: the connection, LISTEN over it, the notification queue, each distinct channel's
 * table, trigger and round trip, and each backend route. Never writes a row: its test notifications are
 * probes, which running listeners count and drop. Never prints the password or the API key.
 */
export async function runDiagnostics(config: DiagnoseConfig, opts: DiagnoseOptions = {}): Promise<Check[]> {
  const timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  const [db, backends] = await Promise.all([
    databaseChecks(config, timeoutMs),
    backendChecks(config, timeoutMs),
  ]);
  // SOURCE=replication reads a slot, not triggers: its own lines replace the trigger checks.
  const source = [
    ...db.filter((c) => config.source.kind !== 'replication' || !c.name.startsWith('trigger ')),
    ...(await replicationChecks(config)),
  ];
  return redact([...source, ...backends], [config.database.password, config.apiKey]);
}
