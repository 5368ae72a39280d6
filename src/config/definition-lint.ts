import type { Definition, LogbookDefinition, PumpDefinition, SensorDefinition } from './definition-schema.js';

/**
 * What definitions cannot mean: the checks of one file (a pump's sensors, fields and health levels; a
 * logbook's streams) and the checks across files. Errors are thrown, one line naming the file; warnings
 * are returned.
 */

export function problem(source: string, message: string): Error {
  return new Error(`pump definition ${source}: ${message}`);
}

/** What one pump's file cannot mean: errors, never warnings. */
export function lintPump(p: PumpDefinition, source: string): void {
  const byChannel = new Map<string, SensorDefinition>();
  const byTable = new Map<string, SensorDefinition>();
  const inVector = new Map<string, boolean>();
  for (const s of p.sensors) {
    const sameChannel = byChannel.get(s.channel);
    if (sameChannel) {
      const what =
        sameChannel.field !== s.field || sameChannel.endpoint !== s.endpoint
          ? `for ${describeSensor(sameChannel)} and for ${describeSensor(s)}`
          : 'twice with the same field and endpoint';
      throw problem(source, `pump ${p.id} lists channel ${s.channel} ${what}; list each channel once`);
    }
    byChannel.set(s.channel, s);
    const sameTable = byTable.get(s.table);
    if (sameTable) {
      throw problem(
        source,
        `pump ${p.id} reads table ${s.table} on two channels (${sameTable.channel}, ${s.channel}); ` +
          'one row would feed two of its sensors',
      );
    }
    byTable.set(s.table, s);
    const seen = inVector.get(s.field);
    if (seen !== undefined && seen !== s.inVector) {
      throw problem(
        source,
        `pump ${p.id} field ${s.field} is inVector on one sensor and not on another; a field is in the vector or it is not`,
      );
    }
    inVector.set(s.field, s.inVector);
  }
  if (p.vectorFields.length === 0) throw problem(source, `pump ${p.id} has no sensor with inVector true`);
  lintHealth(p, source);
  if (p.minFields > p.vectorFields.length) {
    throw problem(
      source,
      `pump ${p.id} minFields ${p.minFields} exceeds its ${p.vectorFields.length} vector fields`,
    );
  }
  for (const [key, map] of [
    ['defaults', p.defaults],
    ['optionalFields', p.optionalFields],
  ] as const) {
    for (const f of Object.keys(map)) {
      if (!p.vectorFields.includes(f)) {
        const why = inVector.get(f) === false ? 'a field with inVector false' : 'not a field of its sensors';
        throw problem(source, `pump ${p.id} ${key} names ${f}, ${why}; it must name a vector field`);
      }
    }
  }
}

/** The levels must leave room for their recovery margin: a warning below its alarm, both above the margin. */
function lintHealth(p: PumpDefinition, source: string): void {
  const { warning, alarm, recovery } = p.health;
  if (!(warning < alarm)) {
    throw problem(source, `pump ${p.id} health.warning ${warning} must be below health.alarm ${alarm}`);
  }
  if (recovery > warning) {
    throw problem(
      source,
      `pump ${p.id} health.recovery ${recovery} exceeds health.warning ${warning}; a warning could never clear`,
    );
  }
}

function describeSensor(s: SensorDefinition): string {
  return `field ${s.field} → ${s.endpoint}`;
}

export function lintLogbook(l: LogbookDefinition, source: string): void {
  const channels = new Set<string>();
  const tablas = new Set<string>();
  const tables = new Set<string>();
  for (const s of l.streams) {
    if (channels.has(s.channel)) throw problem(source, `logbook ${l.id} lists channel ${s.channel} twice`);
    if (tablas.has(s.tabla)) throw problem(source, `logbook ${l.id} lists tabla "${s.tabla}" twice`);
    if (tables.has(s.table)) throw problem(source, `logbook ${l.id} lists table ${s.table} twice`);
    channels.add(s.channel);
    tablas.add(s.tabla);
    tables.add(s.table);
  }
}

export interface Located {
  definition: Definition;
  source: string;
}

interface Use {
  source: string;
  owner: string;
  kind: Definition['kind'];
  table: string;
}

