import type pg from 'pg';
import type { Logger } from 'pino';
import type { Config, DatabaseConfig } from '../config/env.js';
import { LedgerError } from '../ledger/checkpoint-keeper.js';
import { backoffSchedule } from '../source/listener.js';
import { DatabaseUnavailableError, describePgError, isPermanentConnectFault } from '../store/db.js';
import { SchemaVersionError } from '../store/migrations.js';
import { PrivilegeError } from '../store/schema.js';
import { missingTables } from '../store/sensor-rows.js';
import { sleep } from '../util/clock.js';

/** A start-up problem that retrying will not fix. */
export class StartupError extends Error {
  override name = 'StartupError';
}

/**
 * Start-up database work, retried with the original's limits (MAX_INTENTOS_INICIAL, TIEMPO_ESPERA_BASE).
 * A fault retrying cannot fix (a privilege, a schema version, a refused password, a missing table) is
 * thrown at once, in one line.
 */
export async function withStartupRetries(
  o: { database: DatabaseConfig; reconnect: Config['reconnect']; logger: Logger },
  fn: () => Promise<void>,
): Promise<void> {
  const { maxInitialAttempts, baseDelayMs, maxDelayMs } = o.reconnect;
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn();
    } catch (err) {
      if (
        err instanceof PrivilegeError ||
        err instanceof StartupError ||
        err instanceof LedgerError ||
        err instanceof SchemaVersionError
      ) {
        throw err;
      }
      // A refused password or a missing database: one line, no retries (issue 19).
      if (isPermanentConnectFault(err)) throw new DatabaseUnavailableError(o.database, err);
      if (attempt >= maxInitialAttempts) {
        throw new Error(
          `gave up connecting to PostgreSQL after ${attempt} attempts (MAX_INTENTOS_INICIAL=${maxInitialAttempts}): ${describePgError(err)}`,
        );
      }
      const delay = backoffSchedule(attempt, baseDelayMs, maxDelayMs);
      o.logger.warn(
        { intentos_conexion: attempt, delay_ms: delay, err: describePgError(err) },
        'database not ready',
      );
      await sleep(delay);
    }
  }
}

/** The sensor and logbook tables must exist: a missing one is a configuration fault, not a wait. */
export async function checkTables(client: pg.PoolClient, tables: string[]): Promise<void> {
  const missing = await missingTables(client, tables);
  if (missing.length > 0) {
    throw new StartupError(
      `sensor tables missing: ${missing.join(', ')}; run pump-monitor migrate, or check DB_NAME and PUMPS`,
    );
  }
}
