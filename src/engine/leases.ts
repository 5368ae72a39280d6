import { createHash, randomBytes } from 'node:crypto';
import pg from 'pg';
import type { Logger } from 'pino';
import type { DatabaseConfig } from '../config/env.js';
import { describePgError, engineSessionConfig } from '../store/db.js';
import { countSessions, tryLockPump, unlockPump } from '../store/leases.js';
import { abortSession, endSession, endStaleSessions } from '../store/sessions.js';

export interface LeaseOptions {
  db: DatabaseConfig;
  pumps: string[];
  logger: Logger;
  /** Unique per process; also names this replica's sessions. */
  replicaId: string;
  queryTimeoutMs: number;
  /** How often ownership is checked and rebalanced. */
  intervalMs: number;
  /** Each step is awaited before the lease round goes on. */
  hooks: LeaseHooks;
  /**
   * A lock that comes before every pump (SOURCE=replication: the slot, which has one reader): only its
   * holder takes pumps, and it takes them all; the others stand by.
   */
  exclusive?: string;
}

/** What the replica does as ownership changes. The keeper awaits each, so a hand-over is one ordered step. */
export interface LeaseHooks {
  /** This replica now owns the pump. `resumed`: nobody else owned it since this replica last did. */
  acquired(pump: string, resumed: boolean): Promise<void>;
  /** The pump is about to be given to another replica (rebalancing): finish its work; the lock is still held. */
  releasing(pump: string): Promise<void>;
  /** The lease session ended: the lock is gone already, and another replica may be taking the pump. */
  lost(pump: string): Promise<void>;
}

/**
 * Pump leases: each pump is owned by exactly one replica at a time, through a session-level advisory lock
 * held on this replica's own lease connection. When the replica dies, its session and the lock go with it,
 * and a standby takes the pump on its next round. Replicas that serve the same pumps find each other by
 * the lease session's application_name and each aims at an even share, so pumps spread and rebalance as
 * replicas come and go.
 */
export class LeaseKeeper {
  private readonly owned = new Set<string>();
  private client: pg.Client | undefined;
  private timer: NodeJS.Timeout | undefined;
  private round: Promise<void> = Promise.resolve();
  private closed = false;
  /** This replica's lease session; the group prefix finds the other replicas serving the same pumps. */
  private readonly appName: string;
  private readonly groupPrefix: string;
  /** A rotation of the pumps, so that replicas starting together try different pumps first. */
  private readonly order: string[];
  /** Whether this session holds the `exclusive` lock. */
  private gate = false;

  constructor(private readonly o: LeaseOptions) {
    const group = createHash('sha256')
      .update([...o.pumps].sort().join(','))
      .digest('hex')
      .slice(0, 12);
    this.groupPrefix = `pm-lease:${group}:`;
    this.appName = `${this.groupPrefix}${o.replicaId}`;
    const offset = randomBytes(2).readUInt16BE(0) % Math.max(1, o.pumps.length);
    this.order = [...o.pumps.slice(offset), ...o.pumps.slice(0, offset)];
  }

  /** Takes this replica's share of the pumps, then keeps rebalancing in the background. */
  async start(): Promise<void> {
    // The first round is a round like the others: close() waits for it as it would for any.
    this.round = this.rebalance();
    await this.round;
    if (!this.closed) this.timer = setInterval(() => void this.schedule(), this.o.intervalMs);
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.timer) clearInterval(this.timer);
    await Promise.race([this.round, new Promise((r) => setTimeout(r, 2_000))]);
    const c = this.client;
    this.client = undefined;
    this.owned.clear();
    // Ending the session releases every lock it holds.
    if (c) await endSession(c, 1_000);
  }

  private schedule(): Promise<void> {
    this.round = this.round.then(() => this.rebalance()).catch(() => {});
    return this.round;
  }

  private async rebalance(): Promise<void> {
    if (this.closed) return;
    try {
      const c = await this.session();
      if (this.o.exclusive !== undefined && !this.gate) {
        this.gate = (await tryLockPump(c, this.o.exclusive, this.o.replicaId)) !== undefined;
        if (!this.gate) return;
      }
      const replicas =
        this.o.exclusive !== undefined ? 1 : Math.max(1, await countSessions(c, this.groupPrefix));
      const share = Math.ceil(this.o.pumps.length / replicas);
      for (const pump of [...this.owned].slice(share)) await this.release(c, pump);
      for (const pump of this.order) {
        if (this.owned.size >= share || this.closed) break;
        if (!this.owned.has(pump)) await this.tryAcquire(c, pump);
      }
    } catch (err) {
      if (this.closed) return; // shutting down: close() ends the session and its locks
      this.o.logger.warn({ err: describePgError(err) }, 'lease round failed; retrying');
      await this.drop();
    }
  }

  private async session(): Promise<pg.Client> {
    if (this.client) return this.client;
    const c = new pg.Client({
      ...engineSessionConfig(this.o.db, this.appName),
      query_timeout: this.o.queryTimeoutMs,
    });
    // Between rounds, a lost session is noticed here; the next round (queued after this one) goes on.
    c.on('error', () => {
      if (this.client === c) this.round = this.round.then(() => this.drop()).catch(() => {});
    });
    c.on('end', () => {
      if (this.client === c) this.round = this.round.then(() => this.drop()).catch(() => {});
    });
    try {
      await c.connect();
      // An earlier lease session of ours that died half-open still holds its locks at the server until the
      // server notices; end it so this replica (or another) can take the pumps now.
      await endStaleSessions(c, this.appName);
    } catch (err) {
      // A statement that timed out leaves its connection open: this session is nobody's, end it.
      abortSession(c, 'the lease session did not open');
      throw err;
    }
    // close() gave up waiting for this round while the session opened, and ended none: end this one, so
    // that nothing takes a lock on a session nobody will end.
    if (this.closed) {
      await endSession(c, 1_000);
      throw new Error('the lease keeper is closed');
    }
    this.client = c;
    return c;
  }

  /** The session is gone, and with it every lock. */
  private async drop(): Promise<void> {
    const c = this.client;
    this.client = undefined;
    this.gate = false;
    if (c) void endSession(c, 1_000);
    for (const pump of [...this.owned]) {
      // Closing: close() ends the session and the locks with it. A drop that outlives close()'s wait (a
      // `lost` hook still settling) must not report pumps lost after the stop's last line.
      if (this.closed) return;
      this.owned.delete(pump);
      this.o.logger.warn({ pump }, 'lease lost');
      await this.o.hooks.lost(pump);
    }
  }

  private async tryAcquire(c: pg.Client, pump: string): Promise<void> {
    const locked = await tryLockPump(c, pump, this.o.replicaId);
    if (!locked) return;
    // A lock that came back after close() stopped waiting for this round is released with the session.
    if (this.closed) return;
    const resumed = locked.previousOwner === this.o.replicaId;
    this.owned.add(pump);
    this.o.logger.info({ pump, replica: this.o.replicaId, resumed }, 'lease acquired');
    await this.o.hooks.acquired(pump, resumed);
  }

  private async release(c: pg.Client, pump: string): Promise<void> {
    this.owned.delete(pump);
    await this.o.hooks.releasing(pump);
    await unlockPump(c, pump);
    this.o.logger.info({ pump }, 'lease released for rebalancing');
  }
}
