import {
  BrokenCircuitError,
  type CircuitBreakerPolicy,
  CircuitState,
  ConsecutiveBreaker,
  circuitBreaker,
  DelegateBackoff,
  ExponentialBackoff,
  handleType,
  retry,
} from 'cockatiel';
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

class BudgetExhausted extends Error {
  constructor(readonly last: Error) {
    super(last.message);
  }
}

/**
 * Exponential backoff with jitter (half fixed, half random), capped; a Retry-After from the backend
 * takes precedence, and an open circuit is waited out rather than hammered.
 */
export function backoffDelay(attempt: number, baseMs: number, maxMs: number, random: () => number): number {
  const ceiling = Math.min(maxMs, baseMs * 2 ** Math.max(0, attempt - 1));
  return ceiling / 2 + (random() * ceiling) / 2;
}

/** Sends with retries, circuit breaking and a per-attempt timeout until success, a rejection, or the budget. */
export async function deliver(
  attempt: (signal: AbortSignal) => Promise<BackendAnswer>,
  opts: DeliveryOptions,
): Promise<DeliveryResult> {
  const random = opts.random ?? Math.random;
  let attempts = 0;
  let lastError: Error | undefined;
  const policy = retry(handleType(RetryableError).orType(BrokenCircuitError), {
    maxAttempts: Number.POSITIVE_INFINITY,
    backoff: new DelegateBackoff(
      (ctx: { attempt: number; result: { error?: Error } | { value: unknown } }) => {
        const err = 'error' in ctx.result ? ctx.result.error : undefined;
        let delay: number;
        // An open circuit: look again soon; the breaker itself decides when a trial call may pass.
        if (err instanceof BrokenCircuitError) delay = Math.min(opts.maxMs, Math.max(opts.baseMs, 250));
        else if (err instanceof RetryableError && err.retryAfterMs !== undefined)
          delay = Math.min(err.retryAfterMs, 300_000);
        else delay = backoffDelay(attempts, opts.baseMs, opts.maxMs, random);
        if (err) opts.onRetry?.(err, delay, attempts);
        return delay;
      },
    ),
  });
  try {
    const answer = await policy.execute(
      ({ signal }) =>
        opts.breaker.execute(async () => {
          if (lastError && attempts >= opts.maxAttempts) throw new BudgetExhausted(lastError);
          attempts += 1;
          try {
            const a = await attempt(signal);
            const verdict = classify(a.status);
            if (verdict === 'retry') {
              throw new RetryableError(`backend answered ${a.status}`, a.status, a.retryAfterMs);
            }
            return a;
          } catch (err) {
            lastError = err as Error;
            throw err;
          }
        }, signal),
      opts.signal,
    );
    return classify(answer.status) === 'ok'
      ? { kind: 'ok', answer, attempts }
      : { kind: 'rejected', answer, attempts };
  } catch (err) {
    if (opts.signal.aborted) return { kind: 'cancelled', attempts };
    if (err instanceof BudgetExhausted) return { kind: 'gave_up', error: err.last, attempts };
    return { kind: 'gave_up', error: err as Error, attempts };
  }
}
