import pg from 'pg';
import type { DatabaseConfig, PumpConfig } from '../src/config/env.js';
import type { SensorDefinition } from '../src/config/pumps.js';
import { clientConfig, quoteIdent } from '../src/store/db.js';
import { now } from './stats.js';

interface Statement {
  name: string;
  text: string;
  sensors: SensorDefinition[];
}

/** One timestamp of one pump: which of its sensors report (all when `fields` is undefined). */
export interface Group {
  pump: PumpConfig;
  tiempo: string;
  fields?: string[] | undefined;
  /** Every reading's value; by default each sensor gets a value of its own. */
  valor?: number | undefined;
}

export interface Committed {
  pump: string;
  tiempo: string;
  rows: number;
  /** Right after the statement (its own transaction) returned, i.e. after COMMIT. */
  at: number;
}

/** Timestamps spaced `stepMs` apart from `baseMs`, as ISO text with milliseconds (distinct keys). */
export function tiempoOf(baseMs: number, i: number, stepMs = 1): string {
  return new Date(baseMs + i * stepMs).toISOString();
}

/**
 * Inserts a pump's timestamp the way the simulator does: one statement, hence one transaction and one
 * round trip, with one data-modifying CTE per sensor table (each fires its row's NOTIFY trigger). The
 * statements are prepared once per connection and variant.
 */
export class Inserter {
  private readonly statements = new Map<string, Statement>();
  private readonly clients: pg.Client[] = [];
  private serial = 0;

  private constructor(
    private readonly db: DatabaseConfig,
    private readonly maxStatements: number,
  ) {}

  /**
   * `maxStatements` bounds the prepared variants (pump and field set) per connection: a few for the seed
   * pumps, one per pump for the fleet.
   */
  static async connect(db: DatabaseConfig, connections: number, maxStatements = 64): Promise<Inserter> {
    const ins = new Inserter(db, maxStatements);
    for (let i = 0; i < connections; i++) {
      const c = new pg.Client(clientConfig(ins.db, 'bench-inserter'));
      c.on('error', () => {});
      await c.connect();
      ins.clients.push(c);
    }
    return ins;
  }

  get connections(): number {
    return this.clients.length;
  }

  async close(): Promise<void> {
    await Promise.all(this.clients.map((c) => c.end().catch(() => {})));
    this.clients.length = 0;
  }

  /** Inserts one group on connection `k` and returns when it is committed. */
  async insert(k: number, g: Group): Promise<Committed> {
    const client = this.clients[k % this.clients.length] as pg.Client;
    const st = this.statement(g.pump, g.fields);
    const values: (string | number)[] = [g.tiempo];
    this.serial += 1;
    for (const [j, _] of st.sensors.entries()) values.push(g.valor ?? 100 + j + (this.serial % 97) / 100);
    await client.query({ name: st.name, text: st.text, values });
    return { pump: g.pump.id, tiempo: g.tiempo, rows: st.sensors.length, at: now() };
  }

  /**
   * Inserts every group as fast as the connections allow: each connection takes the next group as soon
   * as its previous one is committed. Returns when all are committed.
   */
  async burst(
    groups: Group[],
    onCommit?: (c: Committed) => void,
  ): Promise<{ rows: number; firstAt: number }> {
    let next = 0;
    let rows = 0;
    const firstAt = now();
    const worker = async (k: number) => {
      for (let guard = 0; guard < groups.length && next < groups.length; guard++) {
        const g = groups[next] as Group;
        next += 1;
        const c = await this.insert(k, g);
        rows += c.rows;
        onCommit?.(c);
      }
    };
    await Promise.all(this.clients.map((_, k) => worker(k)));
    return { rows, firstAt };
  }

  private statement(pump: PumpConfig, fields: string[] | undefined): Statement {
    const signature = fields ? [...fields].sort().join(',') : '*';
    const cacheKey = `${pump.id}|${signature}`;
    const cached = this.statements.get(cacheKey);
    if (cached) return cached;
    if (this.statements.size >= this.maxStatements)
      throw new Error(`more than ${this.maxStatements} statement variants; the bench uses a few`);
    const sensors = fields ? pump.sensors.filter((s) => fields.includes(s.field)) : pump.sensors;
    const ctes = sensors.map(
      (s, j) =>
        `w${j} AS (INSERT INTO ${quoteIdent(s.table)} (tiempo_sensor, valor_sensor) VALUES ($1, $${j + 2}))`,
    );
    const st: Statement = {
      name: `bench-insert-${this.statements.size}`,
      text: `WITH ${ctes.join(',\n')}\nSELECT ${sensors.length} AS inserted`,
      sensors,
    };
    this.statements.set(cacheKey, st);
    return st;
  }
}
