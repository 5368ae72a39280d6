import type pg from 'pg';
import type { Logger } from 'pino';
import { vectorKey } from '../model/keys.js';
import { describePgError } from '../store/db.js';
import { insertGroups, markSent, type OutboxGroup, type OutboxRow } from '../store/outbox.js';
import { BatchWriter } from '../util/batch.js';

/** How long vectors gather before their outbox INSERT while vectors arrive faster than it completes. */
const BUSY_LINGER_MS = 5;

/** What became of a resolved group at the outbox. */
export interface Recorded {
  key: string;
  /** The stored row; undefined when the outbox already held this group (a replay, not stored again). */
  row: OutboxRow | undefined;
}

interface PendingGroup {
  group: OutboxGroup;
  resolve: (r: Recorded) => void;
}

export interface OutboxRecorderOptions {
  pool: pg.Pool;
  logger: Logger;
  signal: AbortSignal;
}

/**
 * Writes resolved groups and delivery records to the outbox, in batches shared by every pump lane, so
 * that two pumps' vectors meeting cost one round trip. Owns its two batch writers; knows nothing of
 * senders, assemblers or checkpoints: callers await what became of their group.
 */
export class OutboxRecorder {
  private readonly groups: BatchWriter<PendingGroup>;
  private readonly sent: BatchWriter<{ id: number; attempts: number; status: number }>;

  constructor(o: OutboxRecorderOptions) {
    const onError = (what: string) => (err: unknown, n: number, refused?: boolean) =>
      refused
        ? o.logger.error({ err: describePgError(err) }, `${what}: the database refused one item; set aside`)
        : o.logger.warn({ err: describePgError(err), items: n }, `${what} failed; retrying`);
    this.groups = new BatchWriter(
      async (items) => {
        const { stored, keys } = await insertGroups(
          o.pool,
          items.map((i) => i.group),
        );
        const byKey = new Map(stored.map((r) => [r.key, r]));
        for (const [n, item] of items.entries()) {
          const key = keys[n] as string;
          item.resolve({ key, row: byKey.get(key) });
        }
      },
      {
        name: 'outbox',
        busyLingerMs: BUSY_LINGER_MS,
        maxBatch: 200,
        retryMs: 500,
        onError: onError('writing the outbox'),
        // A group the database refuses on its own (its key text is sanitised, its values finite: not seen
        // so far) would hold every pump's groups behind it: logged with its rows, and not stored.
        onPoison: (item, err) => {
          const { group } = item;
          o.logger.error(
            {
              err: describePgError(err),
              pump: group.pump,
              tiempo_sensor: group.tiempo,
              members: group.members,
            },
            'the outbox refused a group; its rows are settled without a vector',
          );
          item.resolve({ key: vectorKey(group.pump, group.tiempo, group.members), row: undefined });
        },
        signal: o.signal,
      },
    );
    // Each sender waits for its delivery record before it sends the next vector, so a crash sends at most
    // one vector per pump again. Pumps that finish together share one write.
    this.sent = new BatchWriter((sent) => markSent(o.pool, sent), {
      name: 'outbox_sent',
      maxBatch: 500,
      retryMs: 500,
      onError: onError('recording delivered vectors'),
      signal: o.signal,
    });
  }

  /** Backpressure for catch-up: above 1 when more than 1,000 groups wait for their write. */
  load(): number {
    return this.backlog / 1_000;
  }

  /** Groups waiting to be written. */
  get backlog(): number {
    return this.groups.pending;
  }

  /** Stores a group; resolves once written (never, if the engine stops first: the rows stay unsettled). */
  record(group: OutboxGroup): Promise<Recorded> {
    return new Promise((resolve) => this.groups.push({ group, resolve }));
  }

  /** Records a delivered vector; resolves false if the engine stopped before it was written. */
  recordSent(sent: { id: number; attempts: number; status: number }): Promise<boolean> {
    return this.sent.pushAndWait(sent);
  }

  /** Writes everything queued now, without lingering. */
  async flush(): Promise<void> {
    await this.groups.flush();
    await this.sent.flush();
  }
}
