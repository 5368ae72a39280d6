import { EventEmitter } from 'node:events';
import type { Logger } from 'pino';
import type { AddResult } from '../assembler/assembler.js';
import type { Reading } from '../model/reading.js';
import type { DeadLetter } from '../store/dead-letters.js';
import type { Clock } from '../util/clock.js';
import type { Decoder, Rejection } from './decode.js';

export interface IntakeEvents {
  /**
   * A new reading, handed to its pump's lane (and to the per-sensor posts); `posted`: a sensor outside
   * the vector (inVector false), only posted.
   */
  reading: [r: Reading, added: AddResult | 'posted'];
  duplicate: [r: Reading];
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
  /** Registers a row for one reader (pump, table) with its parts to settle; false for a duplicate. */
  begin: (pump: string, table: string, id: number, parts: number) => boolean;
  /** Settles one part of a reader's row (a late reading's group part). */
  settle: (pump: string, table: string, id: number) => void;
  /** The reading's pump lane. */
  lane: (pump: string) => { add(r: Reading): AddResult };
  /** Per-sensor posts, or undefined when SENSOR_POSTS is off. */
  posts: { submit(r: Reading): void } | undefined;
  deadLetter: (letter: DeadLetter) => void;
}

/**
 * The door of the notification path: every payload, from a NOTIFY or a catch-up row, comes in here.
 * Decodes it once into one reading per pump that lists the channel (a shared table fans out), drops the
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
   * One payload on a channel. `postSettled`: a catch-up row whose per-sensor post is on record already, so
   * only its group is rebuilt. `pump`: only that pump's reading (a catch-up row read for one reader).
   */
  accept(
    channel: string,
    payload: string,
    origin: Reading['origin'] = 'notify',
    postSettled = false,
    pump?: string,
  ): void {
    try {
      this.handle(channel, payload, origin, postSettled, pump);
    } catch (err) {
      const pump = this.o.decoder.route(channel)?.pump;
      this.o.logger.error({ err, channel, payload: payload.slice(0, 200) }, 'notification handling failed');
      this.o.deadLetter({
        kind: 'notification',
        channel,
        payload,
        reason: `internal_error: ${(err as Error).message}`,
      });
      this.emit('failed', channel, pump, err as Error);
    }
  }

  private handle(
    channel: string,
    payload: string,
    origin: Reading['origin'],
    postSettled: boolean,
    only: string | undefined,
  ): void {
    const { o } = this;
    const all = o.decoder.routesOf(channel);
    const routes = only === undefined ? all : all.filter((x) => x.pump === only);
    // A hot standby for these pumps: other replicas own them. Only catch-up after a takeover reads these rows.
    if (routes.length > 0 && !routes.some((x) => o.owns(x.pump))) return;
    const decoded = o.decoder.decode(channel, payload, o.clock.now(), origin, only);
    if (!decoded.ok) {
      const owned = routes.find((x) => o.owns(x.pump));
      this.rejected(decoded.rejection, owned?.pump ?? routes[0]?.pump);
      return;
    }
    for (const r of decoded.readings) if (o.owns(r.pump)) this.one(r, postSettled);
  }

  /** One pump's reading of the row: begun in its reader's ledger, to its lane if inVector, to the posts. */
  private one(r: Reading, postSettled: boolean): void {
    const { o } = this;
    const posting = o.posts !== undefined && !postSettled;
    const grouped = r.sensor.inVector;
    const parts = (grouped ? 1 : 0) + (posting ? 1 : 0);
    if (!o.begin(r.pump, r.sensor.table, r.id, Math.max(parts, 1))) {
      this.emit('duplicate', r);
      return;
    }
    let added: AddResult | 'posted' = 'posted';
    if (grouped) {
      added = o.lane(r.pump).add(r);
      if (added === 'late') {
        o.logger.info(
          { pump: r.pump, table: r.sensor.table, id: r.id, tiempo_sensor: r.tiempo },
          'late reading: its timestamp was resolved moments ago; posted on its own, not merged into the vector',
        );
        o.settle(r.pump, r.sensor.table, r.id);
      } else if (added === 'conflicting') {
        o.logger.warn(
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
    // Neither grouped nor posted (SENSOR_POSTS off): nothing is left to do with the row.
    if (parts === 0) o.settle(r.pump, r.sensor.table, r.id);
    this.emit('reading', r, added);
    if (posting) o.posts?.submit(r);
  }

  private rejected(rej: Rejection, routed: string | undefined): void {
    const pump = rej.pump ?? routed;
    this.o.logger.warn(
      { pump, channel: rej.channel, reason: rej.reason, payload: rej.payload.slice(0, 200) },
      `invalid notification on ${rej.channel}: ${rej.detail}`,
    );
    // A rejected payload never enters the (table, id) ledger: a forged or garbled payload naming a row id
    // must not shadow the real row's notification. Not being in flight, it does not hold the checkpoint.
    this.o.deadLetter({
      kind: 'notification',
      pump,
      channel: rej.channel,
      payload: rej.payload,
      reason: `${rej.reason}: ${rej.detail}`,
    });
    this.emit('rejected', rej, pump);
  }
}
