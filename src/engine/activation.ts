import type { Logger } from 'pino';
import type { PumpConfig } from '../config/env.js';
import type { Reader } from '../store/checkpoints.js';
import { describePgError } from '../store/db.js';
import { sleep } from '../util/clock.js';
import type { LeaseHooks } from './leases.js';
import type { LogbookLane } from './logbook-lane.js';
import type { PumpLane } from './pump-lane.js';

export interface ActivationOptions {
  pumps: PumpConfig[];
  lanes: Map<string, PumpLane>;
  /** The logbook lanes by logbook id: their leases are named by that id. */
  logbooks: Map<string, LogbookLane>;
  logger: Logger;
  /** The in-flight vector's answer is waited for at most this long on a hand-over. */
  haltGraceMs: number;
  /** Reloads readers' checkpoints from the database (another replica moved them). */
  reload: (readers: Reader[]) => Promise<void>;
  /** Holds readers' checkpoints below rows that may have been missed, until a catch-up has read them. */
  hold: (readers: Reader[]) => void;
  /** Finishes the per-sensor posts in flight, at most for `ms`. */
  postsIdle: (ms: number) => Promise<void>;
  /** Writes every pending record now: outbox, delivery records, post ledger, deferrals. */
  flushRecords: () => Promise<void>;
  /** Saves the checkpoints of these readers now. */
  saveCheckpoints: (readers: Reader[]) => Promise<void>;
  /** A pump was taken: its deferred posts and its backlog must be read. */
  taken: (pump: string) => void;
}

/**
 * Turns lease changes into awaited steps: take a pump (or a logbook), hand it over, or leave it when its
 * lease is lost.
 * Owns the set of pumps this replica serves now (`active`): the intake and the per-sensor posts ask it.
 * A hand-over finishes in order before the lock is released: the vector in flight is answered and
 * recorded, the posts in flight finish, every record is written and the checkpoints are saved, so the
 * next owner reads an outbox and checkpoints that tell the whole truth.
 */
export class Activation implements LeaseHooks {
  private readonly active = new Set<string>();
  /** Until the engine has started, the checkpoints loaded at start are the state to go on from. */
  private started = false;

  constructor(private readonly o: ActivationOptions) {}

  /** The engine has started: a lease taken from now on starts from the checkpoints another replica left. */
  markStarted(): void {
    this.started = true;
  }

  get isStarted(): boolean {
    return this.started;
  }

  /** The pumps and logbooks served now. */
  owned(): string[] {
    return [...this.active];
  }

  owns(pump: string): boolean {
    return this.active.has(pump);
  }

  /**
   * Resumed: nobody else owned the pump meanwhile, so the state in memory is still right and a catch-up
   * fills the gap. Otherwise another replica worked on it: start again from the checkpoints it left.
   */
  async acquired(pump: string, resumed: boolean): Promise<void> {
    const logbook = this.o.logbooks.get(pump);
    if (logbook) {
      if (this.started && !resumed) await this.o.reload(logbook.readers()).catch(() => {});
      else this.o.hold(logbook.readers()); // its rows were ignored while another owned it, or nobody
      this.active.add(pump);
      logbook.take();
      return;
    }
    const lane = this.lane(pump);
    if (this.started && !resumed) {
      try {
        await this.o.reload(this.readers(pump));
      } catch (err) {
        this.o.logger.warn(
          { pump, err: describePgError(err) },
          'loading checkpoints after a takeover failed',
        );
      }
      lane.reset();
    } else {
      // Resumed: while this replica did not own the pump, its notifications were ignored. Hold the
      // checkpoints below them until the catch-up that taking it starts has read them.
      this.o.hold(this.readers(pump));
    }
    lane.take();
    this.active.add(pump);
    this.o.taken(pump);
  }

  async releasing(pump: string): Promise<void> {
    this.active.delete(pump);
    const logbook = this.o.logbooks.get(pump);
    if (logbook) {
      await logbook.leave(5_000);
      await this.o.saveCheckpoints(logbook.readers()).catch(() => {});
      return;
    }
    await this.lane(pump).leave(this.o.haltGraceMs);
    await Promise.race([this.o.postsIdle(5_000), sleep(5_000)]);
    await this.o.flushRecords();
    await this.o.saveCheckpoints(this.readers(pump)).catch(() => {});
  }

  async lost(pump: string): Promise<void> {
    this.active.delete(pump);
    const logbook = this.o.logbooks.get(pump);
    if (logbook) {
      await logbook.leave(this.o.haltGraceMs);
      return;
    }
    await this.lane(pump).leave(this.o.haltGraceMs);
  }

  /** The readers (pump, table) of the pumps served now: the checkpoints this replica may write. */
  ownedReaders(): Reader[] {
    return [
      ...this.o.pumps.filter((p) => this.active.has(p.id)).flatMap((p) => this.readers(p.id)),
      ...[...this.o.logbooks.values()].filter((l) => this.active.has(l.id)).flatMap((l) => l.readers()),
    ];
  }

  private readers(pump: string): Reader[] {
    return this.lane(pump).pump.sensors.map((s) => ({ pump, table: s.table }));
  }

  private lane(pump: string): PumpLane {
    const lane = this.o.lanes.get(pump);
    if (!lane) throw new Error(`no lane for pump ${pump}`);
    return lane;
  }
}
