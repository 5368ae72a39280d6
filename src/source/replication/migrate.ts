import type pg from 'pg';
import type { Config, DatabaseConfig } from '../../config/env.js';
import { dropNotifyTrigger } from '../../store/schema.js';
import { tableRoutes } from './routes.js';
import { prepareReplication, replicationNames } from './setup.js';

/**
 * What `migrate` does for the chosen source after the tables are in place. SOURCE=notify: nothing more
 * (migrate has installed the triggers). SOURCE=replication: the engine's triggers come off the
 * definitions' tables (each would cost every insert a NOTIFY nobody reads), the publication is made to
 * hold exactly those tables, and a pgoutput slot is created. Switching back is `migrate` with
 * SOURCE=notify, which puts the triggers back; the checkpoints stay meaningful both ways (docs/replication.md).
 */
export async function migrateSource(
  client: pg.ClientBase,
  config: Pick<Config, 'pumps' | 'logbooks' | 'source'> & { database: DatabaseConfig | undefined },
): Promise<{ slotCreated: boolean } | undefined> {
  if (config.source.kind !== 'replication' || !config.database) return undefined;
  const tables = [...tableRoutes(config).keys()];
  for (const t of tables) await dropNotifyTrigger(client, t);
  const { createdSlot } = await prepareReplication(
    client,
    replicationNames(config.source, config.database.database),
    tables,
  );
  return { slotCreated: createdSlot };
}
