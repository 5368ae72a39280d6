import { setTimeout as delay } from 'node:timers/promises';

/**
 * Wall-clock milliseconds with a fraction: comparable across the bench's processes (same machine, same
 * clock) and finer than Date.now() for latencies of a few milliseconds.
 */
export function now(): number {
  return performance.timeOrigin + performance.now();
}

/** The q-quantile (0..1) of unsorted values, nearest-rank; NaN for no values. */
export function quantile(values: number[], q: number): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[rank] as number;
}

export function round(n: number, digits = 1): number {
  if (!Number.isFinite(n)) return n;
  const f = 10 ** digits;
  return Math.round(n * f) / f;
}

/** Waits until `check` returns a value, polling every `everyMs`, or gives up after `timeoutMs`. */
export async function waitUntil<T>(
  check: () => T | undefined | Promise<T | undefined>,
  timeoutMs: number,
  everyMs = 10,
): Promise<T | undefined> {
  const deadline = Date.now() + timeoutMs;
  for (let i = 0; i < 10_000_000 && Date.now() <= deadline; i++) {
    const v = await check();
    if (v !== undefined) return v;
    await delay(everyMs);
  }
  return undefined;
}

/** Sleeps until the wall-clock time `at` (see `now()`); returns at once when it has passed. */
export async function sleepUntil(at: number): Promise<void> {
  const ms = at - now();
  if (ms > 1) await delay(Math.floor(ms));
}

export function megabytes(bytes: number): number {
  return round(bytes / (1024 * 1024), 1);
}
