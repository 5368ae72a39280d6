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

/** A backend's route refused: the status it answered, and for a redirect where it pointed. */
export interface RouteFault {
  status: number;
  /** A redirect's target (its Location header), when it gave one. */
  location?: string;
  /** When the fault was first seen (ms since the epoch). */
  since: number;
  /** Answers refused since then. */
  refusals: number;
  /** The variable that holds the backend's base URL (BASE_URL, BASE_URL_B, a definition's own). */
  urlEnv?: string;
}

/**
 * One per backend: whether its route is refused (a redirect, 401 or 403). That is a fault of the
 * configuration (the base URL, the API key), not of any reading or vector, so deliveries to it hold:
 * they wait and try again with backoff, nothing is dead-lettered for it, and the first other answer
 * (a fix on the backend's side) clears it. `onChange` hears it begin, change status, and end.
 */
export class RouteGuard {
  fault: RouteFault | undefined;

  constructor(
    private readonly onChange?: (fault: RouteFault | undefined, was: RouteFault | undefined) => void,
    private readonly urlEnv?: string,
  ) {}

  /** The route refused an answer. */
  refused(answer: BackendAnswer): void {
    const was = this.fault;
    if (was && was.status === answer.status && was.location === answer.location) {
      was.refusals += 1;
      return;
    }
    const fault: RouteFault = { status: answer.status, since: was?.since ?? Date.now(), refusals: 1 };
    if (answer.location !== undefined) fault.location = answer.location;
    if (this.urlEnv !== undefined) fault.urlEnv = this.urlEnv;
    this.fault = fault;
    this.onChange?.(fault, was);
  }

  /** The route answered something else: it is not refused (any more). */
  answered(): void {
    if (this.fault === undefined) return;
    const was = this.fault;
    this.fault = undefined;
    this.onChange?.(undefined, was);
  }
}

/** One line for an operator: what the route answered, and what to check. */
export function describeRouteFault(f: RouteFault): string {
  if (f.status >= 300 && f.status < 400) {
    return `backend answered ${f.status} (redirect${f.location ? ` to ${f.location}` : ', no Location'}): check ${f.urlEnv ?? 'the base URL'}`;
  }
  return f.status === 401
    ? 'backend answered 401 (the API key was refused): check API_KEY'
    : `backend answered ${f.status} (forbidden): check API_KEY and the backend's access rules`;
}

export interface DeliveryOptions {
  breaker: CircuitBreakerPolicy;
  /** Attempts that reached the backend (or failed to connect); waits on an open circuit do not count. */
  maxAttempts: number;
  baseMs: number;
  maxMs: number;
  signal: AbortSignal;
  /** The backend's route state: set by a refusal (3xx, 401, 403), cleared by any other answer. */
  route?: RouteGuard;
  random?: () => number;
  onRetry?: (err: Error, delayMs: number, attempt: number) => void;
  /** A refused route: the item holds and is tried again after `delayMs`. */
  onHold?: (answer: BackendAnswer, delayMs: number, holds: number) => void;
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
 *
 * A refused route (3xx, 401, 403: `hold`) is neither a rejection nor a failure of the item: it marks the
 * route guard, waits with backoff and tries again, for as long as it lasts. Those tries do not count
 * against the budget, and they do not open the circuit (the backend answers, promptly).
 */
export async function deliver(
  attempt: (signal: AbortSignal) => Promise<BackendAnswer>,
  opts: DeliveryOptions,
): Promise<DeliveryResult> {
  let attempts = 0;
  let holds = 0;
  // The attempt listens to the delivery's own signal, not the one the breaker hands on: a call that
  // waited for a half-open trial is run by cockatiel (3.2) with a signal that never aborts.
  const once = () => {
    attempts += 1;
    return attempt(opts.signal).then(failOnRetryStatus);
  };
  for (;;) {
    let delay: number;
    try {
      const answer = await opts.breaker.execute(once, opts.signal);
      const verdict = classify(answer.status);
      if (verdict === 'hold') {
        holds += 1;
        opts.route?.refused(answer);
        delay = backoffDelay(holds, opts.baseMs, opts.maxMs, opts.random ?? Math.random);
        opts.onHold?.(answer, delay, holds);
        if (!(await sleep(delay, opts.signal))) return { kind: 'cancelled', attempts: attempts - holds };
        continue;
      }
      opts.route?.answered();
      return verdict === 'ok'
        ? { kind: 'ok', answer, attempts: attempts - holds }
        : { kind: 'rejected', answer, attempts: attempts - holds };
    } catch (err) {
      if (opts.signal.aborted) return { kind: 'cancelled', attempts: attempts - holds };
      if (err instanceof BrokenCircuitError) {
        // An open circuit: look again soon; the breaker itself decides when a trial call may pass.
        delay = Math.min(opts.maxMs, Math.max(opts.baseMs, 250));
      } else if (err instanceof RetryableError) {
        // An answer, not a refusal of the route: whatever held it is over.
        if (err.status !== undefined) opts.route?.answered();
        if (attempts - holds >= opts.maxAttempts)
          return { kind: 'gave_up', error: err, attempts: attempts - holds };
        delay =
          err.retryAfterMs !== undefined
            ? Math.min(err.retryAfterMs, 300_000)
            : backoffDelay(attempts, opts.baseMs, opts.maxMs, opts.random ?? Math.random);
      } else {
        return { kind: 'gave_up', error: err as Error, attempts: attempts - holds };
      }
      opts.onRetry?.(err, delay, attempts - holds);
    }
    if (!(await sleep(delay, opts.signal))) return { kind: 'cancelled', attempts: attempts - holds };
  }
}

/** A retryable answer (408, 429, 5xx) counts as a failure for the breaker and the retry loop. */
function failOnRetryStatus(a: BackendAnswer): BackendAnswer {
  if (classify(a.status) === 'retry') {
    throw new RetryableError(`backend answered ${a.status}`, a.status, a.retryAfterMs, a.body);
  }
  return a;
}
