import { EventEmitter } from 'node:events';
import type { Logger } from 'pino';
import type { AddResult } from '../assembler/assembler.js';
import type { Part, Reading, Ticket } from '../model/reading.js';
import type { DeadLetter } from '../store/dead-letters.js';
import type { Clock } from '../util/clock.js';
import { claimMatches, type Decoder, type Rejection, type RowFields } from './decode.js';
import { isProbe } from './probe.js';
import type { RowFetcher } from './row-fetcher.js';

export interface IntakeEvents {
  /**
   * A new reading, handed to its pump's lane (and to the per-sensor posts); `posted`: a sensor outside
   * the vector (inVector false), only posted.
   */
  reading: [r: Reading, added: AddResult | 'posted'];
  duplicate: [r: Reading];
  /** A diagnose probe (source/probe.ts): no row, no dead letter. */
  probe: [channel: string];
  /** A payload that is not a reading: counted, logged and kept as a dead letter. */
  rejected: [rej: Rejection, pump: string | undefined];
  /** An unexpected error handling one payload; the loop goes on. */
  failed: [channel: string, pump: string | undefined, err: Error];
}

export interface IntakeOptions {
  decoder: Decoder;
  clock: Clock;
  logger: Logger;
  /** Whether this replica owns the pump now: a hot standby ignores the others' readings. */
  owns: (pump: string) => boolean;
  /**
   * The readers' ledger (CheckpointKeeper): a row begun there gets a ticket whose parts the lane, the
   * posts and the dead-letter sink settle; claims hold a checkpoint while their rows are read; holds keep
   * it back until a catch-up.
   */
  ledger: {
    begin(pump: string, table: string, id: number, parts: readonly Part[]): Ticket | undefined;
    passed(pump: string, table: string, id: number): boolean;
    claim(pump: string, table: string, id: number): void;
    unclaim(pump: string, table: string, id: number): void;
    holdFrom(pump: string, table: string, id: number): void;
    holdAfterSaved(pump: string, table: string): void;
  };
  /** Reads the rows notifications name. */
  rows: RowFetcher;
  /** A row may have been missed (its notification named none we could read): a catch-up is needed. */
  missed: () => void;
  /** The reading's pump lane. */
  lane: (pump: string) => { add(r: Reading): AddResult };
  /** Per-sensor posts, or undefined when SENSOR_POSTS is off. */
  posts: { submit(r: Reading): void } | undefined;
  /** Writes a dead letter, then calls `settled` (when given) once it is on record. */
  deadLetter: (letter: DeadLetter, settled?: () => void) => void;
}

const BOTH: readonly Part[] = ['group', 'post'];
const GROUP: readonly Part[] = ['group'];
const POST: readonly Part[] = ['post'];
const NONE: readonly Part[] = [];

/**
 * The door of the sensor path: every notification and every catch-up row comes in here. A notification is
 * only a claim that its table holds a row with its id: the row is read (RowFetcher, batched) and the
 * reading is made of the row. A row is decoded once into one reading per pump that lists the channel (a shared table fans out), drops the
 * readings of pumps another replica owns, deduplicates each by its reader (pump, table) and id, hands the
 * inVector ones to their pump's lane and every one to the per-sensor posts. Bad input becomes a counted,
 * logged dead letter; nothing here waits or throws. Owns no state: the ledger, the lanes and the posts own
 * theirs.
 */
export class Intake extends EventEmitter<IntakeEvents> {
  constructor(private readonly o: IntakeOptions) {
    super();
  }

  /**
   * A notification: a claim that the channel's table holds a row with this id. The row is read, and the
   * reading made of it, never of the payload. A payload that names no row, or another row than the one
   * the table holds, is a counted dead letter.
   */
  notified(channel: string, payload: string): void {
    try {
      this.claimed(channel, payload);
    } catch (err) {
      this.failed(channel, payload, err as Error);
    }
  }

