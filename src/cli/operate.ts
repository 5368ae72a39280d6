import { userInfo } from 'node:os';
import type pg from 'pg';
import { type Config, ConfigError, type DatabaseConfig, type Env, loadConfig } from '../config/env.js';
import {
  allMatching,
  discardDeadLetters,
  type OperatorContext,
  type Outcome,
  retryDeadLetters,
} from '../operate/dead-letters.js';
import { chooseWiring } from '../operate/wiring.js';
import { createPool, ensureReachable } from '../store/db.js';
import { type DeadLetterFilter, listDeadLetters, type StoredDeadLetter } from '../store/dead-letters.js';
import { SCHEMA_VERSION, schemaVersion } from '../store/migrations.js';
import { recordedWirings } from '../store/wiring.js';
import { resolveDemoTarget } from './demo.js';

/**
 * The configuration the operator commands work with, found the way `diagnose` finds its own: the
 * environment and .env, a database required. Keep the two in step.
 */
export function operatorConfig(): { env: Env; config: Config & { database: DatabaseConfig } } {
  // With nothing configured: the database of the `npm start` running from here.
  const { env } = resolveDemoTarget(process.env);
  const config = loadConfig(env, { requireDatabase: true });
  if (!config.database) throw new Error('unreachable: requireDatabase');
  return { env, config: config as Config & { database: DatabaseConfig } };
}

/** Who runs the command, for the audit: the OS user. */
export function operatorName(): string {
  try {
    return userInfo().username;
  } catch {
    // No passwd entry (a container running under an arbitrary uid).
    return process.env.USER || process.env.LOGNAME || `uid ${process.getuid?.() ?? '?'}`;
  }
}

/**
 * Runs an operator command: the database reached, the engine schema at this version, and the wiring chosen
 * (configured, or as listen recorded it); its warnings go to stderr. Each command's output starts with the
 * wiring line (JSON: its `wiring`).
 */
export async function withOperator<T>(
  fn: (ctx: OperatorContext, config: Config, wiring: string) => Promise<T>,
): Promise<T> {
  const { env, config: base } = operatorConfig();
  await ensureReachable(base.database, 'pump-monitor-operate');
  const pool: pg.Pool = createPool(base.database, 'pump-monitor-operate', 3, base.dbQueryTimeoutMs);
  try {
    const version = await schemaVersion(pool as unknown as pg.ClientBase);
    if (version !== SCHEMA_VERSION) {
      throw new ConfigError(
        version < SCHEMA_VERSION
          ? `the engine schema is at version ${version}; this command needs version ${SCHEMA_VERSION}: run pump-monitor migrate (or start this version's listen) first`
          : `the engine schema is at version ${version}, newer than this pump-monitor knows (${SCHEMA_VERSION}); use the newer pump-monitor`,
      );
    }
    const chosen = chooseWiring(env, await recordedWirings(pool), { requireDatabase: true });
    for (const w of chosen.warnings) process.stderr.write(`warning: ${w}\n`);
    const config = chosen.config;
    return await fn(
      {
        pool,
        pumps: config.pumps,
        wiringPumps: config.wiring.definitions.pumps,
        logbooks: config.logbooks,
        by: operatorName(),
      },
      config,
      chosen.line,
    );
  } finally {
    await pool.end().catch(() => {});
  }
}

// ---- option parsing ----

export interface FilterOptions {
  pump?: string;
  since?: Date;
  reason?: string;
  kind?: string;
  all?: boolean;
}

function filterOf(o: FilterOptions): DeadLetterFilter {
  return { pump: o.pump, since: o.since, reason: o.reason, kind: o.kind, all: o.all };
}

const hasFilter = (o: FilterOptions) => [o.pump, o.since, o.reason, o.kind].some((v) => v !== undefined);

// ---- dead-letters list ----

function cell(s: string, width: number): string {
  const flat = s.replace(/\s+/g, ' ');
  return flat.length > width ? `${flat.slice(0, width - 1)}…` : flat;
}

function namedId(payload: string | null): string {
  const m = /"id_sensor"\s*:\s*(\d+)/.exec(payload ?? '');
  return m ? ` #${m[1]}` : '';
}

/** What a letter is about, in a few words: the reading's channel and row, or the vector's outbox row. */
function subject(l: StoredDeadLetter): string {
  if (l.kind === 'vector') {
    const tiempo = /for tiempo_sensor (.*)$/.exec(l.reason)?.[1];
    return `${tiempo ?? 'vector'}${l.outboxId !== null ? ` (outbox ${l.outboxId})` : ''}`;
  }
  return `${l.channel ?? '-'}${namedId(l.payload)}`;
}

function when(d: Date): string {
  return `${d.toISOString().slice(0, 19).replace('T', ' ')}Z`;
}

