import type pg from 'pg';
import type { SourceConfig } from '../../config/env.js';
import { describePgError } from '../../store/db.js';
import {
  canReplicate,
  createSlot,
  ensurePublication,
  publicationTables,
  readSlot,
  walLevel,
} from '../../store/replication.js';

/*
 * The replication source's set-up: the names it uses, the publication and slot it needs (made by `migrate`
 * and checked at start), and a stream error in one line with its fix.
 */

/** The slot and publication an installation uses: named by the operator, or derived from the database. */
export interface ReplicationNames {
  plugin: 'pgoutput' | 'wal2json';
  slot: string;
  publication: string;
  /** Whether the publication is the engine's own (migrate and start make it hold exactly the tables). */
  ownPublication: boolean;
}

export function replicationNames(source: SourceConfig, database: string): ReplicationNames {
  const derived = `pump_monitor_${database.toLowerCase().replace(/[^a-z0-9_]/g, '_')}`.slice(0, 63);
  return {
    plugin: source.plugin,
    slot: source.slot ?? derived,
    publication: source.publication ?? 'pump_monitor',
    ownPublication: source.publication === undefined,
  };
}

/** A set-up problem that retrying will not fix: one line with the fix. */
export class ReplicationSetupError extends Error {
  override name = 'ReplicationSetupError';
}

/**
 * Makes what the source needs, where the engine may: the publication (when it is the engine's own) holding
 * exactly the tables, and the slot. A managed service may make slots only through its API (IBM Cloud's
 * wal2json slots): then the error says so. Run by `migrate` and at start. Throws ReplicationSetupError
 * with the fix when it cannot.
 */
export async function prepareReplication(
  db: pg.ClientBase,
  names: ReplicationNames,
  tables: string[],
  opts: { createSlot: boolean } = { createSlot: true },
): Promise<{ createdSlot: boolean }> {
  const level = await walLevel(db);
  if (level !== 'logical') {
    throw new ReplicationSetupError(
      `SOURCE=replication needs wal_level=logical, the server has ${level}: set wal_level = logical in postgresql.conf and restart PostgreSQL (a managed service: its "logical replication" setting)`,
    );
  }
  if (names.plugin === 'pgoutput') {
    const pub = await publicationTables(db, names.publication);
    if (names.ownPublication) {
      await ensurePublication(db, names.publication, tables).catch((err: unknown) => {
        throw new ReplicationSetupError(
          `cannot make publication ${names.publication}: ${describePgError(err)}; the tables' owner runs CREATE PUBLICATION ${names.publication} FOR TABLE ${tables.join(', ')} WITH (publish = 'insert'), or name one with REPLICATION_PUBLICATION`,
        );
      });
    } else if (!pub) {
      throw new ReplicationSetupError(
        `REPLICATION_PUBLICATION=${names.publication}: no such publication; create it: CREATE PUBLICATION ${names.publication} FOR TABLE ${tables.join(', ')} WITH (publish = 'insert')`,
      );
    }
  }
  const slot = await readSlot(db, names.slot);
  if (slot) {
    if (slot.plugin !== names.plugin) {
      throw new ReplicationSetupError(
        `replication slot ${names.slot} uses plug-in ${slot.plugin}, REPLICATION_PLUGIN is ${names.plugin}: set REPLICATION_PLUGIN=${slot.plugin}, or drop the slot (SELECT pg_drop_replication_slot('${names.slot}')) and let migrate make it`,
      );
    }
    return { createdSlot: false };
  }
  if (!(await canReplicate(db))) {
    throw new ReplicationSetupError(
      `the database user may not use replication slots: ALTER ROLE <user> WITH REPLICATION (or, on a managed service, use its replication user)`,
    );
  }
  const how = `${names.plugin === 'wal2json' ? "on IBM Cloud, through the Databases API's logical replication slot call with plugin wal2json; elsewhere " : ''}SELECT pg_create_logical_replication_slot('${names.slot}', '${names.plugin}'); see docs/deployment.md`;
  if (!opts.createSlot) {
    throw new ReplicationSetupError(`replication slot ${names.slot} does not exist: create it (${how})`);
  }
  await createSlot(db, names.slot, names.plugin).catch((err: unknown) => {
    throw new ReplicationSetupError(
      `replication slot ${names.slot} does not exist and cannot be created here (${describePgError(err)}): create it (${how})`,
    );
  });
  return { createdSlot: true };
}

/** A stream error in one line with its fix, for the log and /status. */
export function explainStreamError(err: string, slot: string): string {
  if (/is active for PID/i.test(err)) return `slot ${slot} is read by another session (${err})`;
  if (/does not exist/i.test(err))
    return `${err}: run pump-monitor migrate with SOURCE=replication, or create the slot`;
  if (/must be superuser or replication role|permission denied/i.test(err)) {
    return `${err}: the database user needs REPLICATION (ALTER ROLE <user> WITH REPLICATION)`;
  }
  return err;
}