  /**
   * A row read from its table (catch-up) for one reader (`pump`). `postSettled`: its per-sensor post for
   * that pump is on record already, so only its group is rebuilt.
   */
  row(channel: string, row: RowFields, origin: Reading['origin'], postSettled = false, pump?: string): void {
    try {
      this.fromRow(channel, row, origin, postSettled, pump);
    } catch (err) {
      this.failed(channel, JSON.stringify(row), err as Error);
    }
  }

  /**
   * A batch of one table's rows read for one reader (`pump`), in id order: the catch-up's hand-over. Each is
   * begun in the ledger, grouped and queued for its post before this returns, so nothing of the batch is
   * left between the read and the ledger when the round that read it finishes. A row that fails is a dead
   * letter of its own; the rest go on.
   */
  rows(channel: string, rows: readonly (RowFields & { posted: boolean })[], pump: string): void {
    for (const row of rows) {
      try {
        this.fromRow(channel, row, 'catchup', row.posted, pump);
      } catch (err) {
        this.failed(channel, JSON.stringify(row), err as Error);
      }
    }
  }

  private failed(channel: string, payload: string, err: Error): void {
    const pump = this.o.decoder.route(channel)?.pump;
    this.o.logger.error({ err, channel, payload: payload.slice(0, 200) }, 'notification handling failed');
    this.o.deadLetter({
      kind: 'notification',
      channel,
      payload,
      reason: `internal_error: ${err.message}`,
    });
    this.emit('failed', channel, pump, err);
  }

  private claimed(channel: string, payload: string): void {
    const { o } = this;
    const routes = o.decoder.routesOf(channel).filter((x) => o.owns(x.pump));
    // A hot standby for these pumps: other replicas own them. Only catch-up after a takeover reads these rows.
    if (routes.length === 0 && o.decoder.routesOf(channel).length > 0) return;
    const claim = o.decoder.claim(channel, payload);
    if (!claim.ok) {
      // A diagnose probe names no row: counted as a probe, not as invalid; held for catch-up like the rest.
      if (isProbe(payload)) this.emit('probe', channel);
      else this.rejected(claim.rejection, routes[0]?.pump);
      // It names no row we can read, yet a row may stand behind it (a truncated payload): nothing above the
      // saved checkpoint is passed until a catch-up has read the table.
      for (const x of routes) o.ledger.holdAfterSaved(x.pump, x.sensor.table);
      if (routes.length > 0) o.missed();
      return;
    }
    const table = (routes[0] as (typeof routes)[number]).sensor.table;
    const id = claim.id;
    for (const x of routes) o.ledger.claim(x.pump, x.sensor.table, id);
    const release = () => {
      for (const x of routes) o.ledger.unclaim(x.pump, x.sensor.table, id);
    };
    o.rows.fetch({
      table,
      shape: 'sensor',
      id,
      found: (row) => {
        release();
        if (!row) {
          this.rejected(
            {
              reason: 'no_such_row',
              detail: `table ${table} holds no row with id ${id}`,
              channel,
              payload,
            },
            routes[0]?.pump,
          );
          return;
        }
        const fields: RowFields = { id, valor: row.valor, tiempo: row.text };
        if (!claimMatches(claim, fields)) {
          this.rejected(
            {
              reason: 'payload_mismatch',
              detail: `row ${id} of ${table} holds valor ${String(row.valor)} and tiempo_sensor ${JSON.stringify(row.text)}; the row's are used`,
              channel,
              payload,
            },
            routes[0]?.pump,
          );
        }
        this.row(channel, fields, 'notify');
      },
      failed: () => {
        // Not read: held from this id until a catch-up has read the table.
        for (const x of routes) o.ledger.holdFrom(x.pump, x.sensor.table, id);
        release();
        o.missed();
      },
    });
  }

