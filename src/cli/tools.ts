import { type Config, type DatabaseConfig, describeDatabase, loadConfig } from '../config/env.js';
import { migrateSource } from '../source/replication/migrate.js';
import { createPool, describePgError, ensureReachable, withClient } from '../store/db.js';
import { grantEngineSchema, migrate } from '../store/schema.js';
import { buildReferenceBackend } from '../tools/backend/server.js';
import { runSimulator, SCENARIOS, type Scenario, silentSensorTable } from '../tools/simulator.js';
import { resolveDemoTarget } from './demo.js';
import {
  flushAndExit,
  handleSignals,
  logDefinitionWarnings,
  loggerFor,
  progressLine,
  terminal,
} from './runtime.js';

/** The configured database; for the operator commands (migrate, simulate), else the running npm start's. */
function withDatabase(operator = false): { config: Config; database: DatabaseConfig } {
  const env = operator ? resolveDemoTarget(process.env).env : process.env;
  const config = loadConfig(env, { requireDatabase: true });
  if (!config.database) throw new Error('unreachable: requireDatabase');
  return { config, database: config.database };
}

/** Creates missing tables, the engine schema and the triggers; prints progress on a terminal. */
export async function migrateCommand(opts: { grantTo?: string } = {}): Promise<void> {
  const { config, database } = withDatabase(true);
  await ensureReachable(database, 'pump-monitor-migrate');
  const logger = loggerFor(config);
  logDefinitionWarnings(logger, config);
  try {
    const result = await withClient(database, 'pump-monitor-migrate', async (client) => {
      const r = await migrate(client, config, (done, total, table) =>
        terminal() ? progressLine(`migrating ${done}/${total} ${table}`) : undefined,
      );
      await migrateSource(client, config);
      if (opts.grantTo) {
        const tables = [
          ...config.pumps.flatMap((p) => p.sensors.map((s) => s.table)),
          ...config.logbooks.flatMap((l) => l.streams.map((s) => s.table)),
        ];
        await grantEngineSchema(client, opts.grantTo, [...new Set(tables)]);
      }
      return r;
    });
    if (terminal()) progressLine(undefined);
    logger.info(
      {
        database: describeDatabase(database),
        tables: result.sensorTables,
        logbook_tables: result.logbookTables,
        pumps: config.pumps.map((p) => p.id),
        logbooks: config.logbooks.map((l) => l.id),
        ...(opts.grantTo ? { granted_to: opts.grantTo } : {}),
      },
      'migrated: tables, triggers and engine schema are in place',
    );
  } catch (err) {
    logger.fatal(`migrate failed: ${describePgError(err)}`);
    process.exitCode = 1;
  } finally {
    logger.flush();
  }
}

export async function backendCommand(opts: { port: number; host: string }): Promise<void> {
  const { config, database } = withDatabase();
  const logger = loggerFor(config);
  logDefinitionWarnings(logger, config);
  const pool = createPool(database, 'pump-monitor-backend', 4);
  const app = await buildReferenceBackend({
    pool,
    pumps: config.pumps,
    logbooks: config.logbooks,
    apiKey: config.apiKey,
    logger,
  });
  const url = await app.listen({ port: opts.port, host: opts.host });
  logger.info({ url, api_key_check: config.apiKey !== '' }, 'reference backend listening');
  handleSignals(logger, async () => {
    await app.close();
    await pool.end();
    return { stopped: [`the reference backend at ${url}`], removed: [] };
  });
}

export async function simulateCommand(opts: {
  rate: number;
  missing: number;
  late: number;
  outOfOrder: number;
  scenario: string;
  count?: number;
  logbookEvery: number;
}): Promise<void> {
  if (!(SCENARIOS as readonly string[]).includes(opts.scenario)) {
    throw new Error(`--scenario: got "${opts.scenario}", expected ${SCENARIOS.join(', ')}`);
  }
  const { config, database } = withDatabase(true);
  await ensureReachable(database, 'pump-monitor-simulate');
  const logger = loggerFor(config);
  logDefinitionWarnings(logger, config);
  const pool = createPool(database, 'pump-monitor-simulate', 2);
  const controller = new AbortController();
  process.once('SIGINT', () => controller.abort());
  process.once('SIGTERM', () => controller.abort());
  logger.info(
    { pumps: config.pumps.map((p) => p.id), logbooks: config.logbooks.map((l) => l.id), ...opts },
    'simulating',
  );
  if (opts.scenario === 'silent-sensor') {
    logger.info(
      { table: silentSensorTable(config.pumps), after_s: 20 },
      'silent-sensor: this table gets no more rows after 20 simulated seconds; its channel turns silent on the status page and in pump_monitor_channel_silent',
    );
  }
  const result = await runSimulator({
    pool,
    pumps: config.pumps,
    rate: opts.rate,
    missingProbability: opts.missing,
    lateProbability: opts.late,
    outOfOrderProbability: opts.outOfOrder,
    scenario: opts.scenario as Scenario,
    logbooks: config.logbooks,
    logbookEverySeconds: opts.logbookEvery,
    ...(opts.count !== undefined ? { count: opts.count } : {}),
    signal: controller.signal,
    onError: (err) => logger.warn({ err: describePgError(err) }, 'simulator write failed'),
  });
  logger.info(result, 'simulation finished');
  await pool.end();
  flushAndExit(logger, 0);
}
