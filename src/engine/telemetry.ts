import client from 'prom-client';
import type { PumpConfig } from '../config/env.js';
import { parseReply } from '../delivery/vector-sender.js';

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

const HISTORY = 600;
const ERRORS = 50;
const RECENT_DROPPED = 20;
const RECENT_ENTRIES = 10;
const LOGBOOK_WORDS = 12;

/**
 * The engine's counters, kept twice on purpose: as plain numbers for /status and the page, and as
 * Prometheus metrics (in a registry of this engine's own, so several engines can run in one process).
 */
export class Telemetry {
  readonly registry = new client.Registry();
  readonly pumps = new Map<string, PumpStats>();
  readonly logbooks = new Map<string, LogbookStats>();
  readonly errors: ErrorEntry[] = [];

  readonly readingsReceived = this.counter('readings_received_total', 'Readings received', [
    'pump',
    'channel',
  ]);
  readonly readingsInvalid = this.counter('readings_invalid_total', 'Invalid readings, by reason', [
    'pump',
    'reason',
  ]);
  readonly readingsDuplicate = this.counter('readings_duplicate_total', 'Duplicate readings dropped', [
    'pump',
  ]);
  readonly readingsLate = this.counter('readings_late_total', 'Readings after their group closed', ['pump']);
  readonly readingsConflicting = this.counter(
    'readings_conflicting_total',
    'Readings of a second table for a field its timestamp already had (the first one wins)',
    ['pump'],
  );
  readonly logbookEvents = this.counter(
    'logbook_events_total',
    'Logbook entries by outcome (received, duplicate, invalid, sent, dead, retried)',
    ['logbook', 'outcome'],
  );
  readonly vectors = this.counter('vectors_total', 'Unified vectors by outcome', ['pump', 'outcome']);
  readonly backendResponses = this.counter('backend_responses_total', 'Backend answers by status', [
    'pump',
    'route',
    'status',
  ]);
  readonly reconnects = this.counter('reconnects_total', 'LISTEN reconnections', []);
  readonly catchUpRows = this.counter('catchup_rows_total', 'Rows read by catch-up', ['pump']);
  readonly deadLetters = this.counter('dead_letters_total', 'Dead letters written, by kind', [
    'pump',
    'kind',
  ]);
  readonly dbQueries = this.counter(
    'db_queries_total',
    "Round trips on the engine's connection pool (one per query, or per transaction of several)",
    [],
  );
  readonly deliveryLatency = new client.Histogram({
    name: 'pump_monitor_delivery_latency_seconds',
    help: 'From receiving the first reading of a timestamp to the backend answering 200 for its vector',
    labelNames: ['pump'],
    buckets: [0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
    registers: [this.registry],
  });
  readonly heartbeatLatency = new client.Gauge({
    name: 'pump_monitor_heartbeat_latency_seconds',
    help: 'Latency of the last heartbeat on the LISTEN connection',
    registers: [this.registry],
  });

  constructor(pumps: PumpConfig[]) {
    for (const p of pumps) {
      this.pumps.set(p.id, {
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
              received: this.readingsReceived.tally({ pump: p.id, channel: s.channel }),
            },
          ]),
        ),
      });
    }
  }

  /** A logbook's counters, created at first use. */
  logbook(id: string): LogbookStats {
    let s = this.logbooks.get(id);
    if (!s) {
      s = {
        received: 0,
        duplicate: 0,
        invalid: 0,
        sent: 0,
        failed: 0,
        retried: 0,
        last_classification: null,
        recent: [],
      };
      this.logbooks.set(id, s);
    }
    return s;
  }

  /** A gauge whose value is read when scraped. */
  gauge(
    name: string,
    help: string,
    labelNames: string[],
    read: (set: (labels: object, v: number) => void) => unknown,
  ) {
    return new client.Gauge({
      name: `pump_monitor_${name}`,
      help,
      labelNames,
      registers: [this.registry],
      async collect() {
        this.reset();
        await read((labels, v) => this.set(labels as Record<string, string>, v));
      },
    });
  }

  /** Per pump and route, the answer counters by status, each bound to its labels at first use. */
  private readonly answerCounters = new Map<string, Map<number, Tally>>();

  /** Counts one backend answer (status 0: none came). */
  backendAnswer(pump: string, unified: boolean, status: number): void {
    const route = unified ? 'unified' : 'sensor';
    const at = `${pump} ${route}`;
    let byStatus = this.answerCounters.get(at);
    if (!byStatus) {
      byStatus = new Map();
      this.answerCounters.set(at, byStatus);
    }
    let c = byStatus.get(status);
    if (!c) {
      c = this.backendResponses.tally({ pump, route, status: status === 0 ? 'none' : String(status) });
      byStatus.set(status, c);
    }
    c.inc();
  }

  pump(id: string): PumpStats {
    const s = this.pumps.get(id);
    if (!s) throw new Error(`unknown pump ${id}`);
    return s;
  }

  error(pump: string | null, message: string, kind?: string, args?: Record<string, string | number>): void {
    this.errors.push({ at: Date.now(), pump, message, ...(kind ? { kind, args: args ?? {} } : {}) });
    if (this.errors.length > ERRORS) this.errors.shift();
  }

  prediction(pump: string, p: PredictionPoint): void {
    const s = this.pump(pump);
    s.last_prediction = p;
    s.predictions.push(p);
    if (s.predictions.length > HISTORY) s.predictions.shift();
  }

  /** A dropped group, for the page's list of recent vectors. */
  dropped(pump: string, d: DroppedPoint): void {
    const s = this.pump(pump);
    s.recent_dropped.push(d);
    if (s.recent_dropped.length > RECENT_DROPPED) s.recent_dropped.shift();
  }

  /**
   * A logbook entry's news: a new entry is listed (with its first words when the text is known), a later
   * outcome updates it in place. Entries long gone from the list are not listed again.
   */
  logbookEntry(
    id: string,
    e: { tabla: string; table: string; id: number },
    state: LogbookEntryView['state'],
    o: { text?: string | null; clasificacion?: string } = {},
  ): void {
    const recent = this.logbook(id).recent;
    let entry = recent.find((x) => x.table === e.table && x.id === e.id);
    if (!entry) {
      entry = { ...e, at: Date.now(), words: null, state, clasificacion: null };
      recent.push(entry);
      if (recent.length > RECENT_ENTRIES) recent.shift();
    }
    entry.state = state;
    if (typeof o.text === 'string') entry.words = firstWords(o.text, LOGBOOK_WORDS);
    if (o.clasificacion !== undefined) entry.clasificacion = o.clasificacion;
  }

  /** A channel's classification as of its last answer (its body is read here, once). */
  classification(c: ChannelStats): { lastClass: number | null; anomalies: number | null } {
    if (c.lastAnswer !== null) {
      // Informational: a body we cannot read changes nothing.
      const { prediccion, contador_anomalias } = parseReply(c.lastAnswer);
      if (prediccion !== undefined) c.lastClass = prediccion;
      if (contador_anomalias !== undefined) c.anomalies = contador_anomalias;
      c.lastAnswer = null;
    }
    return { lastClass: c.lastClass, anomalies: c.anomalies };
  }

  seen(pump: string, channel: string, value: number, now: number): void {
    const c = this.pump(pump).channels.get(channel);
    if (!c) return;
    c.readings += 1;
    c.lastSeenAt = now;
    c.lastValue = value;
    c.rate.add(now);
    c.received.inc();
  }

  /** A counter, with `tally(labels)` for the cells that count on hot paths. */
  private counter(name: string, help: string, labelNames: string[]) {
    const cells: { labels: Record<string, string>; n: number }[] = [];
    const counter = new client.Counter({
      name: `pump_monitor_${name}`,
      help,
      labelNames,
      registers: [this.registry],
      collect() {
        for (const cell of cells) {
          if (cell.n === 0) continue;
          const n = cell.n;
          cell.n = 0;
          if (labelNames.length > 0) this.inc(cell.labels, n);
          else this.inc(n);
        }
      },
    });
    return Object.assign(counter, {
      tally(labels: Record<string, string> = {}): Tally {
        const cell = { labels, n: 0 };
        cells.push(cell);
        return {
          inc: (n = 1) => {
            cell.n += n;
          },
        };
      },
    });
  }
}

/** The first `n` words of a text, with an ellipsis when there were more (at most 160 characters). */
export function firstWords(text: string, n: number): string {
  const words = text.trim().split(/\s+/).filter(Boolean);
  let out = words.slice(0, n).join(' ');
  if (out.length > 160) out = out.slice(0, 160);
  return words.length > n || out.length < words.join(' ').length ? `${out}…` : out;
}
