import type pg from 'pg';
import type { Logger } from 'pino';
import { describePgError } from '../store/db.js';
import { deleteOldDeadLetters, deleteOldOutbox, deletePassedPosts } from '../store/retention.js';

export interface HousekeeperOptions {
  pool: pg.Pool;
  retention: { outboxMs: number; deadLetterMs: number; intervalMs: number };
  /** The pumps this replica owns now: only their outbox rows and ledger entries are its to delete. */
  owned: () => string[];
  logger: Logger;
}

/** Rows deleted per statement: small, so that no delete holds locks or bloats a transaction for long. */
const BATCH = 1_000;
/** Statements per kind and round: a large backlog is worked off over several rounds, not in one burst. */
const MAX_BATCHES = 50;

export interface RetentionRound {
  posts: number;
  outbox: number;
  deadLetters: number;
}

/**
 * Keeps the engine's own tables bounded. Owns only its timer. Every `intervalMs` it deletes, in small
 * batches: ledger entries of settled per-sensor posts whose rows the checkpoints have passed; delivered,
 * dead and dropped outbox rows of its own pumps older than OUTBOX_RETENTION that no row above a checkpoint
 * still needs; and dead letters older than DEAD_LETTER_RETENTION (one replica at a time). It never touches
 * pending outbox rows, deferred posts or the plant's tables.
 */
export class Housekeeper {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<RetentionRound> | undefined;
  private readonly deleted: RetentionRound = { posts: 0, outbox: 0, deadLetters: 0 };

  constructor(private readonly o: HousekeeperOptions) {}

  /** Rows deleted since start, by kind: what this replica's retention has done (a copy). */
  get totals(): Readonly<RetentionRound> {
    return { ...this.deleted };
  }

  start(): void {
    this.timer ??= setInterval(() => void this.runOnce().catch(() => {}), this.o.retention.intervalMs);
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    this.timer = undefined;
    await this.running?.catch(() => {});
  }

  /** One round; a round already running is joined, not doubled. */
  runOnce(): Promise<RetentionRound> {
    this.running ??= this.round().finally(() => {
      this.running = undefined;
    });
    return this.running;
  }

  private async round(): Promise<RetentionRound> {
    const { pool, retention, logger } = this.o;
    const owned = this.o.owned();
    const done: RetentionRound = { posts: 0, outbox: 0, deadLetters: 0 };
    try {
      if (owned.length > 0) {
        done.posts = await batches(() => deletePassedPosts(pool, owned, BATCH));
        done.outbox = await batches(() => deleteOldOutbox(pool, owned, retention.outboxMs, BATCH));
      }
      done.deadLetters = await batches(() => deleteOldDeadLetters(pool, retention.deadLetterMs, BATCH));
    } catch (err) {
      logger.warn({ err: describePgError(err) }, 'retention round failed; the next one tries again');
    }
    this.deleted.posts += done.posts;
    this.deleted.outbox += done.outbox;
    this.deleted.deadLetters += done.deadLetters;
    if (done.outbox > 0 || done.deadLetters > 0) {
      logger.info(
        { outbox: done.outbox, dead_letters: done.deadLetters },
        'deleted engine rows past their retention',
      );
    }
    return done;
  }
}

async function batches(step: () => Promise<number>): Promise<number> {
  let total = 0;
  for (let i = 0; i < MAX_BATCHES; i++) {
    const n = await step();
    total += n;
    if (n < BATCH) break;
  }
  return total;
}
