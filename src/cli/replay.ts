import type { Config } from '../config/env.js';
import { ConfigError } from '../config/env.js';
import {
  ReplayInputError,
  type ReplayProgress,
  type ReplayResult,
  replay,
  replayLogbook,
} from '../operate/replay.js';
import { describePgError } from '../store/db.js';
import { withOperator } from './operate.js';
import { progressLine } from './runtime.js';

/** `pump-monitor replay`: a pump's vectors (and posts), or a logbook's entries, of a range sent again. */

function progressBar(pump: string): ((p: ReplayProgress) => void) | undefined {
  if (process.stderr.isTTY !== true) return undefined;
  let last = 0;
  return (p) => {
    const now = Date.now();
    if (now - last < 100 && p.read < p.total) return;
    last = now;
    const share = p.total === 0 ? 1 : p.read / p.total;
    const filled = Math.round(share * 24);
    progressLine(
      `replay ${pump} [${'#'.repeat(filled)}${'.'.repeat(24 - filled)}] ${Math.floor(share * 100)}%  ` +
        `${p.read}/${p.total} rows, ${p.counts.vectors} vectors, ${p.counts.dropped} dropped`,
    );
  };
}

function replayHead(r: ReplayResult, what: string, by: string): string[] {
  return [
    r.id === undefined
      ? `dry run for ${what} ${r.pump}: nothing was written`
      : `replay ${r.id} of ${what} ${r.pump}, by ${by}`,
    `  range             tiempo_ejecucion from ${r.from} (included) to ${r.to} (excluded)`,
  ];
}

function leftToEngine(r: ReplayResult): string[] {
  return r.counts.unsettled
    ? [
        `  left to the engine ${r.counts.unsettled} rows above its checkpoints, not dealt with yet: not replayed`,
      ]
    : [];
}

function formatPumpReplay(
  r: ReplayResult,
  pump: Config['pumps'][number],
  posts: boolean,
  by: string,
): string {
  const c = r.counts;
  const queued = r.id === undefined ? 'would be queued' : 'queued as pending in the outbox';
  const postedOnly = pump.sensors.filter((s) => !s.inVector).length;
  return [
    ...replayHead(r, 'pump', by),
    `  rows read         ${c.rows}${c.invalid ? ` (${c.invalid} not valid readings, skipped)` : ''}`,
    `  vectors           ${c.vectors}, ${c.filled} of them with fills: ${queued}`,
    `  dropped           ${c.dropped} (groups below the threshold: counted, not sent)`,
    `  late readings     ${c.late}`,
    ...leftToEngine(r),
    `  per-sensor posts  ${posts ? `${c.posts}: ${r.id === undefined ? 'would be queued' : 'queued'}` : 'not replayed (--posts)'}`,
    ...(postedOnly > 0
      ? [
          `  posted-only       ${postedOnly} sensors join no vector: ${posts ? 'their readings are among the posts' : 'not read (--posts replays their posts)'}`,
        ]
      : []),
    ...(r.id === undefined
      ? []
      : [
          `  keys              the rebuilt group's own key + -replay-${r.id}; the replica owning pump ${r.pump} sends them`,
        ]),
    '',
  ].join('\n');
}

function formatLogbookReplay(r: ReplayResult, by: string): string {
  const c = r.counts;
  return [
    ...replayHead(r, 'logbook', by),
    `  entries           ${c.posts}: ${r.id === undefined ? 'would be queued' : 'queued'}`,
    ...leftToEngine(r),
    ...(r.id === undefined
      ? []
      : [
          `  keys              each entry's own key + -replay-${r.id}; the replica holding logbook ${r.pump}'s lease sends them, with the text read from the row`,
        ]),
    '',
  ].join('\n');
}

/** The pump or logbook a replay is for: exactly one of --pump and --logbook, named in the wiring. */
function replayTarget(
  o: { pump?: string; logbook?: string; posts?: boolean },
  config: Config,
): { pump: Config['pumps'][number] } | { logbook: Config['logbooks'][number] } {
  if ((o.pump === undefined) === (o.logbook === undefined)) {
    throw new ConfigError('replay: give --pump ID or --logbook ID (one of them)');
  }
  if (o.logbook !== undefined) {
    const wanted = o.logbook.toLowerCase();
    const logbook = config.logbooks.find((l) => l.id.toLowerCase() === wanted);
    if (!logbook) {
      const known = config.logbooks.map((l) => l.id).join(', ');
      throw new ConfigError(
        `--logbook: got "${o.logbook}", expected ${known ? `one of ${known}` : 'a logbook, and this wiring has none'}`,
      );
    }
    if (o.posts) throw new ConfigError('--posts is for a pump: a logbook replay queues its entries anyway');
    return { logbook };
  }
  const wanted = (o.pump as string).toLowerCase();
  const pump = config.pumps.find((p) => p.id.toLowerCase() === wanted);
  if (!pump) {
    throw new ConfigError(
      `--pump: got "${o.pump}", expected one of ${config.pumps.map((p) => p.id).join(', ')}`,
    );
  }
  return { pump };
}

export async function replayCommand(o: {
  pump?: string;
  logbook?: string;
  from: string;
  to: string;
  posts?: boolean;
  dryRun?: boolean;
  rate?: number;
  json?: boolean;
}): Promise<void> {
  await withOperator(async (ctx, config, wiring) => {
    const target = replayTarget(o, config);
    const who = 'pump' in target ? target.pump.id : target.logbook.id;
    const controller = new AbortController();
    const stop = () => controller.abort();
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
    const bar = progressBar(who);
    try {
      const common = {
        pool: ctx.pool,
        from: o.from,
        to: o.to,
        dryRun: o.dryRun === true,
        rate: o.rate,
        runBy: ctx.by,
        ...(bar ? { onProgress: bar } : {}),
        signal: controller.signal,
      };
      const r =
        'pump' in target
          ? await replay({
              ...common,
              pump: target.pump,
              pumps: config.pumps,
              assembler: config.assembler,
              posts: o.posts === true,
            })
          : await replayLogbook({ ...common, logbook: target.logbook });
      if (bar) progressLine(undefined);
      if (o.json) {
        process.stdout.write(
          `${JSON.stringify({ wiring, ...r, id: r.id ?? null, dry_run: o.dryRun === true }, null, 2)}\n`,
        );
        return;
      }
      process.stdout.write(
        `${wiring}\n` +
          ('pump' in target
            ? formatPumpReplay(r, target.pump, o.posts === true, ctx.by)
            : formatLogbookReplay(r, ctx.by)),
      );
    } catch (err) {
      if (bar) progressLine(undefined);
      if (err instanceof ReplayInputError) throw new ConfigError(err.message);
      process.stderr.write(`pump-monitor replay: failed: ${describePgError(err)}\n`);
      process.exitCode = 1;
    } finally {
      process.off('SIGINT', stop);
      process.off('SIGTERM', stop);
    }
  });
}
