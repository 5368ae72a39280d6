import pg from 'pg';
import type { Config, DatabaseConfig } from '../../config/env.js';
import { tableRoutes } from '../../source/replication/routes.js';
import { replicationNames } from '../../source/replication/setup.js';
import { clientConfig, describePgError } from '../../store/db.js';
import {
  canReplicate,
  publicationTables,
  qualifiedNames,
  readSlot,
  walLevel,
} from '../../store/replication.js';
import type { Check } from './report.js';

/** A slot holding more WAL than this fails the check: its reader is gone or far behind. */
export const SLOT_LAG_LIMIT_BYTES = 1024 ** 3;

const mib = (bytes: number) => `${(bytes / 1024 ** 2).toFixed(1)} MiB`;

/**
 * diagnose's lines for the replication source. SOURCE=replication: wal_level, the user's REPLICATION
 * attribute, the slot (there, its plug-in, this database's, read or not, the WAL it holds) and, for
 * pgoutput, the publication (exactly the definitions' tables, inserts published). SOURCE=notify: a slot
 * of this installation left behind, which nobody reads and which keeps WAL until the disk fills.
 */
export async function replicationChecks(config: Config & { database: DatabaseConfig }): Promise<Check[]> {
  const names = replicationNames(config.source, config.database.database);
  const client = new pg.Client({
    ...clientConfig(config.database, 'pump-monitor-diagnose'),
    query_timeout: 10_000,
  });
  client.on('error', () => {});
  try {
    await client.connect();
  } catch {
    return []; // the connection check says why
  }
  try {
    const slot = await readSlot(client, names.slot);
    if (config.source.kind !== 'replication') {
      if (!slot) return [];
      return [
        {
          name: `replication slot ${names.slot}`,
          ok: slot.active,
          detail: `SOURCE=notify, and the slot ${slot.active ? 'is read by a session' : 'is read by nobody'}; it holds ${mib(slot.lagBytes)} of WAL`,
          ...(slot.active
            ? {}
            : {
                hint: `a slot nobody reads keeps WAL until the disk fills: drop it (SELECT pg_drop_replication_slot('${names.slot}')), or set SOURCE=replication`,
              }),
        },
      ];
    }
    const checks: Check[] = [];
    const level = await walLevel(client);
    checks.push({
      name: 'wal_level',
      ok: level === 'logical',
      detail: `wal_level is ${level}`,
      ...(level === 'logical'
        ? {}
        : {
            hint: 'set wal_level = logical and restart PostgreSQL (a managed service: its logical replication setting)',
          }),
    });
    const may = await canReplicate(client);
    checks.push({
      name: 'replication privilege',
      ok: may,
      detail: may ? 'the user may read replication slots' : 'the user has neither REPLICATION nor superuser',
      ...(may ? {} : { hint: 'ALTER ROLE <user> WITH REPLICATION (IBM Cloud: use the repl user)' }),
    });
    if (!slot) {
      checks.push({
        name: `replication slot ${names.slot}`,
        ok: false,
        detail: 'no such slot',
        hint:
          names.plugin === 'pgoutput'
            ? 'run pump-monitor migrate with SOURCE=replication (it creates it), or set REPLICATION_SLOT'
            : `create it through the provider (IBM Cloud: the Databases API's logical replication slot, plugin wal2json), name it in REPLICATION_SLOT; see docs/deployment.md`,
      });
    } else {
      const problems: string[] = [];
      if (slot.plugin !== names.plugin)
        problems.push(`plug-in ${slot.plugin}, REPLICATION_PLUGIN is ${names.plugin}`);
      if (slot.database !== config.database.database)
        problems.push(`it belongs to database ${slot.database}`);
      if (slot.lagBytes > SLOT_LAG_LIMIT_BYTES) problems.push(`it holds ${mib(slot.lagBytes)} of WAL`);
      checks.push({
        name: `replication slot ${names.slot}`,
        ok: problems.length === 0,
        detail:
          problems.length > 0
            ? problems.join('; ')
            : `${slot.plugin}, ${slot.active ? 'read by a replica' : 'not read now'}, confirmed ${slot.confirmed ?? '-'}, holds ${mib(slot.lagBytes)} of WAL`,
        ...(problems.length === 0
          ? {}
          : {
              hint:
                slot.plugin !== names.plugin
                  ? `set REPLICATION_PLUGIN=${slot.plugin}, or drop the slot and run migrate`
                  : slot.lagBytes > SLOT_LAG_LIMIT_BYTES
                    ? 'start a replica (it reads the slot and confirms it), or, if the installation left this source, drop the slot'
                    : 'set REPLICATION_SLOT to a slot of this database',
            }),
      });
    }
    if (names.plugin === 'pgoutput') checks.push(await publicationCheck(client, names.publication, config));
    return checks;
  } catch (err) {
    return [
      {
        name: 'replication',
        ok: false,
        detail: `could not inspect the replication set-up: ${describePgError(err)}`,
        hint: 'the database user needs to read pg_replication_slots and pg_publication',
      },
    ];
  } finally {
    await client.end().catch(() => {});
  }
}

async function publicationCheck(client: pg.Client, publication: string, config: Config): Promise<Check> {
  const name = `publication ${publication}`;
  const pub = await publicationTables(client, publication);
  const tables = [...tableRoutes(config).keys()];
  if (!pub) {
    return {
      name,
      ok: false,
      detail: 'no such publication',
      hint: 'run pump-monitor migrate with SOURCE=replication, or create it for the definitions’ tables',
    };
  }
  const q = await qualifiedNames(client, tables);
  const want = tables.map((t) => q.get(t) ?? `public.${t}`);
  const missing = pub.all ? [] : want.filter((t) => !pub.tables.includes(t));
  const extra = pub.all ? [] : pub.tables.filter((t) => !want.includes(t));
  const problems = [
    ...(pub.inserts ? [] : ['it does not publish inserts']),
    ...(missing.length > 0 ? [`missing ${missing.join(', ')}`] : []),
    ...(extra.length > 0
      ? [`${extra.length} other tables (their changes are decoded and sent for nothing)`]
      : []),
    ...(pub.all ? ['it is FOR ALL TABLES (every change of the database is sent)'] : []),
  ];
  return {
    name,
    ok: pub.inserts && missing.length === 0,
    detail: problems.length > 0 ? problems.join('; ') : `exactly the ${tables.length} tables, inserts`,
    ...(problems.length > 0
      ? { hint: 'run pump-monitor migrate with SOURCE=replication to set its tables' }
      : {}),
  };
}
