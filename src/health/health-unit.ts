import type pg from 'pg';
import type { Logger } from 'pino';
import type { PumpDefinition } from '../config/pumps.js';
import { describePgError } from '../store/db.js';
import {
  deleteOldTransitions,
  insertTransitions,
  latestTransitions,
  PUMP_SUBJECT,
  recentTransitions,
  type StoredTransition,
} from '../store/health.js';
import { BatchWriter } from '../util/batch.js';
import type { Clock } from '../util/clock.js';
import { type ChannelState, ChannelWatch } from './channel-watch.js';
import {
  HEALTH_STATES,
  type HealthState,
  isProbability,
  PumpHealth,
  type Transition,
} from './pump-health.js';

/** Transitions are kept this long (each subject's latest for ever: it is the state a restart resumes). */
export const HEALTH_RETENTION_MS = 30 * 86_400_000;
/** Transitions kept in memory per pump for /status and the page. */
const RECENT = 20;
const CHANNEL_PREFIX = 'channel:';
const CHANNEL_STATES: readonly ChannelState[] = ['waiting', 'ok', 'silent', 'flat'];

export interface HealthUnitOptions {
  pumps: PumpDefinition[];
  clock: Clock;
  /** Whether this replica serves the pump now: a standby judges nothing (it receives nothing). */
  owns: (pump: string) => boolean;
  /**
   * Whether the LISTEN connection is up. While it is down no channel is judged silent (the connection is
   * the cause, and /readyz and PumpMonitorNotReady say so); silence counts afresh once it is back.
   */
  listening?: () => boolean;
  pool: pg.Pool;
  logger: Logger;
  /** Names the replica in the stored rows. */
  replica: string;
  /** The engine's lifetime: the transition writer stops with it. */
  signal: AbortSignal;
  /** How often time is judged (staleness, silence); 1 s. */
  tickMs?: number;
  /** How often old transitions are deleted; 60 s. */
  retentionEveryMs?: number;
}

/** A transition as /status and the page show it. */
export interface TransitionView {
  at: string;
  /** `pump`, or the channel. */
  subject: string;
  from: string;
  to: string;
  value: number | null;
}

interface PumpWatch {
  pump: PumpDefinition;
  health: PumpHealth;
  channels: Map<string, ChannelWatch>;
  recent: TransitionView[];
  /** Whether it was owned at the last tick: a pump taken over starts counting silence afresh. */
  watching: boolean;
  /** Answers whose probability was outside 0..100, ignored; and when the last one was logged. */
  outOfRange: number;
  outOfRangeLoggedAt: number | undefined;
  /** The stored states being read back as it became served: it is not judged until they are in. */
  reloading: boolean;
  lastAnswerAt: number | undefined;
}

/**
 * The verdicts of every pump and its channels: fed the backend's answers and the readings (see
 * observe-health.ts), it judges them with the pure machines of pump-health.ts and channel-watch.ts on its
 * clock, stores each transition (health_transitions), restores the last states at start, and shows them
 * in /status and /metrics.
 */
export class HealthUnit {
  private readonly watches = new Map<string, PumpWatch>();
  private readonly writer: BatchWriter<StoredTransition>;
  private timers: NodeJS.Timeout[] = [];
  private wasListening = true;

  constructor(private readonly o: HealthUnitOptions) {
    const now = o.clock.now();
    for (const p of o.pumps) {
      this.watches.set(p.id, {
        pump: p,
        health: new PumpHealth(p.health, now),
        channels: new Map(p.sensors.map((s) => [s.channel, new ChannelWatch(s, now)])),
        recent: [],
        watching: false,
        reloading: false,
        outOfRange: 0,
        outOfRangeLoggedAt: undefined,
        lastAnswerAt: undefined,
      });
    }
    this.writer = new BatchWriter((items) => insertTransitions(o.pool, items, o.replica), {
      name: 'health_transitions',
      maxBatch: 200,
      retryMs: 1_000,
      lingerMs: 50,
      signal: o.signal,
      onError: (err, n) =>
        o.logger.warn({ err: describePgError(err), items: n }, 'writing health transitions failed; retrying'),
    });
  }

