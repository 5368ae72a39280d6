import type { Config } from '../../config/env.js';
import { getOrAdd } from '../../util/maps.js';

/** What a table's inserts are handed to. */
export interface TableRoute {
  /** Sensor channels of the table, each with its pumps: a row goes to the intake once per channel. */
  channels: { channel: string; pumps: string[] }[];
  /** The logbook stream reading the table, when it is a logbook's. */
  logbook?: { id: string; channel: string };
  /** The readers (pumps and logbooks) that settle the table's rows. */
  readers: string[];
}

/** The tables the definitions read, each with where its rows go. */
export function tableRoutes(config: Pick<Config, 'pumps' | 'logbooks'>): Map<string, TableRoute> {
  const routes = new Map<string, TableRoute>();
  const at = (table: string) => getOrAdd(routes, table, () => ({ channels: [], readers: [] }));
  for (const p of config.pumps) {
    for (const s of p.sensors) {
      const r = at(s.table);
      let ch = r.channels.find((c) => c.channel === s.channel);
      if (!ch) {
        ch = { channel: s.channel, pumps: [] };
        r.channels.push(ch);
      }
      if (!ch.pumps.includes(p.id)) ch.pumps.push(p.id);
      if (!r.readers.includes(p.id)) r.readers.push(p.id);
    }
  }
  for (const l of config.logbooks) {
    for (const s of l.streams) {
      const r = at(s.table);
      r.logbook ??= { id: l.id, channel: s.channel };
      if (!r.readers.includes(l.id)) r.readers.push(l.id);
    }
  }
  return routes;
}
