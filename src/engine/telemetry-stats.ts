import type { PumpConfig } from '../config/env.js';

/**
 * What the engine's counters hold for /status and the page: per pump and channel, per logbook, and the
 * recent errors; with their fresh values. Telemetry (telemetry.ts) keeps them and the Prometheus metrics.
 */

export interface PredictionPoint {
  tiempo_sensor: string;
  prediccion: number;
  at: number;
}

/** A group dropped below what can be sent: when, why, and the vector fields it lacked. */
export interface DroppedPoint {
  tiempo_sensor: string;
  reason: string;
  missing: string[];
  at: number;
}

/** One logbook entry as the page lists it: where from, its first words, and how its delivery stands. */
export interface LogbookEntryView {
  tabla: string;
  table: string;
  id: number;
  at: number;
  /** The entry's first words (up to LOGBOOK_WORDS), or null when the row's text was not read here. */
  words: string | null;
  state: 'received' | 'retrying' | 'sent' | 'failed';
  clasificacion: string | null;
}

export interface ChannelStats {
  channel: string;
  table: string;
  field: string;
  unit: string;
  description: string;
  /** Whether the sensor's field joins the pump's vector (false: it is only posted on its own). */
  inVector: boolean;
  /** The other pumps that read this sensor's table (a shared table): empty for most. */
  sharedWith: string[];
  readings: number;
  lastSeenAt: number | null;
  lastValue: number | null;
  /**
   * Per-sensor classification from the backend's last answer (1 normal, -1 anomaly) and its anomaly count.
   * Read them with `classification()`: the answer is kept as it came and read only when the page asks.
   */
  lastClass: number | null;
  anomalies: number | null;
  /** The last answer's body, not read yet. */
  lastAnswer: string | null;
  /** Arrivals over the last minute, for a rate. */
  rate: RateWindow;
  /** This channel's readings_received counter, bound to its labels once (the hot path). */
  received: Tally;
}

/**
 * One labelled cell of a counter, for the hot paths: an increment is one addition, and the counter takes the
 * sum when it is scraped. (prom-client's own `labels()` child hashes its labels again on every increment.)
 */
export interface Tally {
  inc(n?: number): void;
}

/** Counts events in one-second buckets over the last minute: constant time and memory per event. */
export class RateWindow {
  private readonly buckets = new Array<number>(60).fill(0);
  private readonly seconds = new Array<number>(60).fill(-1);

  add(nowMs: number): void {
    const s = Math.floor(nowMs / 1000);
    const i = s % 60;
    if (this.seconds[i] !== s) {
      this.seconds[i] = s;
      this.buckets[i] = 0;
    }
    this.buckets[i] = (this.buckets[i] as number) + 1;
  }

  /** Events in the last 60 seconds. */
  perMinute(nowMs: number): number {
    const s = Math.floor(nowMs / 1000);
    let n = 0;
    for (let i = 0; i < 60; i++) if (s - (this.seconds[i] as number) < 60) n += this.buckets[i] as number;
    return n;
  }
}

/** One logbook definition's counters, for /status and the page. */
export interface LogbookStats {
  received: number;
  duplicate: number;
  invalid: number;
  sent: number;
  failed: number;
  retried: number;
  /** The backend's classification of the last entry sent, with its stream and row. */
  last_classification: { tabla: string; id: number; clasificacion: string; at: number } | null;
  /** The latest entries, newest last (at most RECENT_ENTRIES). */
  recent: LogbookEntryView[];
}

export interface PumpStats {
  readings_received: number;
  readings_invalid: number;
  readings_duplicate: number;
  readings_late: number;
  /** A second table's reading for a field its timestamp already had (two channels, one field): not used. */
  readings_conflicting: number;
  vectors_sent: number;
  vectors_filled: number;
  vectors_dropped: number;
  vectors_dead: number;
  vectors_suppressed: number;
  sensor_posts_ok: number;
  sensor_posts_failed: number;
  catchup_rows: number;
  last_prediction: PredictionPoint | null;
  predictions: PredictionPoint[];
  /** The latest dropped groups, newest last (at most RECENT_DROPPED). */
  recent_dropped: DroppedPoint[];
  /** The vector's fields, in the order the assembler keeps them (the page's completeness columns). */
  vector_fields: string[];
  channels: Map<string, ChannelStats>;
}

export interface ErrorEntry {
  at: number;
  pump: string | null;
  message: string;
  /** What kind of error, with its details: the page says it in its own language (the message is English). */
  kind?: string;
  args?: Record<string, string | number>;
}

/** A pump's counters, all zero, with a channel for each of its sensors; `received` binds a channel's tally. */
export function newPumpStats(
  p: PumpConfig,
  pumps: PumpConfig[],
  received: (channel: string) => Tally,
): PumpStats {
  return {
    readings_received: 0,
    readings_invalid: 0,
    readings_duplicate: 0,
    readings_late: 0,
    readings_conflicting: 0,
    vectors_sent: 0,
    vectors_filled: 0,
    vectors_dropped: 0,
    vectors_dead: 0,
    vectors_suppressed: 0,
    sensor_posts_ok: 0,
    sensor_posts_failed: 0,
    catchup_rows: 0,
    last_prediction: null,
    predictions: [],
    recent_dropped: [],
    vector_fields: p.vectorFields ?? [
      ...new Set(p.sensors.filter((s) => s.inVector !== false).map((s) => s.field)),
    ],
    channels: new Map(
      p.sensors.map((s) => [
        s.channel,
        {
          channel: s.channel,
          table: s.table,
          field: s.field,
          unit: s.unit,
          description: s.description,
          inVector: s.inVector !== false,
          sharedWith: pumps
            .filter((o) => o.id !== p.id && o.sensors.some((x) => x.table === s.table))
            .map((o) => o.id),
          readings: 0,
          lastSeenAt: null,
          lastValue: null,
          lastClass: null,
          anomalies: null,
          lastAnswer: null,
          rate: new RateWindow(),
          received: received(s.channel),
        },
      ]),
    ),
  };
}

/** A logbook's counters, all zero. */
export function newLogbookStats(): LogbookStats {
  return {
    received: 0,
    duplicate: 0,
    invalid: 0,
    sent: 0,
    failed: 0,
    retried: 0,
    last_classification: null,
    recent: [],
  };
}

/** The first `n` words of a text, with an ellipsis when there were more (at most 160 characters). */
export function firstWords(text: string, n: number): string {
  const words = text.trim().split(/\s+/).filter(Boolean);
  let out = words.slice(0, n).join(' ');
  if (out.length > 160) out = out.slice(0, 160);
  return words.length > n || out.length < words.join(' ').length ? `${out}…` : out;
}
