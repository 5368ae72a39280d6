import type pg from 'pg';
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { type CatchUpOptions, CatchUpRunner, takeRound } from '../../src/source/catch-up.js';
import type { SensorRow } from '../../src/store/sensor-rows.js';
import { waitFor } from '../helpers/wait.js';

/** A promise the test resolves when it chooses. */
function gate() {
  let open: () => void = () => {};
  const opened = new Promise<void>((resolve) => {
    open = resolve;
  });
  return { opened, open };
}

/**
 * A runner whose rounds the test holds open: each round waits for room (the runner's backpressure), then
 * for its gate. Records rounds begun, the most under way at once, and the order of events.
 */
function setup(o: { load?: () => number; listening?: () => boolean } = {}) {
  const controller = new AbortController();
  const gates: ReturnType<typeof gate>[] = [];
  const events: string[] = [];
  let active = 0;
  let most = 0;
  let loads = 0;
  let fail = false;
  const runner = new CatchUpRunner({
    pool: undefined as unknown as pg.Pool,
    pumps: () => [],
    ledger: { beginCatchUp: () => ({ from: 0, finish: () => {} }) },
    batch: 10,
    handle: () => {},
    units: [
      {
        load: () => {
          loads += 1;
          return o.load?.() ?? 0;
        },
      },
    ],
    signal: controller.signal,
    listening: o.listening ?? (() => true),
    logger: pino({ level: 'silent' }),
    round: async (r: CatchUpOptions) => {
      const n = gates.length + 1;
      const g = gate();
      gates.push(g);
      active += 1;
      most = Math.max(most, active);
      events.push(`round ${n} begins`);
      try {
        await r.capacity();
        events.push(`round ${n} has room`);
        await g.opened;
        if (fail) throw new Error('the database went away');
        return 0;
      } finally {
        active -= 1;
        events.push(`round ${n} ends`);
      }
    },
  });
  return {
    runner,
    controller,
    events,
    gates,
    rounds: () => gates.length,
    most: () => most,
    loads: () => loads,
    failNext: () => {
      fail = true;
    },
    /** Opens round n's gate (1-based), once it has begun. */
    finish: async (n: number) => {
      await waitFor(`round ${n} to begin`, () => gates.length >= n, 5_000);
      gates[n - 1]?.open();
    },
  };
}

