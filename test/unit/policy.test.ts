import { describe, expect, it } from 'vitest';
import { type BackendAnswer, classify, RetryableError } from '../../src/delivery/backend-client.js';
import {
  breakerState,
  createBreaker,
  type DeliveryOptions,
  deliver,
  RouteGuard,
} from '../../src/delivery/policy.js';

function options(over: Partial<DeliveryOptions> = {}): DeliveryOptions {
  return {
    breaker: createBreaker({ threshold: 100, halfOpenAfterMs: 50, maxHalfOpenAfterMs: 50 }),
    maxAttempts: 4,
    baseMs: 1,
    maxMs: 4,
    signal: new AbortController().signal,
    random: () => 0.5,
    ...over,
  };
}

/** An attempt function that answers from a script, one entry per call; a string is thrown as a connection error. */
function scripted(...script: (number | string)[]) {
  const calls: number[] = [];
  const fn = async (): Promise<BackendAnswer> => {
    const next = script[Math.min(calls.length, script.length - 1)] as number | string;
    calls.push(Date.now());
    if (typeof next === 'string') throw new RetryableError(next);
    return {
      status: next,
      body: '{}',
      ...(next === 429 ? { retryAfterMs: 120 } : {}),
      ...(next === 301 ? { location: 'https://moved.example/api' } : {}),
    };
  };
  return { fn, calls };
}

describe('classify', () => {
  it('a redirect, 401 and 403 hold; 400, 404 and 422 are the item rejected; 408, 429 and 5xx retried', () => {
    expect([301, 302, 307, 308, 401, 403].map(classify)).toEqual(Array(6).fill('hold'));
    expect([400, 404, 409, 422].map(classify)).toEqual(Array(4).fill('reject'));
    expect([408, 429, 500, 503].map(classify)).toEqual(Array(4).fill('retry'));
    expect(classify(200)).toBe('ok');
  });
});

