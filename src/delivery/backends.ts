import type { Logger } from 'pino';
import type { Agent } from 'undici';
import type { Config } from '../config/env.js';
import { BackendClient } from './backend-client.js';
import { createBreaker, describeRouteFault, RouteGuard } from './policy.js';
import type { Backend } from './row-poster.js';

export interface BackendFactoryOptions {
  config: Pick<Config, 'pumps' | 'logbooks' | 'delivery' | 'apiKey'>;
  /** The keep-alive connections every client shares. */
  agent: Agent;
  logger: Logger;
  /** Every answer a backend gives: the pump or logbook, whether it was the unified route, its status. */
  onAnswer: (id: string, unified: boolean, status: number) => void;
}

/**
 * The one place backends are built: for each pump and each logbook its client, its circuit breaker and its
 * route guard (a refused route holds its deliveries, said once as it begins and ends); a logbook's client
 * has its own timeout (LOGBOOK_TIMEOUT_MS), so a slow classifier holds up nothing else.
 */
export function createBackends(o: BackendFactoryOptions): {
  pumps: Map<string, Backend>;
  logbooks: Map<string, Backend>;
} {
  const { config } = o;
  const backend = (id: string, baseUrl: string, timeoutMs: number, unifiedPath?: string): Backend => ({
    breaker: createBreaker({
      threshold: config.delivery.breakerThreshold,
      halfOpenAfterMs: config.delivery.breakerHalfOpenMs,
      maxHalfOpenAfterMs: config.delivery.breakerHalfOpenMaxMs,
    }),
    client: new BackendClient({
      baseUrl,
      apiKey: config.apiKey,
      timeoutMs,
      agent: o.agent,
      onAnswer: (path, status) => o.onAnswer(id, path === unifiedPath, status),
    }),
  });
  /** A refused route holds what goes to it: said once as it begins (error) and as it ends (warning). */
  const guarded = (b: Backend, urlEnv: string, log: Logger, held: string): Backend => {
    b.route = new RouteGuard((fault, was) => {
      if (fault) {
        log.error(
          { status: fault.status, ...(fault.location !== undefined ? { location: fault.location } : {}) },
          `backend route refused: ${describeRouteFault(fault)}; ${held}, none dead-lettered`,
        );
      } else if (was) {
        log.warn(
          { status: was.status, refusals: was.refusals },
          'backend route answers again; delivery resumes',
        );
      }
    }, urlEnv);
    return b;
  };
  const pumps = new Map<string, Backend>();
  for (const p of config.pumps) {
    const b = backend(p.id, p.baseUrl, config.delivery.timeoutMs, p.unifiedPath);
    const log = o.logger.child({ stage: 'delivery', pump: p.id });
    pumps.set(
      p.id,
      guarded(b, p.baseUrlEnv, log, 'vectors stay pending and per-sensor posts queued or deferred'),
    );
  }
  const logbooks = new Map<string, Backend>();
  for (const l of config.logbooks) {
    const log = o.logger.child({ stage: 'delivery', logbook: l.id });
    logbooks.set(
      l.id,
      guarded(backend(l.id, l.baseUrl, l.timeoutMs), l.baseUrlEnv, log, 'logbook entries stay queued'),
    );
  }
  return { pumps, logbooks };
}
