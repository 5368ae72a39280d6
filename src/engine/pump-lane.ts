import { EventEmitter } from 'node:events';
import type { CircuitBreakerPolicy } from 'cockatiel';
import type pg from 'pg';
import type { Logger } from 'pino';
import { type AddResult, Assembler, type AssemblerOptions } from '../assembler/assembler.js';
import type { PumpConfig } from '../config/env.js';
import type { BackendClient } from '../delivery/backend-client.js';
import type { OutboxRecorder } from '../delivery/outbox-recorder.js';
import type { RouteGuard } from '../delivery/policy.js';
import { type SendResult, VectorSender } from '../delivery/vector-sender.js';
import type { CheckpointKeeper } from '../ledger/checkpoint-keeper.js';
import type { DroppedGroup, Vector } from '../model/groups.js';
import type { Member, Reading } from '../model/reading.js';
import type { DeadLetter } from '../store/dead-letters.js';
import type { OutboxGroup, OutboxRow } from '../store/outbox.js';
import type { Clock } from '../util/clock.js';

export interface PumpLaneEvents {
  /** A resolved group reached the outbox: stored (`true`) or recognised as one already there (`false`). */
  vector: [v: Vector, stored: boolean];
  /** A group below its threshold: recorded as dropped (`stored`), or part of one already in the outbox. */
  dropped: [d: DroppedGroup, stored: boolean];
  /** The backend answered a vector: taken, or rejected and kept as a dead letter. */
  sent: [row: OutboxRow, result: SendResult, latencyMs: number | undefined];
}

export interface PumpLaneOptions {
  pump: PumpConfig;
  assembler: AssemblerOptions;
  clock: Clock;
  pool: pg.Pool;
  recorder: OutboxRecorder;
  ledger: CheckpointKeeper;
  backend: { client: BackendClient; breaker: CircuitBreakerPolicy; route?: RouteGuard };
  retryBaseMs: number;
  retryMaxMs: number;
  /** Vectors sent before their delivery records are written (VECTOR_WINDOW). */
  vectorWindow?: number;
  /** Where a rejected vector's dead letter is announced. */
  deadLetters: { stored(letter: DeadLetter): void };
  logger: Logger;
}

/**
 * One pump's way from readings to its backend: its assembler, and, while this replica owns the pump, the
 * sender of its outbox. Owns both, and the arrival times that measure delivery latency. Writes groups only
 * through the shared OutboxRecorder and settles their rows in its own readers' ledger (this pump's, per
 * table) once stored; never touches the
 * per-sensor posts, the leases or another pump.
 */
export class PumpLane extends EventEmitter<PumpLaneEvents> {
  private assembler: Assembler;
  private sender: VectorSender | undefined;
  /** Idempotency key → when the group's first reading arrived, until its vector is answered. */
  private readonly firstSeen = new Map<string, number>();

  constructor(private readonly o: PumpLaneOptions) {
    super();
    this.assembler = this.newAssembler();
  }

  get pump(): PumpConfig {
    return this.o.pump;
  }

  get openGroups(): number {
    return this.assembler.openGroups;
  }

  /**
   * Backpressure for catch-up: above 1 when more than half of MAX_OPEN_GROUPS are settling. Groups below
   * the threshold do not count: only expiry closes them, and the assembler's cap bounds them.
   */
  load(): number {
    return this.assembler.settlingGroups / (this.o.assembler.maxOpenGroups / 2);
  }

  view(limit: number) {
    return this.assembler.view(limit);
  }

  add(r: Reading): AddResult {
    return this.assembler.add(r);
  }

  /**
   * `missing`: rows of the pump may still be unread: no group closes early. `held`: its readers wait for a
   * catch-up: no group expires either (`Assembler.tick`).
   */
  tick(missing = false, held = false): void {
    this.assembler.tick(missing || held, held);
  }

  /** Forgets open groups: another replica owned the pump meanwhile, so its checkpoints are the truth. */
  reset(): void {
    this.assembler = this.newAssembler();
  }

