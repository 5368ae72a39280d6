import type { LogbookStream } from '../config/pumps.js';
import type { PostedRow, RowKind } from '../delivery/post-queue.js';
import { logbookKey } from '../model/keys.js';
import { logbookEntryPayload, logbookPostBody } from '../model/payload.js';
import type { Ticket } from '../model/reading.js';

/** One logbook entry on its way to the classifier. */
export interface Entry extends PostedRow {
  stream: LogbookStream;
  id: number;
  /** The row's text, sent as its bitacora. */
  text: string;
  /** An operator's retry, queued in deferred_posts: not in the ledger (its row is below the checkpoint). */
  deferredId?: number;
  key?: string;
  /** Its row in the ledger (none for an operator's retry). */
  ticket?: Ticket;
}

/** An entry's post: POST {url} {id, bitacora, tabla}, Idempotency-Key lb-<table>-<id> unless a retry's own. */
export function entryPosts(logbook: string, endpoint: string, retried: (e: Entry) => void): RowKind<Entry> {
  const key = (e: Entry) => e.key ?? logbookKey(e.stream.table, e.id);
  return {
    what: 'logbook entry',
    noun: 'entry',
    lane: () => logbook,
    route: () => endpoint,
    body: (e) => logbookPostBody(e.id, e.text, e.stream.tabla),
    key,
    retried,
    record: (e) => ({ pump: logbook, table: e.stream.table, id: e.id }),
    letter: (e) => ({
      kind: 'logbook',
      pump: logbook,
      channel: e.stream.channel,
      payload: logbookEntryPayload(e.id, e.stream.tabla),
      idempotencyKey: key(e),
    }),
  };
}

export type LaneMode = 'released' | 'owned' | 'stopped';

/** The lane's transitions: owned while this replica holds the logbook's lease; nothing leaves stopped. */
export const LANE_MODES: { readonly [K in LaneMode]: readonly LaneMode[] } = {
  released: ['owned', 'stopped'],
  owned: ['released', 'stopped'],
  stopped: [],
};
