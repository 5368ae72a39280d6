/**
 * `npm run test:mutations`: runs the fault test files and test/integration/engine.test.ts once without a
 * mutation (the baseline) and once per delivery mutation injected below the engine (test/mutations/
 * inject.ts), and reports which files caught each: a file catches a mutation when a test of it that passed
 * in the baseline fails under the mutation.
 *
 *   npm run test:mutations [-- --only dup-post,fresh-key] [--files test/fault/faults.test.ts,...]
 *                          [--no-baseline] [--timeout-min 30] [--budget-min N] [--every N]
 *
 * `--budget-min N` ends the whole within N minutes: a run starts only while it can end (at its timeout)
 * inside the budget; the mutations left are named in the table as not run.
 *
 * `--every N` mutates every N-th eligible request of each process instead of the injector's default
 * (every 25th per-sensor post, every 10th vector); the runs are then labelled `<mutation>-every<N>`.
 *
 * Each run is `vitest run --config vitest.mutations.config.ts --reporter=json`; its JSON, its output and
 * the injector's log of every mutation applied are kept under test-artifacts/mutations/, and the table is
 * printed and written to test-artifacts/mutations/table.md.
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join, relative, resolve } from 'node:path';
import { MUTATIONS } from '../test/mutations/inject.js';

const root = resolve(import.meta.dirname, '..');
const out = join(root, 'test-artifacts', 'mutations');

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

const defaultFiles = [
  ...readdirSync(join(root, 'test/fault'))
    .filter((f) => f.endsWith('.test.ts'))
    .sort()
    .map((f) => `test/fault/${f}`),
  'test/integration/engine.test.ts',
];
const files = arg('files')?.split(',') ?? defaultFiles;
const only = arg('only')?.split(',') ?? [...MUTATIONS];
for (const m of only)
  if (!(MUTATIONS as readonly string[]).includes(m)) throw new Error(`unknown mutation ${m}`);
const baseline = !process.argv.includes('--no-baseline');
const timeoutMs = Number(arg('timeout-min') ?? 30) * 60_000;
const every = arg('every');
const budgetMs =
  arg('budget-min') === undefined ? Number.POSITIVE_INFINITY : Number(arg('budget-min')) * 60_000;
const begun = Date.now();
/** Whether a run that may last its whole timeout still ends within the budget. */
const fits = () => Date.now() - begun + timeoutMs <= budgetMs;
const notRun: string[] = [];
if (every !== undefined && !/^[1-9]\d*$/.test(every)) throw new Error('--every: a positive integer');

interface Assertion {
  fullName: string;
  status: string;
  failureMessages: string[];
}
interface FileResult {
  name: string;
  status: string;
  message?: string;
  assertionResults: Assertion[];
}
interface Run {
  label: string;
  seconds: number;
  /** Per file (relative path): each test's status, and its first failure line. */
  tests: Map<string, Map<string, { status: string; why: string }>>;
  /** Mutations applied, per file. */
  applied: Map<string, number>;
}

