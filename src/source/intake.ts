import { EventEmitter } from 'node:events';
import type { Logger } from 'pino';
import type { AddResult } from '../assembler/assembler.js';
import type { Reading } from '../model/reading.js';
import type { DeadLetter } from '../store/dead-letters.js';
import type { Clock } from '../util/clock.js';
import type { Decoder, Rejection } from './decode.js';

export interface IntakeEvents {
  /** A new reading, handed to its pump's lane (and to the per-sensor posts). */
  reading: [r: Reading, added: AddResult];
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
  /** Registers a row with its parts to settle; false for a duplicate. */
  begin: (table: string, id: number, parts: number) => boolean;
  /** Settles one part of a row (a late reading's group part). */
  settle: (table: string, id: number) => void;
  /** The reading's pump lane. */
  lane: (pump: string) => { add(r: Reading): AddResult };
  /** Per-sensor posts, or undefined when SENSOR_POSTS is off. */
  posts: { submit(r: Reading): void } | undefined;
  deadLetter: (letter: DeadLetter) => void;
}

/**
 * The door of the notification path: every payload, from a NOTIFY or a catch-up row, comes in here.
 * Decodes it, drops it when another replica owns the pump, deduplicates it by (table, id), and hands the
 * reading to its pump's lane and to the per-sensor posts. Bad input becomes a counted, logged dead letter;
 * nothing here waits or throws. Owns no state: the ledger, the lanes and the posts own theirs.
 */
export class Intake extends EventEmitter<IntakeEvents> {
  constructor(private readonly o: IntakeOptions) {
    super();
  }

  /**
   * One payload on a channel. `postSettled`: a catch-up row whose per-sensor post is on record already, so
   * only its group is rebuilt.
   */
  accept(channel: string, payload: string, origin: Reading['origin'] = 'notify', postSettled = false): void {
    try {
      this.handle(channel, payload, origin, postSettled);
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

  private handle(channel: string, payload: string, origin: Reading['origin'], postSettled: boolean): void {
    const { o } = this;
    const route = o.decoder.route(channel);
    // A hot standby for this pump: another replica owns it. Only catch-up after a takeover reads these rows.
    if (route && !o.owns(route.pump)) return;
    const decoded = o.decoder.decode(channel, payload, o.clock.now(), origin);
    if (!decoded.ok) {
      this.rejected(decoded.rejection, route?.pump);
      return;
    }
    const r = decoded.reading;
    const posting = o.posts !== undefined && !postSettled;
    if (!o.begin(r.sensor.table, r.id, posting ? 2 : 1)) {
      this.emit('duplicate', r);
      return;
    }
    const added = o.lane(r.pump).add(r);
    if (added === 'late') {
      o.logger.info(
        { pump: r.pump, table: r.sensor.table, id: r.id, tiempo_sensor: r.tiempo },
        'late reading: its timestamp was resolved moments ago; posted on its own, not merged into the vector',
      );
      o.settle(r.sensor.table, r.id);
    }
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