export function formatLetters(rows: StoredDeadLetter[], total: number, all: boolean): string {
  const head = ['ID', 'WHEN (UTC)', 'KIND', 'PUMP', 'STATUS', 'ABOUT', 'REASON', 'BACKEND ANSWER'];
  const body = rows.map((l) => [
    String(l.id),
    when(l.createdAt),
    l.kind,
    l.pump ?? '-',
    l.status === 'open' ? 'open' : `${l.status} by ${l.handledBy ?? '?'}`,
    cell(subject(l), 40),
    cell(l.reason, 60),
    l.responseStatus === null ? '-' : cell(`${l.responseStatus} ${l.responseBody ?? ''}`.trim(), 50),
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((r) => (r[i] as string).length)));
  const line = (r: string[]) =>
    r
      .map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i] as number)))
      .join('  ')
      .trimEnd();
  const what = all ? 'dead letters' : 'open dead letters';
  const foot =
    total === 0
      ? `no ${what} match`
      : rows.length < total
        ? `${rows.length} of ${total} ${what} shown, newest first; --limit shows more`
        : `${total} ${what}, newest first`;
  const hint = all ? '' : ' (--all also shows retried and discarded ones)';
  return `${rows.length ? `${[head, ...body].map(line).join('\n')}\n` : ''}${foot}${hint}\n`;
}

function letterJson(l: StoredDeadLetter) {
  return {
    id: l.id,
    created_at: l.createdAt.toISOString(),
    kind: l.kind,
    pump: l.pump,
    channel: l.channel,
    payload: l.payload,
    reason: l.reason,
    response_status: l.responseStatus,
    response_body: l.responseBody,
    outbox_id: l.outboxId,
    idempotency_key: l.idempotencyKey,
    status: l.status,
    handled_at: l.handledAt?.toISOString() ?? null,
    handled_by: l.handledBy,
    handled_note: l.handledNote,
  };
}

export async function listCommand(o: FilterOptions & { json?: boolean; limit: number }): Promise<void> {
  await withOperator(async ({ pool }, _config, wiring) => {
    const { rows, total } = await listDeadLetters(pool, filterOf(o), o.limit);
    process.stdout.write(
      o.json
        ? `${JSON.stringify({ wiring, total, shown: rows.length, dead_letters: rows.map(letterJson) }, null, 2)}\n`
        : `${wiring}\n${formatLetters(rows, total, o.all === true)}`,
    );
  });
}

// ---- dead-letters retry / discard ----

type ActionOptions = FilterOptions & { allMatching?: boolean; json?: boolean };

async function selectIds(
  ctx: OperatorContext,
  ids: number[],
  o: ActionOptions,
  verb: 'retry' | 'discard',
  again = false,
): Promise<number[]> {
  if (o.allMatching && ids.length > 0)
    throw new ConfigError('give dead letter ids or --all-matching, not both');
  if (!o.allMatching && ids.length === 0) {
    throw new ConfigError('name the dead letters: their ids, or --all-matching with the list filters');
  }
  if (!o.allMatching && (hasFilter(o) || o.all)) {
    throw new ConfigError('--pump, --since, --reason, --kind and --all select rows only with --all-matching');
  }
  if (o.allMatching && !hasFilter(o) && !o.all) {
    throw new ConfigError(
      `--all-matching without --pump, --since, --reason or --kind ${verb === 'retry' ? 'retries' : 'discards'} every open dead letter; narrow it with a filter, or add --all to mean every one`,
    );
  }
  if (!o.allMatching) return [...new Set(ids)];
  // With --all-matching, --all confirms the selection; the letters are those the action can take: open ones,
  // and for `retry --again` handled ones too.
  return allMatching(ctx.pool, { ...filterOf(o), all: verb === 'retry' && again });
}

function report(
  verb: 'retried' | 'discarded',
  outcomes: Outcome[],
  json: boolean | undefined,
  wiring: string,
): void {
  const done = outcomes.filter((x) => x.result === verb).length;
  const skipped = outcomes.filter((x) => x.result === 'skipped').length;
  const refused = outcomes.length - done - skipped;
  if (json) {
    process.stdout.write(
      `${JSON.stringify({ wiring, [verb]: done, skipped, refused, outcomes }, null, 2)}\n`,
    );
  } else {
    process.stdout.write(`${wiring}\n`);
    const kindWidth = Math.max(4, ...outcomes.map((x) => x.kind.length));
    const idWidth = Math.max(2, ...outcomes.map((x) => String(x.id).length));
    for (const x of outcomes) {
      process.stdout.write(
        `${String(x.id).padStart(idWidth)}  ${x.kind.padEnd(kindWidth)}  ${x.result.padEnd(9)}  ${x.detail}\n`,
      );
    }
    process.stdout.write(
      outcomes.length === 0
        ? 'no dead letters matched\n'
        : `${done} ${verb}, ${refused} refused${
            skipped > 0
              ? `, ${skipped} skipped: their readings' posts are on record as answered (--again re-posts them)`
              : ''
          }\n`,
    );
  }
  // A refusal is worth a script's attention.
  process.exitCode = refused > 0 ? 1 : 0;
}

export async function retryCommand(
  ids: number[] | undefined,
  o: ActionOptions & { again?: boolean },
): Promise<void> {
  await withOperator(async (ctx, _config, wiring) => {
    const selected = await selectIds(ctx, ids ?? [], o, 'retry', o.again === true);
    report('retried', await retryDeadLetters(ctx, selected, { again: o.again === true }), o.json, wiring);
  });
}

export async function discardCommand(
  ids: number[] | undefined,
  o: ActionOptions & { note?: string },
): Promise<void> {
  await withOperator(async (ctx, _config, wiring) => {
    const selected = await selectIds(ctx, ids ?? [], o, 'discard');
    report('discarded', await discardDeadLetters(ctx, selected, o.note), o.json, wiring);
  });
}
