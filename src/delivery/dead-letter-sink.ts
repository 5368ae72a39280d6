import { EventEmitter } from 'node:events';
import type pg from 'pg';
import type { Logger } from 'pino';
import { describePgError } from '../store/db.js';
import { bareDeadLetter, type DeadLetter, insertDeadLetters } from '../store/dead-letters.js';
import { BatchWriter } from '../util/batch.js';

export interface DeadLetterSinkEvents {
  /** A dead letter is on record (every kind, however it was written). */
  stored: [letter: DeadLetter];
}

export interface DeadLetterSinkOptions {
  pool: pg.Pool;
  logger: Logger;
  signal: AbortSignal;
}

interface Pending {
  letter: DeadLetter;
  settled: (() => void) | undefined;
}

/**
 * Where every unit that rejects something puts its dead letter: the intake (a payload that is not a
 * reading), the per-sensor posts and the logbook lane (a post given up), and the vector sender (a vector
 * the backend rejected). Letters pushed are written in batches, and each one's `settled` is called once it
 * is on record, so the row it stands for may be settled in the ledger. A letter the database refuses even
 * sanitised is stored bare (see bareDeadLetter), never lost. A letter its unit wrote within its own
 * transaction (the vector sender's, with its outbox row) is announced with `stored()`. Every letter on
 * record is announced once, as the `stored` event, which telemetry counts. Owns its batch writer; touches no
 * other table.
 */
export class DeadLetterSink extends EventEmitter<DeadLetterSinkEvents> {
  private readonly writer: BatchWriter<Pending>;

  constructor(o: DeadLetterSinkOptions) {
    super();
    const store = async (items: Pending[], letters: DeadLetter[]) => {
      await insertDeadLetters(o.pool, letters);
      for (const i of items) {
        this.emit('stored', i.letter);
        i.settled?.();
      }
    };
    this.writer = new BatchWriter(
      (items) =>
        store(
          items,
          items.map((i) => i.letter),
        ),
      {
        name: 'dead_letters',
        maxBatch: 200,
        retryMs: 500,
        onError: (err, n) =>
          o.logger.warn({ err: describePgError(err), items: n }, 'writing dead letters failed; retrying'),
        // A letter refused even sanitised: stored without what it carried, rather than lost or in the way.
        onPoison: (i, err) => {
          o.logger.error(
            { err: describePgError(err), kind: i.letter.kind, pump: i.letter.pump, reason: i.letter.reason },
            'a dead letter was refused by the database; storing it without its payload and answer',
          );
          return store([i], [bareDeadLetter(i.letter, err)]);
        },
        signal: o.signal,
      },
    );
  }

  /** Writes a letter (batched); `settled` runs once it is on record. */
  push(letter: DeadLetter, settled?: () => void): void {
    this.writer.push({ letter, settled });
  }

  /** A letter its unit wrote itself, in the transaction that decided it: counted like the others. */
  stored(letter: DeadLetter): void {
    this.emit('stored', letter);
  }

  /** Writes what is pending now (a graceful stop). */
  flush(): Promise<void> {
    return this.writer.flush();
  }
}
