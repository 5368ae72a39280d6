import type { Logger } from 'pino';
import type { DeadLetterSink } from '../delivery/dead-letter-sink.js';
import { describeFailure, type PostPipeline } from '../delivery/post-pipeline.js';
import type { Intake } from '../source/intake.js';
import type { Listener } from '../source/listener.js';
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
}

/**
 * Telemetry subscribes to the units' events: the counters of /status and /metrics, the page's channel
 * figures, predictions and recent errors. No unit calls telemetry itself.
 */
export function observe(t: Telemetry, u: Observed): void {
  u.intake.on('reading', (r, added) => {
    const stats = t.pump(r.pump);
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
    t.error(stats ? (pump as string) : null, `invalid notification on ${rej.channel}: ${rej.detail}`);
  });
  u.intake.on('failed', (channel, pump, err) => {
    t.readingsInvalid.inc({ pump: pump ?? 'unknown', reason: 'internal_error' });
    t.error(pump ?? null, `internal error on ${channel}: ${err.message}`);
  });
  for (const [pump, lane] of u.lanes) {
    const stats = t.pump(pump);
    lane.on('vector', (v, stored) => {
      if (!stored) {
        stats.vectors_suppressed += 1;
        t.vectors.inc({ pump, outcome: 'suppressed' });
      } else if (v.filled.length > 0) {
        stats.vectors_filled += 1;
        t.vectors.inc({ pump, outcome: 'filled' });
      }
    });
    lane.on('dropped', (_d, stored) => {
      if (!stored) {
        stats.vectors_suppressed += 1;
        t.vectors.inc({ pump, outcome: 'suppressed' });
        return;
      }
      stats.vectors_dropped += 1;
      t.vectors.inc({ pump, outcome: 'dropped' });
    });
    lane.on('sent', (row, result, latencyMs) => {
      if (result.kind === 'dead') {
        stats.vectors_dead += 1;
        t.vectors.inc({ pump, outcome: 'dead' });
        t.error(pump, `backend answered ${result.status} to the vector of ${row.tiempo}`);
        return;
      }
      stats.vectors_sent += 1;
      t.vectors.inc({ pump, outcome: 'sent' });
      if (latencyMs !== undefined) t.deliveryLatency.observe({ pump }, latencyMs / 1000);
      if (result.prediccion !== undefined) {
        t.prediction(pump, { tiempo_sensor: row.tiempo, prediccion: result.prediccion, at: Date.now() });
      }
    });
  }
  for (const [id, lane] of u.logbooks) {
    const stats = t.logbook(id);
    lane.on('entry', (outcome, stream, rowId, text) => {
      t.logbookEvents.inc({ logbook: id, outcome });
      if (outcome === 'received') stats.received += 1;
      else if (outcome === 'duplicate') stats.duplicate += 1;
      else if (outcome === 'invalid') stats.invalid += 1;
      else if (outcome === 'retried') stats.retried += 1;
      else if (outcome === 'dead') {
        stats.failed += 1;
        t.error(null, `logbook ${id}: entry ${rowId} of ${stream.table} not delivered`);
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
    t.error(r.pump, `per-sensor POST ${r.sensor.endpoint} id ${r.id}: ${describeFailure(result)}`);
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
    t.error(null, `LISTEN connection lost: ${reason}`);
  });
  u.listener.on('heartbeat', (ms) => t.heartbeatLatency.set(ms / 1000));
}
