import { randomBytes } from 'node:crypto';
import { loadConfig, port } from '../config/env.js';
import { createPool, withClient } from '../store/db.js';
import { migrate } from '../store/schema.js';
import { buildReferenceBackend } from '../tools/backend/server.js';
import { freePort } from '../tools/free-port.js';
import { startKeptPostgres } from '../tools/postgres-keeper.js';
import { runSimulator, type Scenario } from '../tools/simulator.js';
import {
  demoFiles,
  processStartTime,
  removeDemoState,
  shellPath,
  writeDemoState,
  writeSecretFile,
} from './demo.js';
import { listen } from './listen.js';
import { flushAndExit, handleSignals, logDefinitionWarnings, loggerFor, runListeners } from './runtime.js';

/**
 * `npm start`. With a database configured this is `listen`. Without one it runs the whole system on this
 * machine: embedded PostgreSQL in ./.data, the reference backend, the simulator, both pumps' listeners
 * and the status page. PUMPS_PROFILE (or PUMPS_DIR) and PUMPS choose the wiring for all of them:
 * migrate creates that wiring's tables, the backend serves its endpoints (logbooks included) and the
 * simulator writes its tables and logbook entries.
 */
export async function start(): Promise<void> {
  const probe = loadConfig(process.env);
  if (probe.database) return listen();

  const generatedKey = !process.env.API_KEY;
  const apiKey = process.env.API_KEY || randomBytes(12).toString('hex');
  const files = demoFiles(process.env);
  const dataDir = files.dataDir;
  // Checked before anything starts: a bad port is one line, not a half-started demo.
  const wantedBackendPort = port(process.env, 'BACKEND_PORT', 0);
  const pgPort = port(process.env, 'PG_PORT', 0) || (await freePort());
  const logger = loggerFor(probe, [apiKey]);
  logger.info({ dataDir, port: pgPort }, 'starting embedded PostgreSQL');
  const postgres = await startKeptPostgres({ dataDir, port: pgPort });
  if (postgres.relocation) {
    logger.info({ dir: postgres.relocation.dir }, `embedded PostgreSQL: ${postgres.relocation.reason}`);
  }
  let backendPool: ReturnType<typeof createPool> | undefined;
  let simPool: ReturnType<typeof createPool> | undefined;
  const cleanup = async () => {
    await removeDemoState(files).catch(() => {});
    await backendPool?.end().catch(() => {});
    await simPool?.end().catch(() => {});
    await postgres.stop();
  };
  try {
    const database = await postgres.database('pump_monitor');
    const backendPort = wantedBackendPort || (await portOr(8000));
    const config = loadConfig({
      ...process.env,
      DATABASE_URL: undefined,
      DB_HOST: undefined,
      BASE_URL: `http://127.0.0.1:${backendPort}`,
      BASE_URL_B: `http://127.0.0.1:${backendPort}`,
      API_KEY: apiKey,
    });
    const all = { ...config, database };
    logDefinitionWarnings(logger, config);

    await withClient(database, 'pump-monitor-migrate', (c) => migrate(c, config));

    backendPool = createPool(database, 'pump-monitor-backend', 4);
    const backend = await buildReferenceBackend({
      pool: backendPool,
      pumps: config.pumps,
      logbooks: config.logbooks,
      apiKey,
      logger: false,
    });
    await backend.listen({ port: backendPort, host: '127.0.0.1' });

    const running = await runListeners(all, logger);

    simPool = createPool(database, 'pump-monitor-simulate', 2);
    const simulation = new AbortController();
    const scenario = (process.env.SIMULATE_SCENARIO ?? 'bearing-failure') as Scenario;
    const simulated = runSimulator({
      pool: simPool,
      pumps: config.pumps,
      rate: Number(process.env.SIMULATE_RATE ?? 1),
      missingProbability: Number(process.env.SIMULATE_MISSING ?? 0.02),
      lateProbability: Number(process.env.SIMULATE_LATE ?? 0.01),
      scenario,
      driftSeconds: 300,
      logbooks: config.logbooks,
      logbookEverySeconds: Number(process.env.SIMULATE_LOGBOOK_EVERY ?? 180),
      signal: simulation.signal,
      onError: (err) => logger.debug({ err: err.message }, 'simulator write failed'),
    });

    const statusUrl = `http://127.0.0.1:${config.port}/`;
    const backendUrl = `http://127.0.0.1:${backendPort}`;
    // The operator commands (diagnose) find this run through the state file; the secrets stay in files.
    if (generatedKey) await writeSecretFile(files.apiKeyFile, apiKey);
    await writeDemoState(files, {
      pid: process.pid,
      ...(processStartTime(process.pid) ? { pidStartTime: processStartTime(process.pid) } : {}),
      startedAt: new Date().toISOString(),
      database: {
        host: database.host,
        port: database.port,
        database: database.database,
        user: database.user,
      },
      passwordFile: files.passwordFile,
      backendUrl,
      ...(generatedKey ? { apiKeyFile: files.apiKeyFile } : {}),
      statusUrl,
      dataDir: postgres.dataDir,
    });
    const temporary = postgres.relocation?.dataDir ? ' (temporary: removed on stop)' : '';
    const pgdata = process.env.PGDATA_DIR?.trim() ? `PGDATA_DIR=${shellPath(dataDir)} ` : '';
    process.stdout.write(
      [
        '',
        'pump-monitor is running:',
        `  status page        ${statusUrl}`,
        `  status JSON        ${statusUrl}status   metrics ${statusUrl}metrics`,
        `  reference backend  ${backendUrl}  (pumps ${config.pumps.map((p) => p.id).join(', ')}${
          config.logbooks.length > 0 ? `; logbooks at ${config.logbooks.map((l) => l.url).join(', ')}` : ''
        })`,
        `  PostgreSQL         ${database.host}:${database.port}/${database.database}, data in ${postgres.dataDir}${temporary}`,
        `  wiring             ${config.profile ? `profile ${config.profile}` : (process.env.PUMPS_DIR ?? 'pumps/a.json, pumps/b.json')}`,
        `  simulator          ${scenario}, ${process.env.SIMULATE_RATE ?? 1} timestamp/s per pump${
          config.logbooks.length > 0
            ? `, a logbook entry every ${process.env.SIMULATE_LOGBOOK_EVERY ?? 180} s per stream`
            : ''
        }`,
        'From this directory, in another terminal:',
        `  ${pgdata}npx pump-monitor diagnose`,
        `  PGPASSWORD="$(cat ${shellPath(files.passwordFile)})" psql -h ${database.host} -p ${database.port} -U ${database.user} ${database.database}`,
        'Ctrl-C stops everything.',
        '',
      ].join('\n'),
    );

    handleSignals(
      logger,
      async () => {
        simulation.abort();
        await simulated;
        await running.stop();
        await backend.close();
        await cleanup();
      },
      running.monitor,
    );
  } catch (err) {
    logger.fatal((err as Error).message);
    await cleanup();
    flushAndExit(logger, 1);
  }
}

/** The preferred port when it is free, else any free one. */
async function portOr(preferred: number): Promise<number> {
  const { createServer } = await import('node:net');
  return new Promise((resolvePort) => {
    const s = createServer();
    s.once('error', () => void freePort().then(resolvePort));
    s.listen(preferred, '127.0.0.1', () => s.close(() => resolvePort(preferred)));
  });
}
