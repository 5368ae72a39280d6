import { describe, expect, it } from 'vitest';
import { type HealthDefinition, parsePumpDefinition } from '../../src/config/pumps.js';
import { ChannelWatch, MIN_SILENT_MS } from '../../src/health/channel-watch.js';
import { PumpHealth } from '../../src/health/pump-health.js';
import { ManualClock } from '../../src/util/clock.js';

const S = 1000;

function health(over: Partial<HealthDefinition> = {}): HealthDefinition {
  return {
    warning: 50,
    alarm: 80,
    onDelay: { vectors: 3 },
    // Most cases below leave a level on the first answer past its clear point; one tests the off-delay.
    offDelay: { vectors: 1 },
    recovery: 5,
    staleAfter: 60,
    ...over,
  };
}

/** Feeds answers one second apart on the clock; returns each answer's resulting state. */
function feed(h: PumpHealth, clock: ManualClock, values: number[]): string[] {
  return values.map((v) => {
    clock.advance(S);
    h.answer(v, clock.now());
    return h.state;
  });
}

describe('pump health: on-delay, hysteresis, clear, unknown', () => {
  it('starts unknown and takes normal from the first normal answer', () => {
    const clock = new ManualClock(1_000_000);
    const h = new PumpHealth(health(), clock.now());
    expect(h.state).toBe('unknown');
    clock.advance(S);
    const t = h.answer(12, clock.now());
    expect(t).toEqual({ from: 'unknown', to: 'normal', value: 12, at: clock.now() });
    expect(h.stateSince).toBe(clock.now());
  });

  it('takes warning only after the on-delay by count: N answers in a row at or above the level', () => {
    const clock = new ManualClock(0);
    const h = new PumpHealth(health(), clock.now());
    feed(h, clock, [10]);
    // Two above, one below: the streak is broken, no warning.
    expect(feed(h, clock, [55, 60, 40])).toEqual(['normal', 'normal', 'normal']);
    expect(feed(h, clock, [55, 60])).toEqual(['normal', 'normal']);
    const before = clock.now();
    clock.advance(S);
    const t = h.answer(58, clock.now());
    expect(t).toMatchObject({ from: 'normal', to: 'warning', value: 58 });
    expect(h.stateSince).toBeGreaterThan(before);
  });

  it('takes a level after the on-delay by time even with fewer answers, also on a tick', () => {
    const clock = new ManualClock(0);
    const h = new PumpHealth(health({ onDelay: { vectors: 100, seconds: 10 } }), clock.now());
    feed(h, clock, [10]);
    clock.advance(S);
    expect(h.answer(90, clock.now())).toBeUndefined();
    clock.advance(9 * S);
    expect(h.tick(clock.now())).toBeUndefined();
    clock.advance(S);
    // Held for 10 s with no further answer: the tick raises it, straight to alarm.
    expect(h.tick(clock.now())).toMatchObject({ from: 'normal', to: 'alarm', value: 90 });
  });

  it('goes from normal through warning into alarm as the probability climbs (the failing bearing)', () => {
    const clock = new ManualClock(0);
    const h = new PumpHealth(health(), clock.now());
    const states = feed(h, clock, [20, 40, 52, 58, 63, 70, 81, 86, 92, 97, 100]);
    expect(states).toEqual([
      'normal',
      'normal',
      'normal',
      'normal',
      'warning',
      'warning',
      'warning',
      'warning',
      'alarm',
      'alarm',
      'alarm',
    ]);
  });

  it('keeps a level inside its recovery margin (hysteresis) and clears below it', () => {
    const clock = new ManualClock(0);
    const h = new PumpHealth(health(), clock.now());
    feed(h, clock, [90, 90, 90, 90]);
    expect(h.state).toBe('alarm');
    // 76 is below the alarm level but inside its 5-point margin: still alarm.
    expect(feed(h, clock, [79, 76, 75.5])).toEqual(['alarm', 'alarm', 'alarm']);
    // 74 leaves the alarm, to the level it stands at: warning, at once.
    clock.advance(S);
    expect(h.answer(74, clock.now())).toMatchObject({ from: 'alarm', to: 'warning', value: 74 });
    // Back above 80 once: the on-delay applies again before alarm.
    expect(feed(h, clock, [82, 47, 46])).toEqual(['warning', 'warning', 'warning']);
    clock.advance(S);
    expect(h.answer(44.9, clock.now())).toMatchObject({ from: 'warning', to: 'normal' });
  });

  it('leaves a level only after the off-delay: N answers in a row below its clear point, or T seconds', () => {
    const clock = new ManualClock(0);
    const h = new PumpHealth(health({ offDelay: { vectors: 3, seconds: 20 } }), clock.now());
    feed(h, clock, [90, 90, 90]);
    expect(h.state).toBe('alarm');
    // Dips below 75 broken by one answer inside the margin: still alarm.
    expect(feed(h, clock, [60, 70, 78, 60, 65])).toEqual(['alarm', 'alarm', 'alarm', 'alarm', 'alarm']);
    clock.advance(S);
    expect(h.answer(62, clock.now())).toMatchObject({ from: 'alarm', to: 'warning', value: 62 });
    // By time: one answer below 45, then 20 s without answers: the tick clears it.
    clock.advance(S);
    expect(h.answer(30, clock.now())).toBeUndefined();
    clock.advance(19 * S);
    expect(h.tick(clock.now())).toBeUndefined();
    clock.advance(S);
    expect(h.tick(clock.now())).toMatchObject({ from: 'warning', to: 'normal', value: 30 });
  });

  it('clears an alarm straight to normal on a low answer', () => {
    const clock = new ManualClock(0);
    const h = new PumpHealth(health(), clock.now());
    feed(h, clock, [95, 95, 95]);
    expect(h.state).toBe('alarm');
    clock.advance(S);
    expect(h.answer(10, clock.now())).toMatchObject({ from: 'alarm', to: 'normal', value: 10 });
  });

  it('becomes unknown after staleAfter without an answer, and judges afresh after', () => {
    const clock = new ManualClock(0);
    const h = new PumpHealth(health({ staleAfter: 30 }), clock.now());
    feed(h, clock, [95, 95, 95]);
    expect(h.state).toBe('alarm');
    clock.advance(30 * S);
    expect(h.tick(clock.now())).toBeUndefined();
    clock.advance(1);
    expect(h.tick(clock.now())).toMatchObject({ from: 'alarm', to: 'unknown', value: null });
    expect(h.tick(clock.now() + 60 * S)).toBeUndefined();
    // A high answer after staleness waits for its on-delay: unknown until then.
    expect(feed(h, clock, [95, 95])).toEqual(['unknown', 'unknown']);
    expect(feed(h, clock, [95])).toEqual(['alarm']);
  });

  it('without any answer, a restored state goes unknown after staleAfter from the restart', () => {
    const clock = new ManualClock(5_000_000);
    const h = new PumpHealth(health({ staleAfter: 10 }), clock.now(), {
      state: 'alarm',
      since: 1_000,
      value: 91,
    });
    expect(h.state).toBe('alarm');
    expect(h.stateSince).toBe(1_000);
    expect(h.value).toBe(91);
    clock.advance(10 * S);
    expect(h.tick(clock.now())).toBeUndefined();
    clock.advance(S);
    expect(h.tick(clock.now())).toMatchObject({ from: 'alarm', to: 'unknown' });
  });

  it('a restored alarm stays an alarm on answers inside its margin (no new on-delay); answers outside 0..100 are ignored', () => {
    const clock = new ManualClock(0);
    const h = new PumpHealth(health(), clock.now(), { state: 'alarm', since: 0, value: 88 });
    expect(feed(h, clock, [77, Number.NaN, 78])).toEqual(['alarm', 'alarm', 'alarm']);
    // Not probabilities: no change, and they break no streak.
    const n = new PumpHealth(health(), 0);
    feed(n, clock, [10]);
    expect(feed(n, clock, [60, -5, 1e9, Number.POSITIVE_INFINITY, 60, 60])).toEqual([
      'normal',
      'normal',
      'normal',
      'normal',
      'normal',
      'warning',
    ]);
    expect(n.value).toBe(60);
  });
});

