import { describeDatabase, loadConfig } from '../config/env.js';
import {
  exitOnSignalWhileStarting,
  flushAndExit,
  handleSignals,
  listenersOf,
  logDefinitionWarnings,
  loggerFor,
  runListeners,
} from './runtime.js';

export async function listen(): Promise<void> {
  const config = loadConfig(process.env, { requireDatabase: true, requireBackend: true });
  const database = config.database;
  if (!database) throw new Error('unreachable: requireDatabase');
  const logger = loggerFor(config);
  logDefinitionWarnings(logger, config);
  logger.info(
    {
      database: describeDatabase(database),
      pumps: config.pumps.map((p) => `${p.id} → ${p.baseUrl}`),
      ...(config.logbooks.length > 0 ? { logbooks: config.logbooks.map((l) => `${l.id} → ${l.url}`) } : {}),
    },
    'starting listeners',
  );
  const starting = exitOnSignalWhileStarting(logger);
  try {
    const running = await runListeners({ ...config, database }, logger);
    handleSignals(
      logger,
      async () => {
        await running.stop();
        return {
          stopped: [listenersOf(config), `the status server at ${running.url}`],
          removed: [],
        };
      },
      running.monitor,
    );
    // Only now: between the two, a signal would find no handler and take its default action.
    starting();
  } catch (err) {
    logger.fatal((err as Error).message);
    flushAndExit(logger, 1);
  }
}
