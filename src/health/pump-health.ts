import type { HealthDefinition } from '../config/pumps.js';

/** A pump's verdict. `unknown`: no answer from the backend for longer than `staleAfter` (or none yet). */
export type HealthState = 'normal' | 'warning' | 'alarm' | 'unknown';

export const HEALTH_STATES: readonly HealthState[] = ['normal', 'warning', 'alarm', 'unknown'];

/** One change of a verdict (a pump's, or a channel's: see channel-watch.ts). */
export interface Transition<S extends string = string> {
  from: S;
  to: S;
  /** The value that caused it: the failure probability, a channel's last value; null for staleness. */
  value: number | null;
  /** Epoch ms, on the unit's clock. */
  at: number;
}

const RANK: Record<Exclude<HealthState, 'unknown'>, number> = { normal: 0, warning: 1, alarm: 2 };

/** A streak of answers at or above one level: since when, and how many in a row. */
interface Streak {
  since: number;
  count: number;
}

/**
 * The verdict of one pump from the backend's answers, as a pure state machine: it is given each answer
 * (`answer`) and the passing of time (`tick`), both with their time, and returns the transition they
 * cause, if any. It reads no clock and does no I/O.
 *
 * - A level (warning, alarm) is taken once the probability stays at or above it for `onDelay.vectors`
 *   answers in a row, or for `onDelay.seconds` (on-delay); a higher level may be taken straight from a
 *   lower one, or from unknown.
 * - A level is left only when the probability stays below it by `recovery` points (hysteresis) for
 *   `offDelay` (answers in a row, or seconds: off-delay); it then goes to the level the answers stand at
 *   (an alarm whose answers stay near 70 % with recovery 5 becomes a warning).
 * - Without an answer for `staleAfter` seconds the verdict is `unknown`. The next answers judge afresh:
 *   a normal one at once, a warning or alarm after its on-delay.
 */
export class PumpHealth {
  private current: HealthState;
  private since: number;
  private lastAnswerAt: number;
  private lastValue: number | null = null;
  private warningStreak: Streak | undefined;
  private alarmStreak: Streak | undefined;
  /** Answers below each level's clear point (the level minus `recovery`). */
  private belowWarning: Streak | undefined;
  private belowAlarm: Streak | undefined;

  /**
   * `restored`: the last transition stored before a restart; its state holds, and the staleness clock
   * starts at `now` (the answers it was judged from are gone).
   */
  constructor(
    private readonly h: HealthDefinition,
    now: number,
    restored?: { state: HealthState; since: number; value: number | null },
  ) {
    this.current = restored?.state ?? 'unknown';
    this.since = restored?.since ?? now;
    this.lastAnswerAt = now;
    this.lastValue = restored?.value ?? null;
  }

  get state(): HealthState {
    return this.current;
  }

  /** When the current state began (epoch ms). */
  get stateSince(): number {
    return this.since;
  }

  /** The last failure probability answered (percent), or the one the restored state was judged from. */
  get value(): number | null {
    return this.lastValue;
  }

  /**
   * Starts the staleness clock afresh at `now`, keeping the state: the pump was not served here for a
   * while (a standby replica that just took it over), so the missing answers say nothing about it.
   */
  resume(now: number): void {
    this.lastAnswerAt = Math.max(this.lastAnswerAt, now);
  }

  /** One answer of the backend: the failure probability in percent, at `at`. */
  answer(probability: number, at: number): Transition<HealthState> | undefined {
    // A probability outside 0..100 is not one: it changes nothing (the unit counts and logs it).
    if (!isProbability(probability)) return undefined;
    this.lastAnswerAt = at;
    this.lastValue = probability;
    this.warningStreak = extend(this.warningStreak, probability >= this.h.warning, at);
    this.alarmStreak = extend(this.alarmStreak, probability >= this.h.alarm, at);
    this.belowWarning = extend(this.belowWarning, probability < this.h.warning - this.h.recovery, at);
    this.belowAlarm = extend(this.belowAlarm, probability < this.h.alarm - this.h.recovery, at);
    return this.judge(at, probability);
  }

  /** The passing of time: staleness, and an on-delay by time that has run out. */
  tick(now: number): Transition<HealthState> | undefined {
    if (this.current !== 'unknown' && now - this.lastAnswerAt > this.h.staleAfter * 1000) {
      this.warningStreak = undefined;
      this.alarmStreak = undefined;
      this.belowWarning = undefined;
      this.belowAlarm = undefined;
      return this.move('unknown', null, now);
    }
    if (now - this.lastAnswerAt > this.h.staleAfter * 1000) return undefined;
    if (this.lastValue === null) return undefined;
    return this.judge(now, this.lastValue);
  }

  private judge(at: number, value: number): Transition<HealthState> | undefined {
    const held = this.heldLevel(at);
    const raised = this.raisedLevel(at);
    const target = RANK[raised] > RANK[held] ? raised : held;
    if (this.current === 'unknown') {
      // From unknown a normal answer judges at once; a level waits for its on-delay like any rise.
      if (target === 'normal' && value < this.h.warning) return this.move('normal', value, at);
      if (target !== 'normal') return this.move(target, value, at);
      return undefined;
    }
    if (target !== this.current) return this.move(target, value, at);
    return undefined;
  }

  /**
   * The level the current state keeps, or falls to once the answers have stayed below a clear point for
   * the off-delay: never above the current one.
   */
  private heldLevel(at: number): Exclude<HealthState, 'unknown'> {
    const cur = this.current === 'unknown' ? 'normal' : this.current;
    if (cur === 'alarm' && !this.met(this.belowAlarm, at, this.h.offDelay)) return 'alarm';
    if (cur !== 'normal' && !this.met(this.belowWarning, at, this.h.offDelay)) return 'warning';
    return 'normal';
  }

  /** The highest level whose on-delay has been met by its current streak. */
  private raisedLevel(at: number): Exclude<HealthState, 'unknown'> {
    if (this.met(this.alarmStreak, at)) return 'alarm';
    if (this.met(this.warningStreak, at)) return 'warning';
    return 'normal';
  }

  private met(s: Streak | undefined, at: number, delay = this.h.onDelay): boolean {
    if (!s) return false;
    const { vectors, seconds } = delay;
    return s.count >= vectors || (seconds !== undefined && at - s.since >= seconds * 1000);
  }

  private move(to: HealthState, value: number | null, at: number): Transition<HealthState> {
    const t = { from: this.current, to, value, at };
    this.current = to;
    this.since = at;
    return t;
  }
}

function extend(s: Streak | undefined, above: boolean, at: number): Streak | undefined {
  if (!above) return undefined;
  return s ? { since: s.since, count: s.count + 1 } : { since: at, count: 1 };
}

/** A failure probability the backend may answer: a finite percentage, 0..100. */
export function isProbability(p: number): boolean {
  return Number.isFinite(p) && p >= 0 && p <= 100;
}
