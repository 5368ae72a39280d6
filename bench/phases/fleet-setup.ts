/**
 * A fleet run's set-up: its sensor tables (made once, kept for the next run), an emptied engine schema, the
 * inserting connections, and the wait for the engine's first catch-up.
 */
import type { PumpConfig } from '../../src/config/env.js';
import { withClient } from '../../src/store/db.js';
import { ENGINE_SCHEMA, migrate } from '../../src/store/schema.js';
import type { Database, EngineRun } from '../harness.js';

/** Pumps per migrate call: one transaction each (all of 200 pumps' 4,000 tables in one runs out of locks). */
const MIGRATE_CHUNK = 25;

/**
 * One inserting connection per 25 pumps (25 transactions a second each, one at a time), 2 to 16: enough
 * that a commit waiting on its WAL flush holds up few others.
 */
export function connectionsFor(pumps: number): number {
  return Math.min(16, Math.max(2, Math.ceil(pumps / 25)));
}

export interface RunPlan {
  pumps: PumpConfig[];
  warmupSeconds: number;
  seconds: number;
  /** The value every reading of the run's first second carries; + 1 per second. */
  firstTick: number;
  tables: { created: number; ms: number };
}

/** Whether the engine's catch-up is running (its `pump_monitor_catchup_running` gauge). */
export async function catchUpRunning(run: EngineRun): Promise<boolean | undefined> {
  try {
    const reply = run.engine.next('catchup', 5_000);
    run.engine.send({ type: 'catchup' });
    return (await reply).running;
  } catch {
    return undefined;
  }
}

/** Creates the sensor tables and triggers of `pumps` with migrate, a few pumps per transaction. */
export async function createTables(db: Database, pumps: PumpConfig[]): Promise<number> {
  let tables = 0;
  await withClient(db.config, 'bench-setup', async (c) => {
    for (let i = 0; i < pumps.length; i += MIGRATE_CHUNK)
      tables += (await migrate(c, pumps.slice(i, i + MIGRATE_CHUNK))).sensorTables;
    await c.query('CHECKPOINT');
  });
  return tables;
}

/**
 * Empties the engine schema's state, so that each run starts as a new replica on a new schema whatever the
 * run before left undelivered: no checkpoint (the engine starts each reader at its table's last row), no
 * outbox, post ledger, deferred post or dead letter. The checkpoints' reader numbers start again at 1.
 */
export async function resetEngineState(db: Database): Promise<void> {
  await withClient(db.config, 'bench-setup', async (c) => {
    await c.query(
      `TRUNCATE ${ENGINE_SCHEMA}.checkpoints, ${ENGINE_SCHEMA}.outbox, ${ENGINE_SCHEMA}.sensor_posts,
                ${ENGINE_SCHEMA}.deferred_posts, ${ENGINE_SCHEMA}.dead_letters RESTART IDENTITY`,
    );
  });
}
