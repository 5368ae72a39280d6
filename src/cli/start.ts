import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { loadConfig, port } from '../config/env.js';
import { type Env, fail, num, read } from '../config/read.js';
import { migrateSource } from '../source/replication/migrate.js';
import { createPool, withClient } from '../store/db.js';
import { migrate } from '../store/schema.js';
import { buildReferenceBackend } from '../tools/backend/server.js';
import { freePort } from '../tools/free-port.js';
import { startKeptPostgres } from '../tools/postgres/keeper.js';
import { runSimulator, SCENARIOS, type Scenario } from '../tools/simulator.js';
import {
  type DemoWiring,
  demoFiles,
  processStartTime,
  removeDemoState,
  removeDemoStateNow,
  shellPath,
  writeDemoState,
  writeSecretFile,
} from './demo.js';
import { listen } from './listen.js';
import {
  flushAndExit,
  handleSignals,
  listenersOf,
  logDefinitionWarnings,
  loggerFor,
  type Running,
  runListeners,
} from './runtime.js';

/**
 * `npm start`. With a database configured this is `listen`. Without one it runs the whole system on this
 * machine: embedded PostgreSQL in ./.data, the reference backend, the simulator, both pumps' listeners
 * and the status page. PUMPS_PROFILE (or PUMPS_DIR) and PUMPS choose the wiring for all of them:
 * migrate creates that wiring's tables, the backend serves its endpoints (logbooks included) and the
 * simulator writes its tables and logbook entries. The status page binds to 127.0.0.1 unless HOST is set.
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
  const simulation = simulationSettings(process.env);
  const pgPort = port(process.env, 'PG_PORT', 0) || (await freePort());
  const logger = loggerFor(probe, [apiKey]);
  logger.info({ dataDir, port: pgPort }, 'starting embedded PostgreSQL');
  const postgres = await startKeptPostgres({
    dataDir,
    port: pgPort,
    // SOURCE=replication reads a logical slot: the server must write logical WAL. Always, not only then:
    // the data directory is kept between runs, and a server holding a logical slot (a run with
    // SOURCE=replication) refuses to start at all below wal_level=logical.
    postgresFlags: ['-c', 'wal_level=logical'],
  });
  if (postgres.relocation) {
    logger.info({ dir: postgres.relocation.dir }, `embedded PostgreSQL: ${postgres.relocation.reason}`);
  }
  let backendPool: ReturnType<typeof createPool> | undefined;
  let simPool: ReturnType<typeof createPool> | undefined;
  // Whatever way this process ends, the state file goes with it (an exit at once skips `cleanup`).
  process.once('exit', () => removeDemoStateNow(files));
  const cleanup = async (): Promise<string[]> => {
    const removed: string[] = await removeDemoState(files).catch(() => []);
    await backendPool?.end().catch(() => {});
    await simPool?.end().catch(() => {});
    await postgres.stop();
    if (postgres.relocation) removed.push(postgres.relocation.dir);
    return removed.map(shellPath);
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
      // A demo is not a service for the network: loopback unless HOST says otherwise.
      HOST: process.env.HOST?.trim() || '127.0.0.1',
    });
    const all = { ...config, database };
    logDefinitionWarnings(logger, config);

    await withClient(database, 'pump-monitor-migrate', async (c) => {
      await migrate(c, config);
      await migrateSource(c, { ...config, database });
    });

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
    const stopSimulation = new AbortController();
    const simulated = runSimulator({
      pool: simPool,
      pumps: config.pumps,
      ...simulation,
      driftSeconds: 300,
      logbooks: config.logbooks,
      signal: stopSimulation.signal,
      onError: (err) => logger.debug({ err: err.message }, 'simulator write failed'),
    });

    const statusUrl = `http://${config.host === '0.0.0.0' || config.host === '::' ? '127.0.0.1' : config.host}:${config.port}/`;
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
      wiring: wiringOf(config),
    });
    const temporary = postgres.relocation?.dataDir ? ' (temporary: removed on stop)' : '';
    const pgdata = process.env.PGDATA_DIR?.trim() ? `PGDATA_DIR=${shellPath(dataDir)} ` : '';
    const banner = (heading: string) =>
      [
        '',
        heading,
        `  status page        ${statusUrl}`,
        `  status JSON        ${statusUrl}status   metrics ${statusUrl}metrics`,
        `  reference backend  ${backendUrl}  (pumps ${config.pumps.map((p) => p.id).join(', ')}${
          config.logbooks.length > 0 ? `; logbooks at ${config.logbooks.map((l) => l.url).join(', ')}` : ''
        })`,
        `  PostgreSQL         ${database.host}:${database.port}/${database.database}, data in ${postgres.dataDir}${temporary}`,
        `  wiring             ${wiringOf(config).name}`,
        `  simulator          ${simulation.scenario}, ${simulation.rate} timestamp/s per pump${
          config.logbooks.length > 0
            ? `, a logbook entry every ${simulation.logbookEverySeconds} s per stream`
            : ''
        }`,
        'From this directory, in another terminal:',
        `  ${pgdata}npx pump-monitor diagnose`,
        `  PGPASSWORD="$(cat ${shellPath(files.passwordFile)})" psql -h ${database.host} -p ${database.port} -U ${database.user} ${database.database}`,
        'Ctrl-C stops everything.',
        '',
      ].join('\n');
    process.stdout.write(banner('pump-monitor is running:'));

    const settling = new AbortController();
    handleSignals(
      logger,
      async () => {
        settling.abort();
        stopSimulation.abort();
        await simulated;
        await running.stop();
        await backend.close();
        const removed = await cleanup();
        const pg = `the embedded PostgreSQL${postgres.pid ? ` (pid ${postgres.pid})` : ''}`;
        return {
          stopped: ['the simulator', listenersOf(config), 'the status server', 'the reference backend', pg],
          removed,
        };
      },
      running.monitor,
    );
    // Start-up's log lines (catch-up, the first partial groups) push the banner away: say it again once
    // every pump has sent a vector.
    void settled(
      running,
      config.pumps.map((p) => p.id),
      settling.signal,
    ).then((ok) => {
      if (ok) process.stdout.write(banner('pump-monitor is running (start-up settled):'));
    });
  } catch (err) {
    logger.fatal((err as Error).message);
    await cleanup();
    flushAndExit(logger, 1);
  }
}

const DEFAULT_WIRING = 'pumps/a.json, pumps/b.json';
const SETTLE_LIMIT_MS = 120_000;
const SETTLE_POLL_MS = 1_000;

/** Resolves true once every pump has sent a vector (false if stopped first); false after two minutes. */
async function settled(running: Running, pumps: string[], signal: AbortSignal): Promise<boolean> {
  const deadline = Date.now() + SETTLE_LIMIT_MS;
  while (Date.now() < deadline && !signal.aborted) {
    const status = running.monitor.status() as { pumps: Record<string, { vectors_sent?: number }> };
    if (pumps.every((id) => (status.pumps[id]?.vectors_sent ?? 0) > 0)) return !signal.aborted;
    await delay(SETTLE_POLL_MS, undefined, { ref: false }).catch(() => {});
  }
  return false;
}

