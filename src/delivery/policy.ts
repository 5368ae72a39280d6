import {
  BrokenCircuitError,
  type CircuitBreakerPolicy,
  CircuitState,
  ConsecutiveBreaker,
  circuitBreaker,
  ExponentialBackoff,
  handleType,
} from 'cockatiel';
import { sleep } from '../util/clock.js';
import { type BackendAnswer, classify, RetryableError } from './backend-client.js';

export interface BreakerOptions {
  /** Consecutive failures that open the circuit. */
  threshold: number;
  /** First wait before a trial call; doubles while the backend stays down. */
  halfOpenAfterMs: number;
  maxHalfOpenAfterMs: number;
}

/** One breaker per backend: it opens on repeated retryable failures and lets a trial call through later. */
export function createBreaker(opts: BreakerOptions): CircuitBreakerPolicy {
  return circuitBreaker(handleType(RetryableError), {
    breaker: new ConsecutiveBreaker(opts.threshold),
    halfOpenAfter: new ExponentialBackoff({
      initialDelay: opts.halfOpenAfterMs,
      maxDelay: opts.maxHalfOpenAfterMs,
    }),
  });
}

export function breakerState(b: CircuitBreakerPolicy): 'closed' | 'open' | 'half-open' {
  switch (b.state) {
    case CircuitState.Closed:
      return 'closed';
    case CircuitState.HalfOpen:
      return 'half-open';
    default:
      return 'open';
  }
}

export interface DeliveryOptions {
  breaker: CircuitBreakerPolicy;
  /** Attempts that reached the backend (or failed to connect); waits on an open circuit do not count. */
  maxAttempts: number;
  baseMs: number;
  maxMs: number;
  signal: AbortSignal;
  random?: () => number;
  onRetry?: (err: Error, delayMs: number, attempt: number) => void;
}

export type DeliveryResult =
  | { kind: 'ok'; answer: BackendAnswer; attempts: number }
  | { kind: 'rejected'; answer: BackendAnswer; attempts: number }
  | { kind: 'gave_up'; error: Error; attempts: number }
  | { kind: 'cancelled'; attempts: number };

/**
 * Exponential backoff with jitter (half fixed, half random), capped; a Retry-After from the backend
 * takes precedence, and an open circuit is waited out rather than hammered.
 */
export function backoffDelay(attempt: number, baseMs: number, maxMs: number, random: () => number): number {
  const ceiling = Math.min(maxMs, baseMs * 2 ** Math.max(0, attempt - 1));
  return ceiling / 2 + (random() * ceiling) / 2;
}

/**
 * Sends with retries, circuit breaking and a per-attempt timeout until success, a rejection, or the budget.
 * A plain loop around the shared breaker: it runs for every per-sensor POST, so it allocates no policy of
 * its own, and a first attempt that succeeds costs one breaker call.
 */
export async function deliver(
  attempt: (signal: AbortSignal) => Promise<BackendAnswer>,
  opts: DeliveryOptions,
): Promise<DeliveryResult> {
  let attempts = 0;
  const once = ({ signal }: { signal: AbortSignal }) => {
    attempts += 1;
    return attempt(signal).then(failOnRetryStatus);
  };
  for (;;) {
    let delay: number;
    try {
      const answer = await opts.breaker.execute(once, opts.signal);
      return classify(answer.status) === 'ok'
        ? { kind: 'ok', answer, attempts }
        : { kind: 'rejected', answer, attempts };
    } catch (err) {
      if (opts.signal.aborted) return { kind: 'cancelled', attempts };
      if (err instanceof BrokenCircuitError) {
        // An open circuit: look again soon; the breaker itself decides when a trial call may pass.
        delay = Math.min(opts.maxMs, Math.max(opts.baseMs, 250));
      } else if (err instanceof RetryableError) {
        if (attempts >= opts.maxAttempts) return { kind: 'gave_up', error: err, attempts };
        delay =
          err.retryAfterMs !== undefined
            ? Math.min(err.retryAfterMs, 300_000)
            : backoffDelay(attempts, opts.baseMs, opts.maxMs, opts.random ?? Math.random);
      } else {
        return { kind: 'gave_up', error: err as Error, attempts };
      }
      opts.onRetry?.(err, delay, attempts);
    }
    if (!(await sleep(delay, opts.signal))) return { kind: 'cancelled', attempts };
  }
}

/** A retryable answer (408, 429, 5xx) counts as a failure for the breaker and the retry loop. */
function failOnRetryStatus(a: BackendAnswer): BackendAnswer {
  if (classify(a.status) === 'retry') {
    throw new RetryableError(`backend answered ${a.status}`, a.status, a.retryAfterMs, a.body);
  }
  return a;
}