describe('channel watch: cadence, silent, flat', () => {
  const sensor = (over: object = {}) => ({
    channel: 'canal_x',
    silentAfter: { cadences: 5 } as { cadences: number } | { seconds: number },
    flatAfter: undefined as number | undefined,
    ...over,
  });

  it('learns its cadence from live readings (median) and turns silent after N cadences, then clears', () => {
    const clock = new ManualClock(0);
    const c = new ChannelWatch(sensor(), clock.now());
    expect(c.state).toBe('waiting');
    // Intervals 1 s, 1 s, 1 s, one 10 s gap: the median stays 1 s.
    for (const step of [0, 1, 1, 1, 10, 1]) {
      clock.advance(step * S);
      c.reading(5 + step, clock.now(), true);
    }
    expect(c.cadenceMs).toBe(S);
    expect(c.state).toBe('ok');
    clock.advance(5 * S);
    expect(c.tick(clock.now())).toBeUndefined();
    clock.advance(1);
    const t = c.tick(clock.now());
    expect(t).toMatchObject({ from: 'ok', to: 'silent' });
    expect(c.stateSince).toBe(clock.now());
    clock.advance(60 * S);
    expect(c.tick(clock.now())).toBeUndefined();
    expect(c.reading(7, clock.now(), true)).toMatchObject({ from: 'silent', to: 'ok', value: 7 });
  });

  it('catch-up rows count as readings but teach no cadence', () => {
    const clock = new ManualClock(0);
    const c = new ChannelWatch(sensor(), clock.now());
    for (let i = 0; i < 10; i++) c.reading(i, clock.now() + i, false);
    expect(c.cadenceMs).toBeUndefined();
    expect(c.lastReadingAt).toBe(9);
    // No cadence of its own and none to borrow: never judged silent.
    expect(c.tick(clock.now() + 3_600 * S)).toBeUndefined();
  });

  it('a channel that never speaks turns silent on a borrowed cadence, counted from the start', () => {
    const clock = new ManualClock(0);
    const c = new ChannelWatch(sensor(), clock.now());
    clock.advance(4 * S);
    expect(c.tick(clock.now(), S)).toBeUndefined();
    clock.advance(S + 1);
    expect(c.tick(clock.now(), S)).toMatchObject({ from: 'waiting', to: 'silent', value: null });
    expect(c.lastReadingAt).toBeUndefined();
  });

  it('a set time: silentAfter.seconds, whatever the cadence; never shorter than the floor for cadences', () => {
    const clock = new ManualClock(0);
    const c = new ChannelWatch(sensor({ silentAfter: { seconds: 3 } }), clock.now());
    c.reading(1, clock.now(), true);
    clock.advance(3 * S);
    expect(c.tick(clock.now())).toBeUndefined();
    clock.advance(1);
    expect(c.tick(clock.now())?.to).toBe('silent');
    const fast = new ChannelWatch(sensor(), 0);
    for (let i = 0; i < 5; i++) fast.reading(i, i * 10, true);
    expect(fast.silentAfterMs()).toBe(MIN_SILENT_MS);
  });

  it('turns flat after flatAfter equal readings and clears on a change; silent wins over flat', () => {
    const clock = new ManualClock(0);
    const c = new ChannelWatch(sensor({ flatAfter: 4 }), clock.now());
    const states: string[] = [];
    for (const v of [1, 2, 2, 2, 2, 2, 3]) {
      clock.advance(S);
      c.reading(v, clock.now(), true);
      states.push(c.state);
    }
    expect(states).toEqual(['ok', 'ok', 'ok', 'ok', 'flat', 'flat', 'ok']);
    for (const v of [3, 3, 3]) {
      clock.advance(S);
      c.reading(v, clock.now(), true);
    }
    expect(c.state).toBe('flat');
    clock.advance(20 * S);
    expect(c.tick(clock.now())).toMatchObject({ from: 'flat', to: 'silent' });
  });

  it('without flatAfter a constant channel is never flat', () => {
    const c = new ChannelWatch(sensor(), 0);
    for (let i = 0; i < 100; i++) c.reading(4.2, i * S, true);
    expect(c.state).toBe('ok');
  });

  it('a restored silent channel stays silent until a reading; resume() restarts the silence count', () => {
    const clock = new ManualClock(100 * S);
    const c = new ChannelWatch(sensor(), clock.now(), { state: 'silent', since: 5 * S });
    expect(c.state).toBe('silent');
    expect(c.stateSince).toBe(5 * S);
    expect(c.tick(clock.now() + 3_600 * S, S)).toBeUndefined();
    expect(c.reading(1, clock.now(), true)?.to).toBe('ok');
    const d = new ChannelWatch(sensor(), 0);
    d.resume(100 * S);
    expect(d.tick(100 * S + 4 * S, S)).toBeUndefined();
  });
});