/** The definitions this demo runs, for demo.json: the operator commands beside it use the same. */
function wiringOf(config: {
  profile: string | undefined;
  pumps: { id: string }[];
  logbooks: { id: string }[];
}): DemoWiring {
  const folder = process.env.PUMPS_DIR?.trim();
  const selection = process.env.PUMPS?.trim();
  const name = config.profile
    ? `profile ${config.profile}`
    : folder
      ? `folder ${path.resolve(folder)}`
      : `default (${DEFAULT_WIRING})`;
  return {
    name,
    ...(config.profile ? { profile: config.profile } : {}),
    ...(!config.profile && folder ? { folder: path.resolve(folder) } : {}),
    ...(selection ? { selection } : {}),
    pumps: config.pumps.map((p) => p.id),
    logbooks: config.logbooks.map((l) => l.id),
  };
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

/**
 * The demo simulator's settings (SIMULATE_*), checked before anything starts: a bad value is one line and
 * exit 2, like every other variable, not a demo that runs without the scenario it was asked for.
 */
export function simulationSettings(env: Env): {
  scenario: Scenario;
  rate: number;
  missingProbability: number;
  lateProbability: number;
  logbookEverySeconds: number;
} {
  const scenario = read(env, 'SIMULATE_SCENARIO') ?? 'bearing-failure';
  if (!(SCENARIOS as readonly string[]).includes(scenario)) {
    fail('SIMULATE_SCENARIO', scenario, `one of ${SCENARIOS.join(', ')}`);
  }
  const rate = num(env, 'SIMULATE_RATE', 1);
  const missingProbability = num(env, 'SIMULATE_MISSING', 0.02);
  const lateProbability = num(env, 'SIMULATE_LATE', 0.01);
  const logbookEverySeconds = num(env, 'SIMULATE_LOGBOOK_EVERY', 180);
  if (!(rate > 0 && rate <= 1_000))
    fail('SIMULATE_RATE', read(env, 'SIMULATE_RATE'), 'a number > 0 and <= 1000');
  for (const [name, p] of [
    ['SIMULATE_MISSING', missingProbability],
    ['SIMULATE_LATE', lateProbability],
  ] as const) {
    if (p > 1) fail(name, read(env, name), 'a probability, 0..1');
  }
  if (!(logbookEverySeconds > 0))
    fail('SIMULATE_LOGBOOK_EVERY', read(env, 'SIMULATE_LOGBOOK_EVERY'), 'a number > 0');
  return { scenario: scenario as Scenario, rate, missingProbability, lateProbability, logbookEverySeconds };
}