/** One vitest run of `files`, killed (by its PID) past the timeout. */
async function run(label: string, mutation: string | undefined): Promise<Run> {
  mkdirSync(out, { recursive: true });
  const json = join(out, `${label}.json`);
  const log = join(out, `${label}.log`);
  rmSync(json, { force: true });
  rmSync(log, { force: true });
  const env: NodeJS.ProcessEnv = { ...process.env };
  for (const k of Object.keys(env)) if (k.startsWith('PUMP_MONITOR_MUTATION')) delete env[k];
  if (mutation) {
    env.PUMP_MONITOR_MUTATION = mutation;
    env.PUMP_MONITOR_MUTATION_LOG = log;
    if (every !== undefined) env.PUMP_MONITOR_MUTATION_EVERY = every;
  }
  const started = Date.now();
  const child = spawn(
    process.execPath,
    [
      join(root, 'node_modules/vitest/vitest.mjs'),
      'run',
      '--config',
      'vitest.mutations.config.ts',
      '--reporter=json',
      `--outputFile=${json}`,
      ...files,
    ],
    { cwd: root, env, stdio: ['ignore', 'pipe', 'pipe'], detached: true },
  );
  const output: Buffer[] = [];
  child.stdout?.on('data', (c: Buffer) => output.push(c));
  child.stderr?.on('data', (c: Buffer) => output.push(c));
  // Past the timeout: SIGINT first, so that vitest's global set-up stops its PostgreSQL and removes its
  // temporary cluster (which holds the cluster's password); SIGKILL if it is still there 20 s later.
  let kill: NodeJS.Timeout | undefined;
  const timer = setTimeout(() => {
    console.error(`${label}: past ${timeoutMs / 60_000} min, stopping vitest (pid ${child.pid})`);
    const signal = (sig: NodeJS.Signals) => {
      try {
        if (child.pid) process.kill(-child.pid, sig);
      } catch {
        // the group is gone already
      }
    };
    signal('SIGINT');
    kill = setTimeout(() => signal('SIGKILL'), 20_000);
  }, timeoutMs);
  await new Promise<void>((r) => child.once('exit', () => r()));
  clearTimeout(timer);
  clearTimeout(kill);
  writeFileSync(join(out, `${label}.out.txt`), Buffer.concat(output));
  const seconds = Math.round((Date.now() - started) / 1000);
  const tests = new Map<string, Map<string, { status: string; why: string }>>();
  if (existsSync(json)) {
    const report = JSON.parse(readFileSync(json, 'utf8')) as { testResults: FileResult[] };
    for (const f of report.testResults) {
      const byTest = new Map<string, { status: string; why: string }>();
      for (const a of f.assertionResults)
        byTest.set(a.fullName, { status: a.status, why: firstLine(a.failureMessages[0] ?? '') });
      // A file that failed outside any test (a hook, an import) shows as one failed pseudo-test.
      if (f.status === 'failed' && f.assertionResults.every((a) => a.status !== 'failed'))
        byTest.set('(file)', { status: 'failed', why: firstLine(f.message ?? '') });
      tests.set(relative(root, f.name), byTest);
    }
  }
  const applied = new Map<string, number>();
  if (existsSync(log))
    for (const line of readFileSync(log, 'utf8').split('\n')) {
      if (!line) continue;
      const file = relative(root, (JSON.parse(line) as { file: string }).file || root) || '(unknown)';
      applied.set(file, (applied.get(file) ?? 0) + 1);
    }
  return { label, seconds, tests, applied };
}

function firstLine(s: string): string {
  return (
    s
      .split('\n')
      .find((l) => l.trim() !== '')
      ?.trim()
      .slice(0, 160) ?? ''
  );
}

const runs: Run[] = [];
let base: Run | undefined;
if (baseline) {
  base = await run('baseline', undefined);
  console.log(`baseline: ${base.seconds} s`);
}
for (const m of only) {
  if (!fits()) {
    notRun.push(m);
    console.log(`${m}: not run, it might not end within --budget-min`);
    continue;
  }
  const r = await run(every === undefined ? m : `${m}-every${every}`, m);
  runs.push(r);
  console.log(
    `${m}: ${r.seconds} s, ${[...r.applied.values()].reduce((a, b) => a + b, 0)} mutations applied`,
  );
}

/**
 * A cell: `caught k/n` (k tests of the n that passed in the baseline failed), `missed`, or `not applied`
 * when the injector never fired during that file; `broken baseline` when no test of the file passed.
 */
function cell(file: string, r: Run): string {
  const now = r.tests.get(file);
  if (!now) return 'no result';
  const before = base?.tests.get(file);
  const usable = [...now.keys()].filter((t) => !before || before.get(t)?.status === 'passed');
  if (usable.length === 0) return 'broken baseline';
  const failed = usable.filter((t) => now.get(t)?.status === 'failed');
  const applied = r.applied.get(file) ?? 0;
  if (failed.length > 0) return `caught ${failed.length}/${usable.length}`;
  return applied === 0 ? 'not applied' : 'missed';
}

const lines = [
  `| File | ${runs.map((r) => `\`${r.label}\``).join(' | ')} |`,
  `| --- | ${runs.map(() => '---').join(' | ')} |`,
  ...files.map((f) => `| \`${f}\` | ${runs.map((r) => cell(f, r)).join(' | ')} |`),
  `| mutations applied | ${runs.map((r) => [...r.applied.values()].reduce((a, b) => a + b, 0)).join(' | ')} |`,
];
const details: string[] = [];
if (base) {
  for (const [file, tests] of base.tests)
    for (const [name, t] of tests)
      if (t.status !== 'passed') details.push(`- baseline: ${file} › ${name}: ${t.status} ${t.why}`);
}
for (const r of runs)
  for (const [file, tests] of r.tests)
    for (const [name, t] of tests)
      if (t.status === 'failed' && (!base || base.tests.get(file)?.get(name)?.status === 'passed'))
        details.push(`- ${r.label}: ${file} › ${name}: ${t.why}`);
const table = [
  ...lines,
  '',
  `Run times: ${[...(base ? [base] : []), ...runs].map((r) => `${r.label} ${r.seconds} s`).join(', ')}.`,
  ...(notRun.length > 0 ? ['', `Not run within --budget-min: ${notRun.join(', ')}.`] : []),
  '',
  ...details,
  '',
].join('\n');
writeFileSync(join(out, 'table.md'), table);
console.log(table);
