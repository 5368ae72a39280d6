/** The source's limit: a bare LISTEN client in its own process counts the notifications of N rows. */
import type { CpuShare } from '../cpu.js';
import { type Env, fullGroups, timeoutFor, withPhase } from '../harness.js';
import type { ListenerCommand, ListenerMessage } from '../listener-runner.js';
import { now, round } from '../stats.js';

export interface ListenerResult {
  rows: number;
  transactions: number;
  insertMs: number;
  insertRowsPerS: number;
  lastNotificationMs: number;
  rowsPerS: number;
  cpu: CpuShare;
}

export function phaseListener(env: Env): Promise<ListenerResult> {
  return withPhase(env, { label: 'listener' }, async (ctx) => {
    const child = ctx.spawn<ListenerMessage, ListenerCommand>(
      'listener-runner.js',
      { DATABASE_URL: ctx.db.url },
      { command: { type: 'stop' }, graceMs: 5_000 },
    );
    await child.next('ready', 60_000);
    const timestamps = Math.ceil(env.opts.rows / env.sensorsPerTick);
    const groups = fullGroups(env, timestamps);
    const expected = timestamps * env.sensorsPerTick;
    const done = child.next('done', timeoutFor(expected, 500));
    child.send({ type: 'expect', n: expected });
    const ins = await ctx.inserter(env.opts.inserters);
    const meter = await ctx.meter(child.proc.pid);
    const { rows, firstAt } = await ins.burst(groups);
    const insertEnd = now();
    const d = await done;
    const { cpu } = await meter.stop();
    await ins.close();
    const elapsed = d.lastAt - firstAt;
    return {
      rows,
      transactions: groups.length,
      insertMs: round(insertEnd - firstAt, 0),
      insertRowsPerS: round((rows / (insertEnd - firstAt)) * 1000, 0),
      lastNotificationMs: round(elapsed, 0),
      rowsPerS: round((d.count / elapsed) * 1000, 0),
      cpu,
    };
  });
}
