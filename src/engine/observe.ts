import type { Logger } from 'pino';
import type { DeadLetterSink } from '../delivery/dead-letter-sink.js';
import type { PostPipeline } from '../delivery/post-pipeline.js';
import { describeFailure } from '../delivery/post-queue.js';
import type { Intake } from '../source/intake.js';
import type { Listener } from '../source/listener.js';
import { getOrAdd } from '../util/maps.js';
import type { LogbookLane } from './logbook-lane.js';
import type { PumpLane } from './pump-lane.js';
import type { Telemetry } from './telemetry.js';

export interface Observed {
  intake: Intake;
  lanes: Map<string, PumpLane>;
  logbooks: Map<string, LogbookLane>;
  posts: PostPipeline;
  deadLetters: DeadLetterSink;
  listener: Listener;
  log: Logger;
  /** How often each pump's summary is logged at info; 60 s. */
  summaryEveryMs?: number;
  /** The engine's lifetime: the summary timer stops with it. */
  signal?: AbortSignal;
}

/**
 * Telemetry subscribes to the units' events: the counters of /status and /metrics, the page's channel
 * figures, predictions and recent errors. No unit calls telemetry itself.
 */
export function observe(t: Telemetry, u: Observed): void {
  const summary = new PumpSummaries([...u.lanes.keys()]);
  u.intake.on('reading', (r, added) => {
    const stats = t.pump(r.pump);
    if (added === 'late' || added === 'conflicting') summary.of(r.pump)[added] += 1;
    stats.readings_received += 1;
    t.seen(r.pump, r.sensor.channel, r.valor, Date.now());
    if (added === 'late') {
      stats.readings_late += 1;
      t.readingsLate.inc({ pump: r.pump });
    } else if (added === 'conflicting') {
      stats.readings_conflicting += 1;
      t.readingsConflicting.inc({ pump: r.pump });
    }
  });
  u.intake.on('duplicate', (r) => {
    t.pump(r.pump).readings_duplicate += 1;
    t.readingsDuplicate.inc({ pump: r.pump });
  });
  u.intake.on('rejected', (rej, pump) => {
    const stats = pump === undefined ? undefined : t.knownPump(pump);
    if (stats) stats.readings_invalid += 1;
    t.readingsInvalid.inc({ pump: pump ?? 'unknown', reason: rej.reason });
    if (stats) summary.of(pump as string).invalid += 1;
    t.error(
      stats ? (pump as string) : null,
      `invalid notification on ${rej.channel}: ${rej.detail}`,
      'invalid',
      {
        channel: rej.channel,
        reason: rej.reason,
        detail: rej.detail,
      },
    );
  });
  u.intake.on('probe', (channel) => t.probes.inc({ channel }));
  u.intake.on('failed', (channel, pump, err) => {
    t.readingsInvalid.inc({ pump: pump ?? 'unknown', reason: 'internal_error' });
    t.error(pump ?? null, `internal error on ${channel}: ${err.message}`, 'internal', {
      channel,
      detail: err.message,
    });
  });
  for (const [pump, lane] of u.lanes) {
    const stats = t.pump(pump);
    const window = summary.of(pump);
    lane.on('vector', (v, stored) => {
      if (stored && v.filled.length > 0) window.filled += 1;
      if (!stored) {
        stats.vectors_suppressed += 1;
        t.vectors.inc({ pump, outcome: 'suppressed' });
      } else if (v.filled.length > 0) {
        stats.vectors_filled += 1;
        t.vectors.inc({ pump, outcome: 'filled' });
      }
    });
    lane.on('dropped', (d, stored) => {
      if (!stored) {
        stats.vectors_suppressed += 1;
        t.vectors.inc({ pump, outcome: 'suppressed' });
        return;
      }
      stats.vectors_dropped += 1;
      t.vectors.inc({ pump, outcome: 'dropped' });
      window.dropped += 1;
      for (const f of d.missing) window.missing.set(f, (window.missing.get(f) ?? 0) + 1);
      window.reasons.set(d.reason, (window.reasons.get(d.reason) ?? 0) + 1);
      t.dropped(pump, { tiempo_sensor: d.tiempo, reason: d.reason, missing: d.missing, at: Date.now() });
    });
    lane.on('sent', (row, result, latencyMs) => {
      if (result.kind === 'dead') {
        stats.vectors_dead += 1;
        window.dead += 1;
        t.vectors.inc({ pump, outcome: 'dead' });
        t.error(pump, `backend answered ${result.status} to the vector of ${row.tiempo}`, 'vectorDead', {
          status: result.status,
          tiempo: row.tiempo,
        });
        return;
      }
      stats.vectors_sent += 1;
      window.sent += 1;
      t.vectors.inc({ pump, outcome: 'sent' });
      if (latencyMs !== undefined) t.deliveryLatency.observe({ pump }, latencyMs / 1000);
      if (result.prediccion !== undefined) {
        t.prediction(pump, { tiempo_sensor: row.tiempo, prediccion: result.prediccion, at: Date.now() });
      }
    });
  }
  for (const [id, lane] of u.logbooks) {
    const stats = t.logbook(id);
    lane.on('probe', (channel) => t.probes.inc({ channel }));
    lane.on('entry', (outcome, stream, rowId, text, bitacora) => {
      listEntry(t, id, outcome, stream, rowId, text, bitacora);
      t.logbookEvents.inc({ logbook: id, outcome });
      if (outcome === 'received') stats.received += 1;
      else if (outcome === 'duplicate') stats.duplicate += 1;
      else if (outcome === 'invalid') stats.invalid += 1;
      else if (outcome === 'retried') stats.retried += 1;
      else if (outcome === 'dead') {
        stats.failed += 1;
        t.error(null, `logbook ${id}: entry ${rowId} of ${stream.table} not delivered`, 'logbookDead', {
          logbook: id,
          id: rowId ?? '?',
          table: stream.table,
        });
      } else if (outcome === 'sent') {
        stats.sent += 1;
        if (text !== undefined && rowId !== undefined) {
          stats.last_classification = { tabla: stream.tabla, id: rowId, clasificacion: text, at: Date.now() };
        }
      }
    });
  }
  u.posts.on('settled', (r, result) => {
    const stats = t.pump(r.pump);
    if (result.kind === 'ok') {
      stats.sensor_posts_ok += 1;
      const c = stats.channels.get(r.sensor.channel);
      if (c) c.lastAnswer = result.answer.body;
      return;
    }
    stats.sensor_posts_failed += 1;
    if (result.kind === 'cancelled') return;
    t.error(
      r.pump,
      `per-sensor POST ${r.sensor.endpoint} id ${r.id}: ${describeFailure(result)}`,
      'postFailed',
      {
        endpoint: r.sensor.endpoint,
        id: r.id,
        detail: describeFailure(result),
      },
    );
  });
  u.posts.on('deferring', (on, queued) => {
    if (on) u.log.warn({ queued }, 'per-sensor queue full; deferring posts to the database');
    else u.log.info('deferred per-sensor posts are back in the queue');
  });
  u.deadLetters.on('stored', (letter) =>
    t.deadLetters.inc({ pump: letter.pump ?? 'unknown', kind: letter.kind }),
  );
  u.listener.on('disconnected', (reason) => {
    t.reconnects.inc();
    t.error(null, `LISTEN connection lost: ${reason}`, 'listenLost', { detail: reason });
  });
  u.listener.on('heartbeat', (ms) => t.heartbeatLatency.set(ms / 1000));
  logSummaries(summary, u);
}