  /** Resumes each pump's and channel's last stored state, and its recent history. */
  async restore(db: pg.Pool | pg.ClientBase, ids = [...this.watches.keys()]): Promise<void> {
    // Transitions of this process still on their way to the table must be in what is read back.
    await this.writer.flush();
    const now = this.o.clock.now();
    const latest = await latestTransitions(db, ids);
    const recent = await recentTransitions(db, ids, RECENT);
    for (const id of ids) {
      const w = this.watches.get(id);
      if (w) w.recent = [];
    }
    for (const t of latest) {
      const w = this.watches.get(t.pump);
      if (!w) continue;
      if (t.subject === PUMP_SUBJECT) {
        if (!(HEALTH_STATES as readonly string[]).includes(t.to)) continue;
        w.health = new PumpHealth(w.pump.health, now, {
          state: t.to as HealthState,
          since: t.at,
          value: t.value,
        });
      } else if (t.subject.startsWith(CHANNEL_PREFIX)) {
        const channel = t.subject.slice(CHANNEL_PREFIX.length);
        const sensor = w.pump.sensors.find((s) => s.channel === channel);
        if (!sensor || !(CHANNEL_STATES as readonly string[]).includes(t.to)) continue;
        w.channels.set(channel, new ChannelWatch(sensor, now, { state: t.to as ChannelState, since: t.at }));
      }
    }
    for (const t of recent) this.watches.get(t.pump)?.recent.push(view(t));
  }

  start(): void {
    this.timers.push(setInterval(() => this.tick(), this.o.tickMs ?? 1_000));
    this.timers.push(setInterval(() => void this.prune(), this.o.retentionEveryMs ?? 60_000));
  }

  /** Stops judging time; `flush()` then stores what is left (the engine does, within its deadline). */
  stop(): void {
    for (const t of this.timers) clearInterval(t);
    this.timers = [];
  }

  /** An answer of the backend to one of the pump's vectors: its failure probability in percent. */
  answer(pump: string, probability: number): void {
    const w = this.watches.get(pump);
    if (!w) return;
    const at = this.o.clock.now();
    if (!isProbability(probability)) {
      // Counted, and logged at most once a minute per pump: a backend answering nonsense every vector.
      w.outOfRange += 1;
      if (w.outOfRangeLoggedAt === undefined || at - w.outOfRangeLoggedAt >= 60_000) {
        w.outOfRangeLoggedAt = at;
        this.o.logger.warn(
          { pump, prediccion: probability, ignored: w.outOfRange },
          'the backend answered a failure probability outside 0..100; the verdict ignores it',
        );
      }
      return;
    }
    w.lastAnswerAt = at;
    this.record(w, PUMP_SUBJECT, w.health.answer(probability, at));
  }

  /** A reading of one of the pump's channels, received at `at`; `live` false for a catch-up row. */
  reading(pump: string, channel: string, value: number, at: number, live: boolean): void {
    const w = this.watches.get(pump);
    const c = w?.channels.get(channel);
    if (!w || !c) return;
    this.record(w, CHANNEL_PREFIX + channel, c.reading(value, at, live));
  }

  /** Judges the passing of time for the pumps this replica serves. */
  tick(now = this.o.clock.now()): void {
    const listening = this.o.listening?.() ?? true;
    const resumed = listening && !this.wasListening;
    this.wasListening = listening;
    for (const w of this.watches.values()) {
      const owned = this.o.owns(w.pump.id);
      if (!owned) {
        w.watching = false;
        continue;
      }
      if (w.reloading) continue;
      if (!w.watching) {
        // Served from now on (at start, or taken over from another replica): the states stored until now,
        // by whichever replica served it, are the ones to go on from; silence and staleness count afresh.
        w.watching = true;
        w.reloading = true;
        w.health.resume(now);
        for (const c of w.channels.values()) c.resume(now);
        void this.restore(this.o.pool, [w.pump.id])
          .catch((err) =>
            this.o.logger.warn(
              { err: describePgError(err), pump: w.pump.id },
              'reloading health states failed',
            ),
          )
          .finally(() => {
            w.reloading = false;
          });
        continue;
      }
      this.record(w, PUMP_SUBJECT, w.health.tick(now));
      if (resumed) for (const c of w.channels.values()) c.resume(now);
      if (!listening) continue;
      const borrowed = median([...w.channels.values()].map((c) => c.cadenceMs));
      for (const [channel, c] of w.channels) this.record(w, CHANNEL_PREFIX + channel, c.tick(now, borrowed));
    }
  }

  /** Deletes transitions past their retention; a failure is logged and the next round tries again. */
  async prune(): Promise<number> {
    try {
      let total = 0;
      for (let i = 0; i < 50; i++) {
        const n = await deleteOldTransitions(this.o.pool, HEALTH_RETENTION_MS, 1_000);
        total += n;
        if (n < 1_000) break;
      }
      return total;
    } catch (err) {
      this.o.logger.warn({ err: describePgError(err) }, 'deleting old health transitions failed');
      return 0;
    }
  }

  /** Waits until every transition so far is stored. */
  flush(): Promise<void> {
    return this.writer.flush();
  }

