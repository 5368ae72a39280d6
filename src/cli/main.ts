#!/usr/bin/env node
import { readFileSync } from 'node:fs';
import { Command, InvalidArgumentError } from 'commander';
import { config as loadDotenv } from 'dotenv';
import { ConfigError } from '../config/env.js';
import { DatabaseUnavailableError, describePgError, isConnectFault } from '../store/db.js';
import { PrivilegeError } from '../store/schema.js';
import { parseId, parseSince } from './args.js';

loadDotenv({ quiet: true });

const program = new Command('pump-monitor')
  .description(
    'Listens to pump sensor notifications in PostgreSQL and delivers them to the prediction backend.',
  )
  .version(packageVersion(), '-V, --version', 'print the version of pump-monitor and exit')
  .showHelpAfterError();

/** package.json's version: from dist/cli/ and from src/cli/ alike, it is two folders up. */
function packageVersion(): string {
  const file = new URL('../../package.json', import.meta.url);
  return (JSON.parse(readFileSync(file, 'utf8')) as { version: string }).version;
}

function number(min: number, max = Number.POSITIVE_INFINITY) {
  return (raw: string) => {
    const n = Number(raw);
    if (!Number.isFinite(n) || n < min || n > max)
      throw new InvalidArgumentError(`expected a number ${min}..${max}`);
    return n;
  };
}

/** A port option: an integer 0..65535 (0: the system picks a free one). */
function portOption(raw: string): number {
  const n = Number(raw);
  if (!/^\d+$/.test(raw.trim()) || n > 65_535)
    throw new InvalidArgumentError('expected a port, an integer 0..65535');
  return n;
}

program
  .command('start')
  .description(
    'Run everything: with no database configured, an embedded PostgreSQL, the reference backend, the simulator, both listeners and the status page; with one configured, the listeners only',
  )
  .action(async () => (await import('./start.js')).start());

program
  .command('listen')
  .description('Run the listeners for the pumps in PUMPS against the configured database and backend')
  .action(async () => (await import('./listen.js')).listen());

program
  .command('migrate')
  .description('Create missing sensor tables, the engine schema and the notifying triggers (idempotent)')
  .option(
    '--grant-to <role>',
    'also grant this database user what listen needs (the engine schema, and reading the sensor tables)',
  )
  .action(async (opts: { grantTo?: string }) => (await import('./tools.js')).migrateCommand(opts));

program
  .command('diagnose')
  .description(
    'Check that notifications flow: connection, LISTEN, queue, each table, trigger and channel, and the backends',
  )
  .option('--json', 'print the checks as JSON')
  .action(async (opts) => (await import('./diagnose.js')).diagnoseCommand(opts));

const deadLetters = program
  .command('dead-letters')
  .description('What was rejected, why and when; put it back on the delivery path, or mark it handled');

/** The filters list, retry --all-matching and discard --all-matching share. */
function letterFilters(cmd: Command): Command {
  return cmd
    .option('--pump <id>', 'only this pump')
    .option('--since <when>', 'only letters written since: a duration (30m, 2h, 7d) or a timestamp', (raw) =>
      parseSince(raw),
    )
    .option('--reason <text>', 'only letters whose reason contains this text')
    .option('--kind <kind>', 'only this kind: sensor_post, vector, notification or logbook')
    .option(
      '--all',
      'list: also retried and discarded letters; retry and discard: with --all-matching, every letter even with no filter',
    );
}

letterFilters(
  deadLetters.command('list').description('List dead letters (open ones by default), newest first'),
)
  .option('--json', 'print them as JSON')
  .option('--limit <n>', 'show at most this many', number(1, 100_000), 50)
  .action(async (opts) => (await import('./operate.js')).listCommand(opts));

letterFilters(
  deadLetters
    .command('retry')
    .description(
      'Send dead letters again through the normal delivery path: posts via the owning replica, vectors back in the outbox',
    )
    .argument('[ids...]', 'dead letter ids', parseId),
)
  .option('--all-matching', 'every open letter the filters match (no filter: refused unless --all)')
  .option(
    '--again',
    'also retry letters already retried or discarded, and re-post readings whose post is on record as answered',
  )
  .option('--json', 'print the outcome as JSON')
  .action(async (ids, opts) => (await import('./operate.js')).retryCommand(ids, opts));

