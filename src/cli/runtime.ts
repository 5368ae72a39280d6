import { constants } from 'node:os';
import type { FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import type { Config, DatabaseConfig } from '../config/env.js';
import { Monitor } from '../engine/monitor.js';
import { warnIfOpen } from '../http/auth.js';
import { buildServer } from '../http/server.js';
import { createLogger } from '../util/logger.js';

/** A person is watching: pretty logs and progress lines. Otherwise (JSON-log mode) only log lines. */
export function terminal(): boolean {
  return process.stdout.isTTY === true && process.env.LOG_FORMAT !== 'json';
}

/** Rewrites one status line on stderr; undefined clears it. */
export function progressLine(text: string | undefined): void {
  process.stderr.write(text === undefined ? '\r\x1b[K' : `\r\x1b[K${text}`);
}

/** The configured values no log line may carry: they are scrubbed wherever they appear. */
export function secretsOf(config: Config): (string | undefined)[] {
  return [config.apiKey, config.database?.password, config.status.auth?.password];
}

export function loggerFor(config: Config, extraSecrets: string[] = []): Logger {
  return createLogger({
    level: config.log.level,
    file: config.log.file,
    secrets: [...secretsOf(config), ...extraSecrets],
    pretty: terminal(),
  });
}

/** What `listen` and `npm start` ran, for the stop line: the pumps' listeners and the logbook streams'. */
export function listenersOf(config: Pick<Config, 'pumps' | 'logbooks'>): string {
  const pumps = `the listeners of ${config.pumps.map((p) => p.id).join(', ')}`;
  const logbooks = config.logbooks.map((l) => l.id);
  if (logbooks.length === 0) return pumps;
  return `${pumps} and of the logbook stream${logbooks.length > 1 ? 's' : ''} ${logbooks.join(', ')}`;
}

/**
 * Logs the definitions linter's warnings: what the folder describes is allowed but worth an operator's
 * look (an endpoint fed by two tables, a channel in no vector). See docs/pumps.md. A folder of the
 * operator's own (PUMPS_DIR) gets one warning each. A built-in profile's are facts of the plant's wiring,
 * reviewed in docs/pumps.md and nothing an operator can act on: one info line says them all.
 */
export function logDefinitionWarnings(logger: Logger, config: Pick<Config, 'warnings' | 'profile'>): void {
  if (config.profile !== undefined) {
    if (config.warnings.length > 0) {
      logger.info(
        { profile: config.profile, facts: config.warnings },
        `profile ${config.profile}: ${config.warnings.length} known facts of the plant's wiring (endpoints fed by two tables, channels posted only; see docs/pumps.md)`,
      );
    }
    return;
  }
  for (const warning of config.warnings) logger.warn({ profile: config.profile }, warning);
}

export interface Running {
  monitor: Monitor;
  server: FastifyInstance;
  /** The address the status server listens on. */
  url: string;
  stop(): Promise<void>;
}

/**
 * Starts the status server, then the engine. The server answers /healthz at once and /readyz with 503
 * until every channel is LISTENed.
 */
export async function runListeners(
  config: Config & { database: DatabaseConfig },
  logger: Logger,
): Promise<Running> {
  const monitor = new Monitor({ config, logger, ...(terminal() ? { progress: progressLine } : {}) });
  const server = await buildServer(monitor, config.status);
  const url = await server.listen({ port: config.port, host: config.host });
  logger.info({ url, auth: config.status.auth ? 'basic' : 'none' }, 'status server listening');
  warnIfOpen(logger, config.host, config.status.auth);
  try {
    await monitor.start();
  } catch (err) {
    await monitor.stop(0).catch(() => {});
    await server.close();
    throw err;
  }
  let stopped: Promise<void> | undefined;
  const stop = () => {
    stopped ??= (async () => {
      await monitor.stop();
      await server.close();
    })();
    return stopped;
  };
  return { monitor, server, url, stop };
}

/** What a stop stopped and removed, for the last log line. */
export interface StopSummary {
  stopped: string[];
  removed: string[];
}

/**
 * A stop that outlives SHUTDOWN_TIMEOUT_MS by this much is stuck (an await that never settles): the process
 * logs the stop's stage and exits 1, so an orchestrator restarts it rather than waiting on it for ever.
 */
export const STOP_GRACE_MS = 30_000;

/** A repeat of the first signal within this long is the same request (a terminal and npm both pass Ctrl-C on). */
const SAME_REQUEST_MS = 1_000;
const PARENT_POLL_MS = 500;

/**
 * SIGTERM, SIGINT and SIGHUP stop gracefully and exit 0; a second signal, a second or more after the first,
 * exits at once. Run by npm (`npm start`), the process also stops when npm is gone: npm passes SIGTERM and
 * SIGINT on but dies of SIGHUP itself, which would leave this process serving with nobody to stop it.
 * A fatal engine error (reconnection limits exhausted) exits 1 so the orchestrator restarts the process.
 * The last line logged says what was stopped and removed.
 */
export function handleSignals(
  logger: Logger,
  stop: () => Promise<StopSummary | undefined>,
  monitor?: Monitor,
): void {
  let stopping = false;
  let firstAt = 0;
  const bound = () => {
    if (!monitor) return;
    const ms = monitor.shutdownTimeoutMs + STOP_GRACE_MS;
    setTimeout(() => {
      logger.error({ stage: monitor.stopStage, after_ms: ms }, 'the stop did not finish in time; exiting');
      flushAndExit(logger, 1);
    }, ms).unref();
  };
  // A terminal that hangs up must not take the process down mid-stop with a write error.
  for (const stream of [process.stdout, process.stderr]) stream.on('error', () => {});
  const onSignal = (signal: NodeJS.Signals, reason?: string) => {
    if (stopping) {
      if (Date.now() - firstAt < SAME_REQUEST_MS) return;
      logger.warn({ signal }, 'second signal: exiting now');
      process.exit(130);
    }
    stopping = true;
    firstAt = Date.now();
    logger.info({ signal, ...(reason ? { reason } : {}) }, 'stopping');
    bound();
    stop().then(
      (summary) => {
        logger.info({ signal, ...summary }, describeStop(summary));
        flushAndExit(logger, 0);
      },
      (err) => {
        logger.error({ err }, 'stop failed');
        flushAndExit(logger, 1);
      },
    );
  };
  for (const signal of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) process.on(signal, () => onSignal(signal));
  watchParent((parent) => onSignal('SIGHUP', `npm (pid ${parent}), which started this process, has exited`));
  monitor?.on('fatal', (err) => {
    logger.fatal(err.message);
    stopping = true;
    bound();
    // Said again after the shutdown's own lines, so the last line tells the operator why it exited.
    stop().finally(() => {
      logger.fatal(`exiting: ${err.message}`);
      flushAndExit(logger, 1);
    });
  });
}

/**
 * Until `handleSignals` takes over: SIGTERM, SIGINT or SIGHUP while the listeners start (an unreachable
 * database keeps the start retrying for minutes) exits at once with 128 + the signal's number, as the
 * signal's default action would end the process, with a line that says so. Needed where node is PID 1
 * (the image's entrypoint): the kernel drops a signal that PID 1 has no handler for, and the start would
 * go on until the orchestrator's SIGKILL. What the start did not record is read again by the next start,
 * as after a SIGKILL. Returns the removal of these handlers.
 */
export function exitOnSignalWhileStarting(logger: Logger): () => void {
  const offs = (['SIGTERM', 'SIGINT', 'SIGHUP'] as const).map((signal) => {
    const onSignal = () => {
      logger.warn({ signal }, 'signal during start-up: exiting before the listeners run');
      flushAndExit(logger, 128 + constants.signals[signal]);
    };
    process.on(signal, onSignal);
    return () => process.off(signal, onSignal);
  });
  return () => {
    for (const off of offs) off();
  };
}

/** "stopped A, B; removed X" — or "stopped" alone when the caller did not say. */
export function describeStop(summary: StopSummary | undefined): string {
  if (!summary) return 'stopped';
  const removed = summary.removed.length > 0 ? summary.removed.join(', ') : 'nothing';
  return `stopped ${summary.stopped.join(', ')}; removed ${removed}`;
}

/** Calls `gone` once if this process was started by npm and npm exits first (this process is re-parented). */
function watchParent(gone: (parent: number) => void): void {
  if (!process.env.npm_lifecycle_event) return;
  const parent = process.ppid;
  const timer = setInterval(() => {
    if (process.ppid === parent) return;
    clearInterval(timer);
    gone(parent);
  }, PARENT_POLL_MS);
  timer.unref();
}

export function flushAndExit(logger: Logger, code: number): void {
  process.exitCode = code;
  logger.flush();
  setTimeout(() => process.exit(code), 50).unref();
}
