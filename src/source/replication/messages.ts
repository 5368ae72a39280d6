import { PgoutputPlugin, Wal2JsonPlugin } from 'pg-logical-replication';
import { parseLsn } from './positions.js';
import type { ReplicationNames } from './setup.js';

/*
 * The two plug-ins' messages, turned into committed transactions of the definitions' tables' inserts:
 * pgoutput's begin, relation, insert and commit (one message each), and wal2json's one object per
 * transaction. No I/O: the source hands the transactions over (source.ts).
 */

/** A row of a transaction: its table (unqualified, as the definitions name it), values and column types. */
export interface Change {
  table: string;
  values: Record<string, unknown>;
  types: Map<string, { oid?: number; name?: string }>;
}

/** A transaction whose commit has arrived, with its inserts into the definitions' tables. */
export interface Committed {
  /** The commit's time in ms since the epoch (the server's clock). */
  committedAt: number;
  changes: Change[];
  /** The position just past the commit: confirming it releases the transaction. */
  end: bigint;
  xid: number | undefined;
}

/** A table of the definitions by the schema and name the slot gives, or undefined for any other. */
export type TableOf = (schema: string, name: string) => string | undefined;

/** The output plug-in the slot is read with: pgoutput on the publication, or wal2json on the tables. */
export function outputPlugin(
  names: ReplicationNames,
  qualifiedTables: string[],
): PgoutputPlugin | Wal2JsonPlugin {
  if (names.plugin === 'pgoutput') {
    return new PgoutputPlugin({ protoVersion: 1, publicationNames: [names.publication] });
  }
  return new Wal2JsonPlugin({
    includeXids: true,
    includeLsn: true,
    includeTimestamp: true,
    includeTypes: true,
    includeTypmod: false,
    addTables: qualifiedTables.map(escapeWal2jsonName).join(','),
  });
}

/** One session's pgoutput stream: the relations' column types, and the transaction being read. */
export class PgoutputReader {
  private readonly types = new Map<number, Map<string, { oid?: number; name?: string }>>();
  private txn: { committedAt: number; xid: number | undefined; changes: Change[] } | undefined;

  constructor(private readonly tableOf: TableOf) {}

  /** A transaction has begun and its commit has not arrived. */
  get open(): boolean {
    return this.txn !== undefined;
  }

  /** One message of the stream; the transaction when it is a commit. */
  read(msg: PgoutputMessage): Committed | undefined {
    switch (msg.tag) {
      case 'relation': {
        // The text output of every column, untouched: rows are rendered as the tables are read (rows.ts).
        for (const c of msg.columns) c.parser = (raw: unknown) => raw;
        this.types.set(msg.relationOid, new Map(msg.columns.map((c) => [c.name, { oid: c.typeOid }])));
        return undefined;
      }
      case 'begin':
        this.txn = {
          committedAt: Number(BigInt(msg.commitTime as bigint) / 1000n),
          xid: msg.xid,
          changes: [],
        };
        return undefined;
      case 'insert': {
        const table = this.tableOf(msg.relation.schema, msg.relation.name);
        if (table === undefined || !this.txn) return undefined;
        this.txn.changes.push({
          table,
          values: msg.new,
          types: this.types.get(msg.relation.relationOid) ?? new Map(),
        });
        return undefined;
      }
      case 'commit': {
        const t = this.txn ?? { committedAt: Date.now(), xid: undefined, changes: [] };
        this.txn = undefined;
        return { ...t, end: parseLsn(msg.commitEndLsn as string) };
      }
      default:
        return undefined;
    }
  }
}

/** A wal2json transaction (one message, at `lsn`) as a committed transaction of the tables' inserts. */
export function wal2jsonTransaction(tx: Wal2JsonTransaction, lsn: string, tableOf: TableOf): Committed {
  const at = tx.timestamp ? Date.parse(tx.timestamp.replace(' ', 'T')) : Number.NaN;
  const changes: Change[] = [];
  for (const c of tx.change ?? []) {
    if (c.kind !== 'insert') continue;
    const table = tableOf(c.schema ?? 'public', c.table);
    if (table === undefined) continue;
    const values: Record<string, unknown> = {};
    const types = new Map<string, { name?: string }>();
    (c.columnnames ?? []).forEach((n, i) => {
      values[n] = c.columnvalues?.[i];
      const t = c.columntypes?.[i];
      if (t !== undefined) types.set(n, { name: t });
    });
    changes.push({ table, values, types });
  }
  return {
    committedAt: Number.isFinite(at) ? at : Date.now(),
    changes,
    end: parseLsn(tx.nextlsn ?? lsn),
    xid: tx.xid,
  };
}

/** A wal2json table name in add-tables: dots, commas and backslashes escaped. */
function escapeWal2jsonName(qualified: string): string {
  const dot = qualified.indexOf('.');
  const esc = (s: string) => s.replace(/([\\,.])/g, '\\$1');
  return `${esc(qualified.slice(0, dot))}.${esc(qualified.slice(dot + 1))}`;
}

export interface PgoutputColumn {
  name: string;
  typeOid: number;
  parser: (raw: unknown) => unknown;
}

export type PgoutputMessage =
  | { tag: 'relation'; relationOid: number; schema: string; name: string; columns: PgoutputColumn[] }
  | { tag: 'begin'; commitTime: bigint; xid: number }
  | {
      tag: 'insert';
      relation: { relationOid: number; schema: string; name: string };
      new: Record<string, unknown>;
    }
  | { tag: 'commit'; commitEndLsn: string | null }
  | { tag: 'other' };

export interface Wal2JsonTransaction {
  xid?: number;
  nextlsn?: string;
  timestamp?: string;
  change?: {
    kind: string;
    schema?: string;
    table: string;
    columnnames?: string[];
    columntypes?: string[];
    columnvalues?: unknown[];
  }[];
}
