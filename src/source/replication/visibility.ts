import type pg from 'pg';
import type { Logger } from 'pino';
import { describePgError } from '../../store/db.js';
import { notYetVisible } from '../../store/replication.js';
import { sleep } from '../../util/clock.js';

/** How often, and how long apart, a transaction's visibility is asked before its rows are handed on. */
const VISIBILITY_TRIES = 200;
const VISIBILITY_WAIT_MS = 5;

/**
 * Waits (a few milliseconds at most, bounded) until other sessions see the transaction: the slot can
 * give a commit before it is visible, and the backend reads the row by its id. The notifications of
 * SOURCE=notify come after visibility, so they never needed this.
 */
export async function untilVisible(pool: pg.Pool, logger: Logger, xid: number): Promise<void> {
  for (let attempt = 1; attempt <= VISIBILITY_TRIES; attempt++) {
    try {
      if ((await notYetVisible(pool, [xid])).length === 0) return;
    } catch (err) {
      logger.warn({ err: describePgError(err), xid }, 'could not check a transaction is visible');
      return;
    }
    await sleep(VISIBILITY_WAIT_MS);
  }
  logger.warn({ xid }, 'a transaction from the slot is still not visible; handing its rows on');
}
