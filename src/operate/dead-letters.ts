import type pg from 'pg';
import type { LogbookConfig, PumpConfig } from '../config/env.js';
import { Decoder } from '../source/decode.js';
import { inSavepoint, inTransaction } from '../store/db.js';
import {
  type DeadLetterFilter,
  lockDeadLetters,
  markHandled,
  matchingIds,
  type StoredDeadLetter,
} from '../store/dead-letters.js';
import { insertKeyedDeferred, type KeyedPost } from '../store/deferred-posts.js';
import { handlerFor, type Plan } from './retry-plans.js';

/** What an operator command works with: the database, the configured pumps, and who is running it. */
export interface OperatorContext {
  pool: pg.Pool;
  pumps: PumpConfig[];
  /** Every pump of the wiring, served or not: whether a table is shared (its posts' keys name the pump). */
  wiringPumps?: readonly Pick<PumpConfig, 'id' | 'sensors'>[];
  /** The logbooks of the wiring: their letters are retried too; one kept without its key under its table's. */
  logbooks?: LogbookConfig[];
  /** Recorded as the handler of each letter (the OS user). */
  by: string;
}

/** What became of one dead letter. */
export interface Outcome {
  id: number;
  kind: string;
  /** `skipped`: the reading's post is on record as answered; `retry --again` re-posts it. */
  result: 'retried' | 'discarded' | 'refused' | 'skipped';
  detail: string;
}

/** Letters per transaction: short transactions, few locks. */
const PAGE = 200;

function notOpen(letter: StoredDeadLetter): string {
  const when = letter.handledAt ? ` at ${letter.handledAt.toISOString()}` : '';
  const how = letter.handledNote ? ` (${letter.handledNote})` : '';
  return `already ${letter.status} by ${letter.handledBy ?? 'someone'}${when}${how}`;
}

/**
 * Puts dead letters back on the normal delivery path, each marked `retried` in the same transaction as the
 * work that retries it: a per-sensor post is queued in deferred_posts for the pump's owning replica, a
 * vector's outbox row is pending again. A letter already retried or discarded is refused unless `again`.
 * A retry that fails again comes back as a new dead letter, written by the engine.
 */
export async function retryDeadLetters(
  ctx: OperatorContext,
  ids: number[],
  opts: { again?: boolean } = {},
): Promise<Outcome[]> {
  const decoder = new Decoder(ctx.pumps, ctx.wiringPumps ?? ctx.pumps);
  const logbookOf = new Map(
    (ctx.logbooks ?? []).flatMap((logbook) =>
      logbook.streams.map((stream) => [stream.channel, { logbook, stream }] as const),
    ),
  );
  const out: Outcome[] = [];
  for (let i = 0; i < ids.length; i += PAGE) {
    const page = ids.slice(i, i + PAGE);
    const outcomes = await inTransaction(ctx.pool, async (tx) => {
      const letters = await lockDeadLetters(tx, page);
      const found = new Set(letters.map((l) => l.id));
      const results: Outcome[] = page
        .filter((id) => !found.has(id))
        .map((id) => ({ id, kind: '-', result: 'refused', detail: 'no such dead letter' }));
      const posts: { letter: StoredDeadLetter; post: KeyedPost; note: string }[] = [];
      const done: { id: number; note: string }[] = [];
      for (const letter of letters) {
        const refuse = (detail: string) =>
          results.push({ id: letter.id, kind: letter.kind, result: 'refused', detail });
        if (letter.status !== 'open' && !opts.again) {
          refuse(`${notOpen(letter)}; --again retries it anyway`);
          continue;
        }
        const handler = handlerFor(letter.kind);
        if (!handler) {
          refuse(`this version of pump-monitor cannot retry a dead letter of kind "${letter.kind}"`);
          continue;
        }
        let plan: Plan;
        try {
          plan = await inSavepoint(tx, () =>
            handler(letter, {
              tx,
              decoder,
              logbookOf,
              logbooks: ctx.logbooks ?? [],
              again: opts.again === true,
            }),
          );
        } catch (err) {
          refuse(`failed: ${(err as Error).message}`);
          continue;
        }
        if ('refuse' in plan) refuse(plan.refuse);
        else if ('skip' in plan)
          results.push({ id: letter.id, kind: letter.kind, result: 'skipped', detail: plan.skip });
        else if ('post' in plan) posts.push({ letter, post: plan.post, note: plan.note });
        else done.push({ id: letter.id, note: plan.note });
      }
      // One post per key: two letters for the same reading queue it once.
      const byKey = new Map<string, number>();
      const unique: KeyedPost[] = [];
      for (const p of posts) {
        if (!byKey.has(p.post.key)) {
          byKey.set(p.post.key, p.letter.id);
          unique.push(p.post);
        }
      }
      const queued = await insertKeyedDeferred(tx, unique);
      for (const p of posts) {
        const first = byKey.get(p.post.key) as number;
        const note =
          first !== p.letter.id
            ? `same post as dead letter ${first} (${p.post.key})`
            : queued.has(p.post.key)
              ? p.note
              : `already queued, not yet sent (${p.post.key})`;
        done.push({ id: p.letter.id, note });
      }
      await markHandled(tx, 'retried', ctx.by, done);
      const kinds = new Map(letters.map((l) => [l.id, l.kind]));
      for (const d of done)
        results.push({ id: d.id, kind: kinds.get(d.id) ?? '-', result: 'retried', detail: d.note });
      return results.sort((a, b) => a.id - b.id);
    });
    out.push(...outcomes);
  }
  return out;
}

/** Marks open dead letters as handled by an operator. They stay, for the audit, until retention deletes them. */
export async function discardDeadLetters(
  ctx: OperatorContext,
  ids: number[],
  note?: string,
): Promise<Outcome[]> {
  const out: Outcome[] = [];
  for (let i = 0; i < ids.length; i += PAGE) {
    const page = ids.slice(i, i + PAGE);
    const outcomes = await inTransaction(ctx.pool, async (tx) => {
      const letters = await lockDeadLetters(tx, page);
      const found = new Map(letters.map((l) => [l.id, l]));
      const results: Outcome[] = [];
      const discard: { id: number; note: string }[] = [];
      for (const id of page) {
        const letter = found.get(id);
        if (!letter) results.push({ id, kind: '-', result: 'refused', detail: 'no such dead letter' });
        else if (letter.status !== 'open') {
          results.push({ id, kind: letter.kind, result: 'refused', detail: notOpen(letter) });
        } else {
          discard.push({ id, note: note ?? 'discarded' });
          results.push({
            id,
            kind: letter.kind,
            result: 'discarded',
            detail: note ?? 'kept until retention',
          });
        }
      }
      await markHandled(tx, 'discarded', ctx.by, discard);
      return results;
    });
    out.push(...outcomes);
  }
  return out;
}

/** Every id matching a filter, read in bounded pages (a bulk retry or discard of what `list` shows). */
export async function allMatching(pool: pg.Pool, filter: DeadLetterFilter, max = 100_000): Promise<number[]> {
  const ids: number[] = [];
  let after = 0;
  while (ids.length < max) {
    const page = await matchingIds(pool, filter, after, Math.min(1_000, max - ids.length));
    if (page.length === 0) break;
    ids.push(...page);
    after = page[page.length - 1] as number;
  }
  return ids;
}
