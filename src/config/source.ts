import { type Env, fail, read } from './read.js';

/** Where rows come from: SOURCE, and for a replication slot its plug-in, slot and publication names. */

export interface SourceConfig {
  kind: 'notify' | 'replication';
  /** REPLICATION_PLUGIN: the slot's output plug-in. */
  plugin: 'pgoutput' | 'wal2json';
  /** REPLICATION_SLOT; undefined: pump_monitor_<database>. */
  slot: string | undefined;
  /** REPLICATION_PUBLICATION (pgoutput); undefined: pump_monitor, made by migrate. */
  publication: string | undefined;
}

const IDENTIFIER = /^[a-z_][a-z0-9_]{0,62}$/;

export function sourceConfig(env: Env): SourceConfig {
  const kind = read(env, 'SOURCE') ?? 'notify';
  if (kind !== 'notify' && kind !== 'replication') fail('SOURCE', kind, 'notify or replication');
  const plugin = read(env, 'REPLICATION_PLUGIN') ?? 'pgoutput';
  if (plugin !== 'pgoutput' && plugin !== 'wal2json')
    fail('REPLICATION_PLUGIN', plugin, 'pgoutput or wal2json');
  const slot = read(env, 'REPLICATION_SLOT');
  if (slot !== undefined && !IDENTIFIER.test(slot)) {
    fail('REPLICATION_SLOT', slot, 'a slot name: lower-case letters, digits and _, at most 63');
  }
  const publication = read(env, 'REPLICATION_PUBLICATION');
  if (publication !== undefined && !IDENTIFIER.test(publication)) {
    fail(
      'REPLICATION_PUBLICATION',
      publication,
      'a publication name: lower-case letters, digits and _, at most 63',
    );
  }
  return { kind, plugin, slot, publication };
}