  /** A pump's verdict, its channels' and its recent history, for /status and the page. */
  view(pump: string) {
    const w = this.watches.get(pump);
    if (!w) return null;
    const { warning, alarm, recovery, staleAfter } = w.pump.health;
    const borrowed = median([...w.channels.values()].map((c) => c.cadenceMs));
    const channels: Record<string, unknown> = {};
    const silent: string[] = [];
    const flat: string[] = [];
    for (const [channel, c] of w.channels) {
      if (c.state === 'silent') silent.push(channel);
      if (c.state === 'flat') flat.push(channel);
      const last = c.lastReadingAt;
      channels[channel] = {
        state: c.state,
        since: iso(c.stateSince),
        last_reading_at: last === undefined ? null : iso(last),
        cadence_ms: c.cadenceMs ?? null,
        silent_after_ms: c.silentAfterMs(borrowed) ?? null,
        flat_after: c.sensor.flatAfter ?? null,
      };
    }
    return {
      state: w.health.state,
      since: iso(w.health.stateSince),
      value: w.health.value,
      judged: this.o.owns(pump) && !w.reloading,
      last_answer_at: w.lastAnswerAt === undefined ? null : iso(w.lastAnswerAt),
      answers_out_of_range: w.outOfRange,
      levels: { warning, alarm, recovery },
      stale_after_s: staleAfter,
      silent,
      flat,
      channels,
      transitions: w.recent,
    };
  }

  /** Prometheus gauges, read from the current states at each scrape; only pumps this replica serves. */
  registerMetrics(gauge: GaugeFactory): void {
    const owned = () => [...this.watches.values()].filter((w) => this.o.owns(w.pump.id));
    gauge(
      'failure_probability',
      'The last failure probability answered by the backend, in percent',
      ['pump'],
      (set) => {
        for (const w of owned()) if (w.health.value !== null) set({ pump: w.pump.id }, w.health.value);
      },
    );
    gauge('pump_health', "The pump's verdict: 1 for its current state", ['pump', 'state'], (set) => {
      for (const w of owned())
        for (const s of HEALTH_STATES) set({ pump: w.pump.id, state: s }, w.health.state === s ? 1 : 0);
    });
    gauge(
      'channel_last_reading_timestamp_seconds',
      'When the channel last gave a reading (Unix seconds); absent before its first one',
      ['pump', 'channel'],
      (set) => {
        for (const w of owned())
          for (const [channel, c] of w.channels) {
            const at = c.lastReadingAt;
            if (at !== undefined) set({ pump: w.pump.id, channel }, at / 1000);
          }
      },
    );
    const marks = [
      ['silent', 'silent (no reading for its silentAfter)'],
      ['flat', 'flat (one value for its flatAfter readings)'],
    ] as const;
    for (const [state, what] of marks) {
      gauge(`channel_${state}`, `1 while the channel is ${what}`, ['pump', 'channel'], (set) => {
        for (const w of owned())
          for (const [channel, c] of w.channels) set({ pump: w.pump.id, channel }, c.state === state ? 1 : 0);
      });
    }
  }

  private record(w: PumpWatch, subject: string, t: Transition | undefined): void {
    if (!t) return;
    // A channel's first reading (waiting → ok) is no news: kept in memory, not in the history.
    if (subject !== PUMP_SUBJECT && t.from === 'waiting' && t.to === 'ok') return;
    const stored: StoredTransition = { pump: w.pump.id, subject, ...t };
    this.writer.push(stored);
    w.recent.unshift(view(stored));
    if (w.recent.length > RECENT) w.recent.pop();
    const line = { pump: w.pump.id, subject, from: t.from, to: t.to, value: t.value };
    const who =
      subject === PUMP_SUBJECT
        ? `pump ${w.pump.id}`
        : `pump ${w.pump.id} channel ${subject.slice(CHANNEL_PREFIX.length)}`;
    // A channel's mark is on the page, in /status, the metrics and the alerts: logged at debug, so a stream
    // that stops (every channel silent at once) floods no log. A pump's verdict: info, and warn for alarm.
    if (subject !== PUMP_SUBJECT) this.o.logger.debug(line, `${who} is now ${t.to}`);
    else if (t.to === 'alarm') this.o.logger.warn(line, `${who} is now ${t.to}`);
    else this.o.logger.info(line, `${who} is now ${t.to}`);
  }
}

export type GaugeFactory = (
  name: string,
  help: string,
  labels: string[],
  read: (set: (labels: object, v: number) => void) => void,
) => unknown;

function view(t: StoredTransition): TransitionView {
  return {
    at: iso(t.at),
    subject: t.subject.startsWith(CHANNEL_PREFIX) ? t.subject.slice(CHANNEL_PREFIX.length) : t.subject,
    from: t.from,
    to: t.to,
    value: t.value,
  };
}

function iso(ms: number): string {
  return new Date(ms).toISOString();
}

function median(xs: (number | undefined)[]): number | undefined {
  const v = xs.filter((x): x is number => x !== undefined).sort((a, b) => a - b);
  if (v.length === 0) return undefined;
  const mid = v.length >> 1;
  return v.length % 2 ? v[mid] : ((v[mid - 1] as number) + (v[mid] as number)) / 2;
}