/**
 * The checks across files. Errors (thrown): two definitions with one id; a channel that fires for two
 * tables; a table notified on two channels; a logbook table or channel that is also a sensor's.
 * Warnings (returned): an endpoint that receives rows of two tables, where id_sensor no longer names one
 * row; a channel no pump's vector uses (its readings are only posted on their own).
 */
export function lintDefinitions(located: Located[]): string[] {
  const ids = new Map<string, string>();
  const channelUse = new Map<string, Use>();
  const tableUse = new Map<string, { source: string; owner: string; channel: string }>();
  for (const { definition: d, source } of located) {
    const other = ids.get(d.id.toLowerCase());
    if (other !== undefined) {
      throw problem(source, `id ${d.id} is already defined by ${other} (ids are compared ignoring case)`);
    }
    ids.set(d.id.toLowerCase(), source);
    const pairs =
      d.kind === 'pump'
        ? d.sensors.map((s) => ({ channel: s.channel, table: s.table }))
        : d.streams.map((s) => ({ channel: s.channel, table: s.table }));
    const kind = d.kind;
    const owner = `${kind} ${d.id}`;
    for (const { channel, table } of pairs) {
      const byChannel = channelUse.get(channel);
      if (byChannel && byChannel.table !== table) {
        throw problem(
          source,
          `channel ${channel} fires for table ${table} in ${owner} but for table ${byChannel.table} in ${byChannel.owner} (${byChannel.source}); a channel names one table`,
        );
      }
      const byTable = tableUse.get(table);
      if (byTable && byTable.channel !== channel) {
        throw problem(
          source,
          `table ${table} notifies channel ${channel} in ${owner} but channel ${byTable.channel} in ${byTable.owner} (${byTable.source}); a table notifies one channel`,
        );
      }
      if (byChannel && byChannel.kind !== kind) {
        throw problem(
          source,
          `table ${table} (channel ${channel}) is both a sensor table and a logbook table (${owner}; ${byChannel.owner} in ${byChannel.source})`,
        );
      }
      channelUse.set(channel, { source, owner, kind, table });
      tableUse.set(table, { source, owner, channel });
    }
  }
  return [...endpointWarnings(located), ...vectorlessChannelWarnings(located)];
}

function endpointWarnings(located: Located[]): string[] {
  const byPath = new Map<string, { sources: Set<string>; tables: string[]; who: string[] }>();
  for (const { definition: p, source } of located) {
    if (p.kind !== 'pump') continue;
    for (const s of p.sensors) {
      // Two pumps reach one URL only with the same base variable and path prefix.
      const key = `${p.baseUrlEnv} ${p.pathPrefix}${s.endpoint}`;
      const entry = byPath.get(key) ?? { sources: new Set(), tables: [], who: [] };
      entry.sources.add(source);
      if (!entry.tables.includes(s.table)) entry.tables.push(s.table);
      entry.who.push(`${p.id} ${s.channel}`);
      byPath.set(key, entry);
    }
  }
  const warnings: string[] = [];
  for (const [key, e] of byPath) {
    if (e.tables.length < 2) continue;
    const [env, path] = key.split(' ');
    warnings.push(
      `pump definition ${[...e.sources].join(', ')}: ${path} (on ${env}) receives rows of ${e.tables.length} tables ` +
        `(${e.tables.join(', ')}, from ${e.who.join(', ')}), so its id_sensor no longer names one row`,
    );
  }
  return warnings;
}

function vectorlessChannelWarnings(located: Located[]): string[] {
  const byChannel = new Map<string, { sources: Set<string>; inAnyVector: boolean; who: string[] }>();
  for (const { definition: p, source } of located) {
    if (p.kind !== 'pump') continue;
    for (const s of p.sensors) {
      const entry = byChannel.get(s.channel) ?? { sources: new Set(), inAnyVector: false, who: [] };
      entry.sources.add(source);
      entry.inAnyVector ||= s.inVector;
      entry.who.push(`${p.id} ${s.field} → ${p.pathPrefix}${s.endpoint}`);
      byChannel.set(s.channel, entry);
    }
  }
  const warnings: string[] = [];
  for (const [channel, e] of byChannel) {
    if (e.inAnyVector) continue;
    warnings.push(
      `pump definition ${[...e.sources].join(', ')}: channel ${channel} feeds no pump's vector; ` +
        `its readings are only posted on their own (${e.who.join('; ')})`,
    );
  }
  return warnings;
}
