import type pg from 'pg';
import type { LogbookStream } from '../../config/pumps.js';
import { quoteIdent } from '../../store/db.js';

/** What the simulator writes into the sensor and logbook tables, and the late rows waiting on their timers. */

export interface Row {
  table: string;
  value: number;
}

/**
 * One statement, hence one transaction and one round trip, for all of a timestamp's rows:
 * each INSERT is a data-modifying CTE, which PostgreSQL always runs to completion.
 */
export function insertStatement(tiempo: string, rows: Row[]): pg.QueryConfig {
  const values = [tiempo, ...rows.map((r) => r.value)];
  const inserts = rows.map((r, k) => insertSql(r.table, k + 2));
  if (inserts.length === 1) return { text: inserts[0] ?? '', values };
  const ctes = inserts.map((sql, k) => `w${k} AS (${sql})`);
  return { text: `WITH ${ctes.join(',\n')}\nSELECT ${rows.length} AS inserted`, values };
}

function insertSql(table: string, valueParam: number): string {
  return `INSERT INTO ${quoteIdent(table)} (tiempo_sensor, valor_sensor) VALUES ($1, $${valueParam})`;
}

/** Rows waiting on their own timer; flush() writes the waiting ones at once and awaits them all. */
export class LateRows {
  private readonly waiting = new Map<NodeJS.Timeout, () => Promise<void>>();
  private readonly inFlight = new Set<Promise<void>>();

  schedule(delayMs: number, write: () => Promise<void>): void {
    const timer = setTimeout(() => {
      this.waiting.delete(timer);
      this.start(write);
    }, delayMs);
    this.waiting.set(timer, write);
  }

  async flush(): Promise<void> {
    for (const [timer, write] of this.waiting) {
      clearTimeout(timer);
      this.start(write);
    }
    this.waiting.clear();
    while (this.inFlight.size > 0) await Promise.all(this.inFlight);
  }

  /** `write` never rejects: it reports its own errors. */
  private start(write: () => Promise<void>): void {
    const p = write();
    this.inFlight.add(p);
    void p.then(() => this.inFlight.delete(p));
  }
}

/** Inserts one operator entry into its logbook table; returns the row's id. */
export async function insertLogbookEntry(
  pool: pg.Pool,
  stream: LogbookStream,
  at: Date,
  text: string,
): Promise<number> {
  const iso = at.toISOString();
  const { rows } = await pool.query<{ id: number }>(
    `INSERT INTO ${quoteIdent(stream.table)}
       (tiempo_ejecucion, bitacora, bomba_activa, "Fecha", "Hora", "Observaciones")
     VALUES ($1, $2, $3, $4, $5, 'registro simulado') RETURNING id`,
    // The simulated clock is UTC, as the sensor timestamps are.
    [iso.slice(0, 23), text, stream.pump, iso.slice(0, 10), iso.slice(11, 16)],
  );
  return rows[0]?.id ?? 0;
}