describe('deliver', () => {
  it('holds on a refused route without spending the budget, marks the guard, and clears it on the next answer', async () => {
    const changes: (number | undefined)[] = [];
    const route = new RouteGuard((fault) => changes.push(fault?.status));
    const { fn, calls } = scripted(301, 301, 401, 401, 401, 401, 200);
    const seen: (number | undefined)[] = [];
    const r = await deliver(
      async () => {
        const a = await fn();
        seen.push(route.fault?.status);
        return a;
      },
      options({ maxAttempts: 1, route }),
    );
    // Six refusals and a budget of one attempt: the refusals did not count.
    expect(r).toMatchObject({ kind: 'ok', attempts: 1 });
    expect(calls).toHaveLength(7);
    // Before the 3rd call the guard held the 301 with its target; the change to 401 and the end were heard.
    expect(seen[2]).toBe(301);
    expect(changes).toEqual([301, 401, undefined]);
    expect(route.fault).toBeUndefined();
  });

  it('a refused route records the redirect target; a rejection of the item still ends the delivery', async () => {
    const route = new RouteGuard();
    const { fn } = scripted(301, 422);
    const r = await deliver(fn, options({ route }));
    expect(r).toMatchObject({ kind: 'rejected', answer: { status: 422 }, attempts: 1 });
    expect(route.fault).toBeUndefined();
    const held = new RouteGuard();
    const { fn: moved } = scripted(301);
    const controller = new AbortController();
    const pending = deliver(moved, options({ route: held, signal: controller.signal }));
    await new Promise((res) => setTimeout(res, 30));
    expect(held.fault).toMatchObject({ status: 301, location: 'https://moved.example/api' });
    expect(held.fault?.refusals).toBeGreaterThan(1);
    controller.abort();
    expect(await pending).toMatchObject({ kind: 'cancelled' });
  });

  it('returns ok on the first 200, after one attempt', async () => {
    const { fn, calls } = scripted(200);
    expect(await deliver(fn, options())).toMatchObject({ kind: 'ok', attempts: 1 });
    expect(calls).toHaveLength(1);
  });

  it('retries connection failures and 5xx, then succeeds', async () => {
    const { fn } = scripted('ECONNREFUSED', 503, 500, 200);
    expect(await deliver(fn, options())).toMatchObject({ kind: 'ok', attempts: 4 });
  });

  it('gives up when the budget is spent, with the last error', async () => {
    const { fn, calls } = scripted(503);
    const r = await deliver(fn, options({ maxAttempts: 3 }));
    expect(r).toMatchObject({ kind: 'gave_up', attempts: 3 });
    expect(r.kind === 'gave_up' && r.error.message).toBe('backend answered 503');
    expect(calls).toHaveLength(3);
  });

  it('does not retry a 4xx other than 408 and 429', async () => {
    const { fn, calls } = scripted(404, 200);
    expect(await deliver(fn, options())).toMatchObject({ kind: 'rejected', answer: { status: 404 } });
    expect(calls).toHaveLength(1);
  });

  it('waits at least Retry-After before the next attempt', async () => {
    const { fn, calls } = scripted(429, 200);
    expect(await deliver(fn, options())).toMatchObject({ kind: 'ok', attempts: 2 });
    expect((calls[1] as number) - (calls[0] as number)).toBeGreaterThanOrEqual(115);
  });

  it('waits out an open circuit without spending the budget', async () => {
    // Open for a second: long enough that the retries right after the failure surely find it open.
    const breaker = createBreaker({ threshold: 1, halfOpenAfterMs: 1_000, maxHalfOpenAfterMs: 1_000 });
    const { fn, calls } = scripted('ECONNRESET', 200);
    const retries: string[] = [];
    const r = await deliver(
      fn,
      options({ breaker, maxAttempts: 2, onRetry: (err) => retries.push(err.constructor.name) }),
    );
    expect(r).toMatchObject({ kind: 'ok', attempts: 2 });
    // The first failure opened the circuit; the waits on it were not attempts.
    expect(retries[0]).toBe('RetryableError');
    expect(retries.slice(1).every((n) => n === 'BrokenCircuitError')).toBe(true);
    expect(retries.length).toBeGreaterThan(1);
    expect(calls).toHaveLength(2);
    expect(breakerState(breaker)).toBe('closed');
  });

  it('returns cancelled when its signal aborts during a wait', async () => {
    const controller = new AbortController();
    const { fn } = scripted(503);
    const pending = deliver(fn, options({ signal: controller.signal, baseMs: 10_000, maxMs: 10_000 }));
    setTimeout(() => controller.abort(), 20);
    expect(await pending).toMatchObject({ kind: 'cancelled', attempts: 1 });
  });

  it('an attempt that waited for a half-open trial still listens to its own signal', async () => {
    const breaker = createBreaker({ threshold: 1, halfOpenAfterMs: 20, maxHalfOpenAfterMs: 20 });
    expect(await deliver(scripted(503).fn, options({ breaker, maxAttempts: 1 }))).toMatchObject({
      kind: 'gave_up',
    });
    await new Promise((r) => setTimeout(r, 40));
    // The trial call: held until released, then 200 closes the circuit.
    let release: () => void = () => {};
    const trial = deliver(
      () => new Promise<BackendAnswer>((r) => (release = () => r({ status: 200, body: '{}' }))),
      options({ breaker }),
    );
    await waitForState(breaker, 'half-open');
    // A delivery that comes while the trial runs waits for it, then makes its attempt.
    const controller = new AbortController();
    let seen: AbortSignal | undefined;
    const waiting = deliver(
      (signal) =>
        new Promise<BackendAnswer>((_r, reject) => {
          seen = signal;
          signal.addEventListener('abort', () => reject(signal.reason), { once: true });
        }),
      options({ breaker, signal: controller.signal }),
    );
    release();
    expect(await trial).toMatchObject({ kind: 'ok' });
    while (!seen) await new Promise((r) => setTimeout(r, 5));
    controller.abort();
    expect(seen.aborted).toBe(true);
    expect(await waiting).toMatchObject({ kind: 'cancelled' });
  });
});

async function waitForState(breaker: Parameters<typeof breakerState>[0], state: string): Promise<void> {
  for (let i = 0; i < 200 && breakerState(breaker) !== state; i++) await new Promise((r) => setTimeout(r, 5));
  expect(breakerState(breaker)).toBe(state);
}
