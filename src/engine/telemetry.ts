import client from 'prom-client';
import type { PumpConfig } from '../config/env.js';
import { parseReply } from '../model/payload.js';
import { getOrAdd } from '../util/maps.js';
import {
  type ChannelStats,
  type DroppedPoint,
  type ErrorEntry,
  firstWords,
  type LogbookEntryView,
  type LogbookStats,
  newLogbookStats,
  newPumpStats,
  type PredictionPoint,
  type PumpStats,
  type Tally,
} from './telemetry-stats.js';

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
  private readonly pumps = new Map<string, PumpStats>();
  private readonly logbooks = new Map<string, LogbookStats>();
  private readonly errors: ErrorEntry[] = [];

  readonly readingsReceived = this.counter('readings_received_total', 'Readings received', [
    'pump',
    'channel',
  ]);
  readonly readingsInvalid = this.counter('readings_invalid_total', 'Invalid readings, by reason', [
    'pump',
    'reason',
  ]);
  readonly probes = this.counter('probes_total', 'Probes of pump-monitor diagnose, by channel', ['channel']);
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
      this.pumps.set(
        p.id,
        newPumpStats(p, pumps, (channel) => this.readingsReceived.tally({ pump: p.id, channel })),
      );
    }
  }

  /** A logbook's counters, created at first use. */
  logbook(id: string): LogbookStats {
    return getOrAdd(this.logbooks, id, newLogbookStats);
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
    // Once per post: the counter found without a closure; made the first time only.
    const counter =
      this.answerCounters.get(at)?.get(status) ??
      getOrAdd(
        getOrAdd(this.answerCounters, at, () => new Map()),
        status,
        () => this.backendResponses.tally({ pump, route, status: status === 0 ? 'none' : String(status) }),
      );
    counter.inc();
  }

  pump(id: string): PumpStats {
    const s = this.pumps.get(id);
    if (!s) throw new Error(`unknown pump ${id}`);
    return s;
  }

  /** A configured pump's counters, or undefined for an id that names none (a payload's claim). */
  knownPump(id: string): PumpStats | undefined {
    return this.pumps.get(id);
  }

  /** The last `n` errors, newest first. */
  recentErrors(n: number): ErrorEntry[] {
    return this.errors.slice(-n).reverse();
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
