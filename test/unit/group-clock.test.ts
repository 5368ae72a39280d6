import { describe, expect, it } from 'vitest';
import { GroupClock, type GroupClockOptions } from '../../src/engine/group-clock.js';
import type { PumpLane } from '../../src/engine/pump-lane.js';

/** A lane that only records how it was ticked: [missing, held]. */
function fakeLane(ticks: [boolean, boolean][]): PumpLane {
  return { tick: (missing: boolean, held: boolean) => ticks.push([missing, held]) } as unknown as PumpLane;
}

function clock(over: Partial<GroupClockOptions>, ticks: Record<string, [boolean, boolean][]>) {
  const lanes = new Map(Object.entries(ticks).map(([pump, t]) => [pump, fakeLane(t)]));
  return new GroupClock({
    lanes,
    readersOf: new Map([...lanes.keys()].map((p) => [p, [{ pump: p, table: `t_${p}` }]])),
    settleMs: 400,
    rowsWaitingMs: () => 0,
    streamStalled: () => false,
    catchUpWaitingForRoom: () => false,
    held: () => false,
    ...over,
  });
}

describe('GroupClock', () => {
  it('lets every pump resolve its groups when nothing may be unread', () => {
    const ticks = { A: [] as [boolean, boolean][], B: [] as [boolean, boolean][] };
    clock({}, ticks).tick();
    expect(ticks).toEqual({ A: [[false, false]], B: [[false, false]] });
  });

  it('holds every group past its settle time while a named row waits for its read past a quarter of it, or the stream is behind', () => {
    const ticks = { A: [] as [boolean, boolean][] };
    clock({ rowsWaitingMs: () => 100 }, ticks).tick(); // exactly a quarter: not yet
    clock({ rowsWaitingMs: () => 101 }, ticks).tick();
    clock({ streamStalled: () => true }, ticks).tick();
    expect(ticks.A).toEqual([
      [false, false],
      [true, false],
      [true, false],
    ]);
  });

  it('holds only the pump whose readers wait for a catch-up, and lets its groups expire once that catch-up waits for room', () => {
    const ticks = { A: [] as [boolean, boolean][], B: [] as [boolean, boolean][] };
    const heldA = (readers: { pump: string }[]) => readers.some((r) => r.pump === 'A');
    clock({ held: heldA }, ticks).tick();
    clock({ held: heldA, catchUpWaitingForRoom: () => true }, ticks).tick();
    expect(ticks.A).toEqual([
      [false, true],
      [true, false],
    ]);
    expect(ticks.B).toEqual([
      [false, false],
      [false, false],
    ]);
  });

  it('ticks on its timer from start() until stop()', async () => {
    const ticks = { A: [] as [boolean, boolean][] };
    const c = clock({ everyMs: 5 }, ticks);
    c.start();
    c.start(); // a second start keeps one timer
    await new Promise((r) => setTimeout(r, 60));
    c.stop();
    const seen = ticks.A.length;
    expect(seen).toBeGreaterThan(0);
    await new Promise((r) => setTimeout(r, 40));
    expect(ticks.A.length).toBe(seen);
  });
});