  /** This replica owns the pump: send its outbox. */
  take(): void {
    if (this.sender) return;
    const { o } = this;
    this.sender = new VectorSender({
      pump: o.pump,
      pool: o.pool,
      client: o.backend.client,
      breaker: o.backend.breaker,
      ...(o.backend.route ? { route: o.backend.route } : {}),
      retryBaseMs: o.retryBaseMs,
      retryMaxMs: o.retryMaxMs,
      logger: o.logger,
      deadLetters: o.deadLetters,
      onResult: (row, result) => this.answered(row, result),
      recordSent: (sent) => o.recorder.recordSent(sent),
      ...(o.vectorWindow !== undefined ? { window: o.vectorWindow } : {}),
    });
    this.sender.start();
  }

  /**
   * Stops sending after the vector in flight, whose answer and record it waits for (up to `graceMs`):
   * aborting a request the backend may already have taken would make the next owner send it again.
   */
  async leave(graceMs: number): Promise<void> {
    const sender = this.sender;
    this.sender = undefined;
    await sender?.halt(graceMs);
  }

  /** A graceful stop: sends what is pending until `deadline`, then stops. */
  async drain(deadline: AbortSignal): Promise<void> {
    await this.sender?.stop({ drainUntil: deadline });
  }

  abort(): Promise<void> {
    return this.drain(AbortSignal.abort());
  }

  private newAssembler(): Assembler {
    return new Assembler(this.o.pump, this.o.assembler, this.o.clock, {
      vector: (v) => this.resolved(v),
      dropped: (d) => this.dropped(d),
    });
  }

  private resolved(v: Vector): void {
    // Per vector: debug. The pump's summary line counts them at info (observe.ts).
    if (v.filled.length > 0 || v.omitted.length > 0) {
      this.o.logger.debug(
        {
          tiempo_sensor: v.tiempo,
          present: v.present,
          missing: [...v.filled.map((f) => f.field), ...v.omitted],
          filled: v.filled.map((f) => `${f.field}=${f.value} (${f.from})`),
        },
        'partial vector completed',
      );
    }
    const group = this.outboxGroup(v.tiempo, 'pending', v.values, v.members, v.omitted);
    group.filled = v.filled.map((f) => `${f.field}:${f.from}`);
    void this.o.recorder
      .record(group)
      .then(({ key, row }) => {
        this.settle(v.members);
        if (row) {
          this.firstSeen.set(key, v.firstReceivedAt);
          if (this.firstSeen.size > 10_000)
            this.firstSeen.delete(this.firstSeen.keys().next().value as string);
          this.sender?.offer([row]);
        } else {
          this.o.logger.debug(
            { tiempo_sensor: v.tiempo },
            'group already in the outbox (rebuilt after a restart, catch-up overlap or takeover); not sent again',
          );
        }
        this.emit('vector', v, row !== undefined);
      })
      .catch(this.failed);
  }

  private dropped(d: DroppedGroup): void {
    void this.o.recorder
      .record(this.outboxGroup(d.tiempo, 'dropped', d.values, d.members, d.missing))
      .then(({ row }) => {
        this.settle(d.members);
        if (row) {
          this.o.logger.debug(
            { tiempo_sensor: d.tiempo, present: Object.keys(d.values).length, missing: d.missing },
            `group ${d.reason} below what can be sent; dropped`,
          );
        } else {
          // Part of a group already in the outbox, read again (a checkpoint held short of its last rows).
          this.o.logger.debug(
            { tiempo_sensor: d.tiempo, present: Object.keys(d.values).length },
            'rows of a group already in the outbox, read again; not recorded twice',
          );
        }
        this.emit('dropped', d, row !== undefined);
      })
      .catch(this.failed);
  }

  /** What runs after a group is stored must never become an unhandled rejection that ends the process. */
  private readonly failed = (err: unknown) =>
    this.o.logger.error({ err }, 'handling a stored group failed; the engine goes on');

  private outboxGroup(
    tiempo: string,
    status: OutboxGroup['status'],
    body: Record<string, number>,
    members: Member[],
    missing: string[],
  ): OutboxGroup {
    const numbers = members.map((m) => this.o.ledger.member(this.o.pump.id, m.table, m.id));
    return { pump: this.o.pump.id, tiempo, status, body, filled: [], missing, members: numbers };
  }

  private settle(members: Member[]): void {
    for (const m of members) m.ticket?.settle('group');
  }

  private answered(row: OutboxRow, result: SendResult): void {
    const started = this.firstSeen.get(row.key);
    this.firstSeen.delete(row.key);
    this.emit('sent', row, result, started === undefined ? undefined : this.o.clock.now() - started);
  }
}