letterFilters(
  deadLetters
    .command('discard')
    .description('Mark dead letters as handled; they are kept for the audit until retention deletes them')
    .argument('[ids...]', 'dead letter ids', parseId),
)
  .option('--all-matching', 'every open letter the filters match (no filter: refused unless --all)')
  .option('--note <text>', 'why, kept with each letter')
  .option('--json', 'print the outcome as JSON')
  .action(async (ids, opts) => (await import('./operate.js')).discardCommand(ids, opts));

program
  .command('replay')
  .description(
    "Rebuild a pump's vectors (and with --posts its per-sensor posts), or a logbook's entries, for a range of tiempo_ejecucion, and send them again under replay keys",
  )
  .option('--pump <id>', 'the pump (or --logbook)')
  .option('--logbook <id>', 'the logbook: queue its entries of the range again (or --pump)')
  .requiredOption(
    '--from <timestamp>',
    'start of the range on tiempo_ejecucion (included), e.g. "2025-01-31 08:00"',
  )
  .requiredOption('--to <timestamp>', 'end of the range (excluded)')
  .option('--posts', 'also send every reading of the range to its sensor endpoint again')
  .option('--dry-run', 'count only; write nothing')
  .option('--rate <n>', 'insert at most this many rows (vectors and posts) per second', number(0.1))
  .option('--json', 'print the result as JSON')
  .action(async (opts) => (await import('./replay.js')).replayCommand(opts));

program
  .command('backend')
  .description('Run the reference prediction backend (for development and demos)')
  .option('-p, --port <port>', 'port to listen on', portOption, 8000)
  .option('--host <host>', 'address to bind', '0.0.0.0')
  .action(async (opts) => (await import('./tools.js')).backendCommand(opts));

program
  .command('simulate')
  .description(
    'Insert realistic sensor readings for the pumps in PUMPS, and operator entries for its logbooks',
  )
  .option('-r, --rate <n>', 'timestamps per second per pump', number(0.01, 10_000), 1)
  .option('-m, --missing <p>', 'probability that a sensor reading is missing', number(0, 1), 0)
  .option(
    '-l, --late <p>',
    'probability that a reading arrives late, in a later transaction',
    number(0, 1),
    0,
  )
  .option('-o, --out-of-order <p>', 'probability that two timestamps are swapped', number(0, 1), 0)
  .option(
    '-s, --scenario <name>',
    'normal, bearing-failure or silent-sensor (one table stops after 20 s)',
    'normal',
  )
  .option('-n, --count <n>', 'stop after this many timestamps per pump', number(1))
  .option(
    '--logbook-every <s>',
    'simulated seconds between entries of each logbook stream in PUMPS (e.g. PUMPS_PROFILE=plant-2026-03)',
    number(0.01),
    180,
  )
  .action(async (opts) => (await import('./tools.js')).simulateCommand(opts));

program
  .command('generate-pumps')
  .description(
    'Write N synthetic pump definitions (for scale tests and benchmarks); use the folder as PUMPS_DIR',
  )
  .requiredOption('-o, --out <dir>', 'folder to write the definitions into')
  .option('-n, --count <n>', 'how many pumps', number(1, 10_000), 100)
  .option('-s, --sensors <n>', 'sensors per pump', number(1, 500), 20)
  .action(async (opts) => {
    const { generatePumps, writePumpDefinitions } = await import('../tools/generate-pumps.js');
    writePumpDefinitions(opts.out, generatePumps({ count: opts.count, sensors: opts.sensors }));
    process.stdout.write(`wrote ${opts.count} pump definitions to ${opts.out}\n`);
  });

program.hook('preAction', () => {
  process.exitCode = 0;
});

try {
  await program.parseAsync(process.argv);
} catch (err) {
  if (err instanceof ConfigError || err instanceof PrivilegeError) {
    process.stderr.write(`pump-monitor: ${err.message}\n`);
    process.exit(2);
  }
  if (err instanceof DatabaseUnavailableError) {
    process.stderr.write(`pump-monitor: ${err.message}\n`);
    process.exit(1);
  }
  // A command that met the database's refusal later than its first contact: still one line, no stack.
  if (isConnectFault(err)) {
    process.stderr.write(
      `pump-monitor: cannot reach the database: ${describePgError(err).replace(/\s*\n\s*/g, ' ')}\n`,
    );
    process.exit(1);
  }
  process.stderr.write(`pump-monitor: ${(err as Error).stack ?? String(err)}\n`);
  process.exit(1);
}