describe('CatchUpRunner', () => {
  it('runs one round at a time; requests during a round run exactly one more after it', async () => {
    const s = setup();
    s.runner.request();
    await waitFor('the first round to begin', () => s.rounds() === 1, 5_000);
    // A reconnect, a takeover and a missed row, all during the round.
    s.runner.request();
    s.runner.request();
    s.runner.request();
    expect(s.rounds()).toBe(1);
    await s.finish(1);
    await s.finish(2);
    await waitFor('the runner to go idle', () => !s.runner.running, 5_000);
    expect(s.rounds()).toBe(2);
    expect(s.most()).toBe(1);
    expect(s.events).toEqual([
      'round 1 begins',
      'round 1 has room',
      'round 1 ends',
      'round 2 begins',
      'round 2 has room',
      'round 2 ends',
    ]);
    // Idle again: the next request starts a round of its own.
    s.runner.request();
    await s.finish(3);
    await waitFor('the runner to go idle', () => !s.runner.running, 5_000);
    expect(s.rounds()).toBe(3);
    await s.runner.stop();
  });

  it('waits for room while a unit is above 1, and goes on once it is not', async () => {
    let load = 2;
    const s = setup({ load: () => load });
    s.runner.request();
    await waitFor('the round to begin', () => s.rounds() === 1, 5_000);
    // Asked again and again while loaded: still waiting, not a single look.
    const before = s.loads();
    await waitFor('the runner to look at the load three more times', () => s.loads() >= before + 3, 5_000);
    expect(s.events).toEqual(['round 1 begins']);
    load = 1;
    await waitFor('the round to have room', () => s.events.includes('round 1 has room'), 5_000);
    await s.finish(1);
    await s.runner.stop();
    expect(s.rounds()).toBe(1);
  });

  it('stops cleanly: stop waits for the round under way, and no round starts after it', async () => {
    const s = setup();
    s.runner.request();
    await waitFor('the round to begin', () => s.rounds() === 1, 5_000);
    s.runner.request(); // would run one more, but the runner is stopping
    let stopped = false;
    const stopping = s.runner.stop().then(() => {
      stopped = true;
      s.events.push('stopped');
    });
    expect(stopped).toBe(false);
    await s.finish(1);
    await waitFor('the stop to resolve', () => stopped, 5_000);
    await stopping;
    expect(s.events).toEqual(['round 1 begins', 'round 1 has room', 'round 1 ends', 'stopped']);
    expect(s.runner.running).toBe(false);
    s.runner.request();
    expect(s.runner.running).toBe(false);
    expect(s.rounds()).toBe(1);
  });

  it('a stop ends a wait for room that would never come', async () => {
    const s = setup({ load: () => 5 });
    s.runner.request();
    await waitFor('the round to begin', () => s.rounds() === 1, 5_000);
    let stopped = false;
    const stopping = s.runner.stop().then(() => {
      stopped = true;
    });
    await waitFor('the round to stop waiting for room', () => s.events.includes('round 1 has room'), 5_000);
    await s.finish(1);
    await waitFor('the stop to resolve', () => stopped, 5_000);
    await stopping;
    expect(s.runner.running).toBe(false);
    expect(s.rounds()).toBe(1);
  });

  it('a failed round is tried again while listening, and not once the listener is down', async () => {
    let listening = true;
    const s = setup({ listening: () => listening });
    s.failNext();
    s.runner.request();
    await s.finish(1);
    // Retried after its pause: a second round, which fails too; then the listener is down.
    await waitFor('the retry', () => s.rounds() === 2, 5_000);
    listening = false;
    await s.finish(2);
    await waitFor('the runner to go idle', () => !s.runner.running, 5_000);
    expect(s.rounds()).toBe(2);
    await s.runner.stop();
  });
});

function rows(first: number, times: string[], posted = false): SensorRow[] {
  return times.map((t, i) => ({ id: first + i, valor: i, tiempo: t, t, posted }));
}

describe('takeRound', () => {
  it('hands over one row per key text and table a round: HH:MM of two days make two groups', () => {
    const a = { table: 'a', done: true, buffer: rows(1, ['23:59', '00:00', '23:59', '00:00', '00:01']) };
    const b = { table: 'b', done: true, buffer: rows(1, ['23:59', '00:00', '23:59']) };
    expect(takeRound([a, b]).map((r) => r.map((x) => x.id))).toEqual([
      [1, 2],
      [1, 2],
    ]);
    expect(takeRound([a, b]).map((r) => r.map((x) => x.id))).toEqual([[3, 4, 5], [3]]);
    expect(takeRound([a, b])).toEqual([[], []]);
  });

  it('keeps a pump tables in step: nothing past the earliest latest time of a table still being read', () => {
    const sparse = { table: 'sparse', done: false, buffer: rows(1, ['t01', 't03', 't05', 't07']) };
    const dense = { table: 'dense', done: false, buffer: rows(1, ['t01', 't02', 't03', 't04']) };
    const finished = { table: 'finished', done: true, buffer: rows(1, ['t01', 't09']) };
    const taken = takeRound([sparse, dense, finished]);
    expect(taken.map((r) => r.map((x) => x.t))).toEqual([
      ['t01', 't03'],
      ['t01', 't02', 't03', 't04'],
      ['t01'],
    ]);
    // What was not handed stays, in id order, for the next round.
    expect(sparse.buffer.map((r) => r.id)).toEqual([3, 4]);
    expect(finished.buffer.map((r) => r.id)).toEqual([2]);
  });

  it('two sensors of a pump on one table share its one row per key text', () => {
    const first = { table: 'shared', done: true, buffer: rows(1, ['k1', 'k2']) };
    const second = { table: 'shared', done: true, buffer: rows(1, ['k1', 'k2']) };
    expect(takeRound([first, second]).map((r) => r.length)).toEqual([2, 0]);
  });
});