  private fromRow(
    channel: string,
    row: RowFields,
    origin: Reading['origin'],
    postSettled: boolean,
    only: string | undefined,
  ): void {
    const { o } = this;
    const all = o.decoder.routesOf(channel);
    const routes = only === undefined ? all : all.filter((x) => x.pump === only);
    if (routes.length > 0 && !routes.some((x) => o.owns(x.pump))) return;
    const decoded = o.decoder.fields(channel, row.id, row.valor, row.tiempo, o.clock.now(), origin, only);
    if (!decoded.ok) {
      // A real row that is not a reading: settled once its dead letter is on record, and deduplicated
      // like any row, so a catch-up that reads it again does not write a second letter.
      const begun: { pump: string; ticket: Ticket }[] = [];
      for (const x of routes) {
        if (!o.owns(x.pump) || (origin === 'notify' && o.ledger.passed(x.pump, x.sensor.table, row.id)))
          continue;
        const ticket = o.ledger.begin(x.pump, x.sensor.table, row.id, ['letter']);
        if (ticket) begun.push({ pump: x.pump, ticket });
      }
      if (begun.length === 0 && routes.length > 0) return;
      this.rejected(decoded.rejection, begun[0]?.pump ?? routes[0]?.pump, () => {
        for (const b of begun) b.ticket.settle('letter');
      });
      return;
    }
    for (const r of decoded.readings) if (o.owns(r.pump)) this.one(r, postSettled);
  }

  /** One pump's reading of the row: begun in its reader's ledger, to its lane if inVector, to the posts. */
  private one(r: Reading, postSettled: boolean): void {
    const { o } = this;
    const posting = o.posts !== undefined && !postSettled;
    const grouped = r.sensor.inVector;
    // A notification of a row at or below the saved checkpoint repeats a settled row: catch-up never reads
    // there, and a replayed or forged notification must not send it again. Neither grouped nor posted
    // (SENSOR_POSTS off): begun with no part, settled at once.
    const passed = r.origin === 'notify' && o.ledger.passed(r.pump, r.sensor.table, r.id);
    const ticket = passed
      ? undefined
      : o.ledger.begin(
          r.pump,
          r.sensor.table,
          r.id,
          grouped ? (posting ? BOTH : GROUP) : posting ? POST : NONE,
        );
    if (!ticket) {
      this.emit('duplicate', r);
      return;
    }
    r.ticket = ticket;
    let added: AddResult | 'posted' = 'posted';
    if (grouped) {
      added = o.lane(r.pump).add(r);
      // Per reading: debug. The pump's summary line counts them at info (observe.ts).
      if (added === 'late') {
        o.logger.debug(
          { pump: r.pump, table: r.sensor.table, id: r.id, tiempo_sensor: r.tiempo },
          'late reading: its timestamp was resolved moments ago; posted on its own, not merged into the vector',
        );
        ticket.settle('group');
      } else if (added === 'conflicting') {
        o.logger.debug(
          {
            pump: r.pump,
            field: r.sensor.field,
            table: r.sensor.table,
            id: r.id,
            tiempo_sensor: r.tiempo,
            valor: r.valor,
          },
          'conflicting value: another table gave this field for this timestamp first; the first reading keeps it',
        );
      }
    }
    this.emit('reading', r, added);
    if (posting) o.posts?.submit(r);
  }

  private rejected(rej: Rejection, routed: string | undefined, settled?: () => void): void {
    const pump = rej.pump ?? routed;
    this.o.logger.warn(
      { pump, channel: rej.channel, reason: rej.reason, payload: rej.payload.slice(0, 200) },
      `invalid notification on ${rej.channel}: ${rej.detail}`,
    );
    // A rejected payload never enters the (table, id) ledger: a forged or garbled payload naming a row id
    // must not shadow the real row. Only a real row's rejection is begun (and settled with its letter).
    this.o.deadLetter(
      {
        kind: 'notification',
        pump,
        channel: rej.channel,
        payload: rej.payload,
        reason: `${rej.reason}: ${rej.detail}`,
      },
      settled,
    );
    this.emit('rejected', rej, pump);
  }
}