/** The logbook card's list of latest entries: each entry's step, in its own place. */
function listEntry(
  t: Telemetry,
  logbook: string,
  outcome: string,
  stream: { tabla: string; table: string },
  rowId: number | undefined,
  clasificacion: string | undefined,
  bitacora: string | null | undefined,
): void {
  if (rowId === undefined) return;
  const state = ({ received: 'received', retried: 'retrying', sent: 'sent', dead: 'failed' } as const)[
    outcome as 'received' | 'retried' | 'sent' | 'dead'
  ];
  if (!state) return;
  t.logbookEntry(logbook, { tabla: stream.tabla, table: stream.table, id: rowId }, state, {
    ...(bitacora !== undefined ? { text: bitacora } : {}),
    ...(clasificacion !== undefined ? { clasificacion } : {}),
  });
}

/** One pump's counts since its last summary line. */
interface SummaryWindow {
  sent: number;
  filled: number;
  dropped: number;
  dead: number;
  late: number;
  conflicting: number;
  invalid: number;
  /** Dropped groups by reason (expired, evicted). */
  reasons: Map<string, number>;
  /** Dropped groups by the field they lacked. */
  missing: Map<string, number>;
}

class PumpSummaries {
  private readonly windows = new Map<string, SummaryWindow>();

  constructor(pumps: string[]) {
    for (const p of pumps) this.of(p);
  }

  of(pump: string): SummaryWindow {
    return getOrAdd(this.windows, pump, fresh);
  }

  /** A copy of each pump's window; the window itself is emptied in place (the handlers hold it). */
  take(): [string, SummaryWindow][] {
    const out: [string, SummaryWindow][] = [];
    for (const [p, w] of this.windows) {
      out.push([p, { ...w }]);
      Object.assign(w, fresh());
    }
    return out;
  }
}

function fresh(): SummaryWindow {
  return {
    sent: 0,
    filled: 0,
    dropped: 0,
    dead: 0,
    late: 0,
    conflicting: 0,
    invalid: 0,
    reasons: new Map(),
    missing: new Map(),
  };
}

/** `a ×3, b ×1`, the most frequent first. */
function tally(m: Map<string, number>): string {
  return [...m.entries()]
    .sort((x, y) => y[1] - x[1])
    .map(([k, n]) => `${k} ×${n}`)
    .join(', ');
}

/**
 * The per-vector and per-reading events are logged at debug where they happen; this line says them at
 * info, once per interval and pump: vectors sent, filled and dropped (with the fields they lacked),
 * conflicting and late readings.
 */
function logSummaries(summary: PumpSummaries, u: Observed): void {
  const every = u.summaryEveryMs ?? 60_000;
  const log = u.log.child({ stage: 'summary' });
  const timer = setInterval(() => {
    for (const [pump, w] of summary.take()) {
      const seconds = Math.round(every / 1000);
      const parts = [`${w.sent} vectors sent (${w.filled} filled)`, `${w.dropped} dropped`];
      if (w.dropped > 0) parts[1] += ` (${tally(w.reasons)}; missing ${tally(w.missing)})`;
      parts.push(`${w.conflicting} conflicting readings`, `${w.late} late readings`);
      if (w.dead > 0) parts.push(`${w.dead} vectors rejected by the backend`);
      if (w.invalid > 0) parts.push(`${w.invalid} invalid notifications`);
      log.info(
        {
          pump,
          window_s: seconds,
          vectors_sent: w.sent,
          vectors_filled: w.filled,
          vectors_dropped: w.dropped,
          dropped_by_reason: Object.fromEntries(w.reasons),
          dropped_missing: Object.fromEntries(w.missing),
          vectors_dead: w.dead,
          readings_conflicting: w.conflicting,
          readings_late: w.late,
          readings_invalid: w.invalid,
        },
        `pump ${pump}, last ${seconds} s: ${parts.join(', ')}`,
      );
    }
  }, every);
  timer.unref();
  u.signal?.addEventListener('abort', () => clearInterval(timer), { once: true });
}
