import { describe, expect, it } from 'vitest';
import { BatchWriter, type BatchWriterOptions } from '../../src/util/batch.js';
import { pause } from '../helpers/wait.js';

function writer(opts: Partial<BatchWriterOptions> = {}) {
  const batches: number[][] = [];
  const errors: number[] = [];
  let failNext = 0;
  const w = new BatchWriter<number>(
    async (items) => {
      if (failNext > 0) {
        failNext -= 1;
        throw new Error('write failed');
      }
      batches.push([...items]);
    },
    {
      maxBatch: 3,
      retryMs: 5,
      onError: (_err, n) => errors.push(n),
      signal: new AbortController().signal,
      ...opts,
    },
  );
  return { w, batches, errors, failTimes: (n: number) => (failNext = n) };
}

describe('BatchWriter', () => {
  it('writes what one event-loop turn pushed as one batch, split at maxBatch', async () => {
    const { w, batches } = writer();
    for (let i = 1; i <= 5; i++) w.push(i);
    await w.idle();
    expect(batches).toEqual([
      [1, 2, 3],
      [4, 5],
    ]);
  });

  it('pushAndWait on a writer already stopped resolves false, never hangs', async () => {
    const stopped = new AbortController();
    stopped.abort();
    const { w, batches } = writer({ signal: stopped.signal });
    // Each one on its own: the drain a push starts ends at once, inside the push.
    expect(await w.pushAndWait(1)).toBe(false);
    expect(await w.pushAndWait(2)).toBe(false);
    expect(batches).toEqual([]);
  });

  it('retries a failed write until it succeeds, and loses nothing', async () => {
    const { w, batches, errors, failTimes } = writer();
    failTimes(2);
    w.push(1);
    w.push(2);
    await w.idle();
    expect(errors).toEqual([2, 2]);
    expect(batches).toEqual([[1, 2]]);
  });

  it('while busy, gathers items pushed over several turns into one write', async () => {
    const { w, batches } = writer({ busyLingerMs: 1_000 });
    w.push(1);
    await w.idle(); // one item: not busy, written after one turn
    w.push(2);
    await pause(10);
    w.push(3);
    await w.idle(); // the previous write carried one item: still not busy
    expect(batches).toEqual([[1], [2], [3]]);
    w.push(4);
    w.push(5);
    await w.idle();
    // The previous write carried two items and just ended: a burst, so it lingers and later pushes join.
    w.push(6);
    await pause(10);
    w.push(7);
    await w.idle();
    expect(batches.slice(3)).toEqual([
      [4, 5],
      [6, 7],
    ]);
  });

  it('with lingerMs, gathers items pushed over several turns even when idle', async () => {
    const { w, batches } = writer({ lingerMs: 1_000 });
    w.push(1);
    await pause(10);
    w.push(2);
    await w.idle();
    expect(batches).toEqual([[1, 2]]);
  });

  it('flush() cuts a linger short and writes at once', async () => {
    const { w, batches } = writer({ lingerMs: 10_000 });
    w.push(1);
    w.push(2);
    await pause(10); // the linger has begun
    const first = await Promise.race([
      w.flush().then(() => 'flushed'),
      pause(5_000).then(() => 'still lingering'),
    ]);
    expect(first).toBe('flushed');
    expect(batches).toEqual([[1, 2]]);
  });
});
