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

/**
 * SIGTERM and SIGINT stop gracefully and exit 0; a second signal exits at once. A fatal engine error
 * (reconnection limits exhausted) exits 1 so the orchestrator restarts the process.
 */
export function handleSignals(logger: Logger, stop: () => Promise<void>, monitor?: Monitor): void {
  let stopping = false;
  const onSignal = (signal: NodeJS.Signals) => {
    if (stopping) {
      logger.warn({ signal }, 'second signal: exiting now');
      process.exit(130);
    }
    stopping = true;
    logger.info({ signal }, 'stopping');
    stop().then(
      () => flushAndExit(logger, 0),
      (err) => {
        logger.error({ err }, 'stop failed');
        flushAndExit(logger, 1);
      },
    );
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  monitor?.on('fatal', (err) => {
    logger.fatal(err.message);
    stopping = true;
    // Said again after the shutdown's own lines, so the last line tells the operator why it exited.
    stop().finally(() => {
      logger.fatal(`exiting: ${err.message}`);
      flushAndExit(logger, 1);
    });
  });
}

export function flushAndExit(logger: Logger, code: number): void {
  process.exitCode = code;
  logger.flush();
  setTimeout(() => process.exit(code), 50).unref();
}