describe('health in the pump definition', () => {
  const base = {
    id: 'X',
    name: 'Bomba X',
    baseUrlEnv: 'BASE_URL',
    pathPrefix: '/sensores',
    unifiedPath: '/predecir',
    minFields: 1,
    sensors: [{ channel: 'canal_x', table: 'x', field: 'x', endpoint: '/x' }],
  };

  it('has the issue defaults: 50 % and 80 %, on-delay 3 and off-delay 5 vectors, 10 points, silent after 5 cadences, no flat', () => {
    const p = parsePumpDefinition(base, 'x.json');
    expect(p.health).toEqual({
      warning: 50,
      alarm: 80,
      onDelay: { vectors: 3 },
      offDelay: { vectors: 5 },
      recovery: 10,
      staleAfter: 120,
    });
    expect(p.sensors[0]?.silentAfter).toEqual({ cadences: 5 });
    expect(p.sensors[0]?.flatAfter).toBeUndefined();
  });

  it('rejects levels that cannot work, in one line naming the file and the key', () => {
    const bad: [object, RegExp][] = [
      [
        { health: { warning: 90, alarm: 80 } },
        /x\.json: pump X health\.warning 90 must be below health\.alarm 80/,
      ],
      [{ health: { recovery: 60 } }, /health\.recovery 60 exceeds health\.warning 50/],
      [{ health: { alarm: 120 } }, /x\.json at health\.alarm/],
      [{ health: { onDelay: { vectors: 0 } } }, /at health\.onDelay\.vectors/],
      [{ health: { staleAfter: -1 } }, /at health\.staleAfter/],
      [{ health: { warnig: 40 } }, /at health/],
    ];
    for (const [over, message] of bad) {
      expect(() => parsePumpDefinition({ ...base, ...over }, 'x.json')).toThrow(message);
    }
    const sensorBad: [object, RegExp][] = [
      [{ silentAfter: { cadences: 0 } }, /at sensors\.0\.silentAfter/],
      [{ silentAfter: { minutes: 3 } }, /at sensors\.0\.silentAfter/],
      [{ flatAfter: 1 }, /at sensors\.0\.flatAfter/],
    ];
    for (const [over, message] of sensorBad) {
      const sensors = [{ ...base.sensors[0], ...over }];
      expect(() => parsePumpDefinition({ ...base, sensors }, 'x.json')).toThrow(message);
    }
  });
});
