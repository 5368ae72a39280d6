import type { Config } from '../../config/env.js';
import { selectingEnv } from '../../config/wiring.js';

/**
 * One channel of the wiring, checked once however many readers it has: a table shared by both pumps is
 * one table, one trigger and one channel.
 */
export interface Channel {
  channel: string;
  table: string;
  kind: 'sensor' | 'logbook';
  /** The ids of the pumps (or the logbook) that read it, in the order the wiring names them. */
  readers: string[];
}

/** The distinct channels of the pumps' sensors and the logbooks' streams, in the order they are listed. */
export function channelsOf(config: Pick<Config, 'pumps' | 'logbooks'>): Channel[] {
  const byChannel = new Map<string, Channel>();
  const add = (channel: string, table: string, kind: Channel['kind'], reader: string) => {
    const c = byChannel.get(channel) ?? { channel, table, kind, readers: [] };
    if (!c.readers.includes(reader)) c.readers.push(reader);
    byChannel.set(channel, c);
  };
  for (const p of config.pumps) for (const s of p.sensors) add(s.channel, s.table, 'sensor', p.id);
  for (const l of config.logbooks) for (const s of l.streams) add(s.channel, s.table, 'logbook', l.id);
  return [...byChannel.values()];
}

/** Names a channel's check: the kind, then its readers and the channel or table (`trigger A,B/canal_x`). */
export function label(check: string, ch: Channel, what: string): string {
  return `${check} ${ch.readers.join(',')}/${what}`;
}

/** The migrate command for this wiring, ready to paste: `PUMPS_PROFILE=plant-2026-03 pump-monitor migrate`. */
export function migrateCommand(config: Pick<Config, 'wiring'>): string {
  return `${selectingEnv(config.wiring)}pump-monitor migrate`;
}
