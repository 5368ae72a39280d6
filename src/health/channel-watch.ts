import type { SensorDefinition } from '../config/pumps.js';
import type { Transition } from './pump-health.js';

/**
 * A channel's verdict. `waiting`: too few readings to know its cadence, and no cadence to borrow; `ok`:
 * readings come; `silent`: none for `silentAfter`; `flat`: the same value for `flatAfter` readings.
 * Silent wins over flat.
 */
export type ChannelState = 'waiting' | 'ok' | 'silent' | 'flat';

/** Intervals kept for the median cadence. */
const CADENCE_WINDOW = 31;
/** Intervals needed before a channel's own cadence is trusted. */
const CADENCE_MIN = 3;
/** A silence shorter than this is never judged (a cadence of a few milliseconds is a burst, not a rhythm). */
export const MIN_SILENT_MS = 2_000;

/**
 * One channel of one pump, as a pure state machine: it is given each reading (`reading`) and the passing
 * of time (`tick`), both with their time, and returns the transition they cause, if any.
 *
 * - Its cadence is the median interval between its live readings (catch-up rows arrive in bursts and
 *   teach nothing about it).
 * - It is silent after `silentAfter`: that many cadences, or seconds. Until its own cadence is known it
 *   may borrow one (its pump's other channels'), so a channel that never speaks still turns silent.
 * - It is flat after `flatAfter` readings in a row with the same value, when the definition asks.
 */
export class ChannelWatch {
  private current: ChannelState;
  private since: number;
  /** The last reading's time; before any, the watch's start (silence is counted from there). */
  private lastAt: number;
  private lastLiveAt: number | undefined;
  private readonly intervals: number[] = [];
  private lastValue: number | null = null;
  private sameCount = 0;
  private seen = false;

  constructor(
    readonly sensor: Pick<SensorDefinition, 'channel' | 'silentAfter' | 'flatAfter'>,
    now: number,
    restored?: { state: ChannelState; since: number },
  ) {
    this.current = restored?.state ?? 'waiting';
    this.since = restored?.since ?? now;
    this.lastAt = now;
  }

  get state(): ChannelState {
    return this.current;
  }

  get stateSince(): number {
    return this.since;
  }

  /** The last reading's time, undefined before the first. */
  get lastReadingAt(): number | undefined {
    return this.seen ? this.lastAt : undefined;
  }

  get lastReadingValue(): number | null {
    return this.lastValue;
  }

  /** The median interval between live readings (ms), once known. */
  get cadenceMs(): number | undefined {
    if (this.intervals.length < CADENCE_MIN) return undefined;
    const sorted = [...this.intervals].sort((a, b) => a - b);
    const mid = sorted.length >> 1;
    return sorted.length % 2
      ? (sorted[mid] as number)
      : ((sorted[mid - 1] as number) + (sorted[mid] as number)) / 2;
  }

  /** How long a silence makes it silent, with `borrowed` as cadence while its own is unknown. */
  silentAfterMs(borrowed?: number): number | undefined {
    const s = this.sensor.silentAfter;
    if ('seconds' in s) return s.seconds * 1000;
    const cadence = this.cadenceMs ?? borrowed;
    if (cadence === undefined) return undefined;
    return Math.max(MIN_SILENT_MS, s.cadences * cadence);
  }

  /** A reading at `at`; `live` false for a catch-up row. */
  reading(value: number, at: number, live: boolean): Transition<ChannelState> | undefined {
    if (live && this.lastLiveAt !== undefined && at > this.lastLiveAt) {
      this.intervals.push(at - this.lastLiveAt);
      if (this.intervals.length > CADENCE_WINDOW) this.intervals.shift();
    }
    if (live) this.lastLiveAt = at;
    this.lastAt = Math.max(this.lastAt, at);
    this.seen = true;
    this.sameCount = this.lastValue !== null && value === this.lastValue ? this.sameCount + 1 : 1;
    this.lastValue = value;
    const flat = this.sensor.flatAfter !== undefined && this.sameCount >= this.sensor.flatAfter;
    return this.move(flat ? 'flat' : 'ok', value, at);
  }

  /** The passing of time; `borrowed`: a cadence to use while the channel has none of its own. */
  tick(now: number, borrowed?: number): Transition<ChannelState> | undefined {
    if (this.current === 'silent') return undefined;
    const after = this.silentAfterMs(borrowed);
    if (after === undefined || now - this.lastAt <= after) return undefined;
    return this.move('silent', this.seen ? this.lastValue : null, now);
  }

  /**
   * Starts counting silence afresh at `now`, keeping the state: the pump was not watched for a while (a
   * standby replica that just took it over), so the gap says nothing about the channel.
   */
  resume(now: number): void {
    this.lastAt = Math.max(this.lastAt, now);
    this.lastLiveAt = undefined;
  }

  private move(to: ChannelState, value: number | null, at: number): Transition<ChannelState> | undefined {
    if (to === this.current) return undefined;
    const t = { from: this.current, to, value, at };
    this.current = to;
    this.since = at;
    return t;
  }
}
