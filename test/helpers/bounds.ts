import type { Config } from '../../src/config/env.js';
import { POST_LEDGER_MAX_BATCH } from '../../src/delivery/post-pipeline.js';

/**
 * What a process killed mid-stream may send again once restarted, by count:
 * - per-sensor posts: those in flight at the kill (SENSOR_POST_CONCURRENCY), plus what the ledger of
 *   settled posts had not written yet: at most one batch gathering and one being written;
 * - vectors: one per pump, the one whose delivery was being recorded (a sender records each delivery
 *   before it sends the next vector).
 */
export function crashReplayBound(config: Pick<Config, 'delivery' | 'pumps'>): {
  posts: number;
  vectors: number;
} {
  return {
    posts: config.delivery.sensorConcurrency + 2 * POST_LEDGER_MAX_BATCH,
    vectors: config.pumps.length,
  };
}
