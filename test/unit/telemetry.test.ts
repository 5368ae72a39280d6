import { describe, expect, it } from 'vitest';
import { RateWindow } from '../../src/engine/telemetry-stats.js';

describe('rate window', () => {
  it('counts the events of the last minute and forgets older ones', () => {
    const w = new RateWindow();
    const t0 = 1_000_000_000;
    for (let i = 0; i < 120; i++) w.add(t0 + i * 500); // two a second for a minute
    expect(w.perMinute(t0 + 59_999)).toBe(120);
    expect(w.perMinute(t0 + 90_000)).toBe(58); // only seconds 31 to 59 are still within the minute
    expect(w.perMinute(t0 + 200_000)).toBe(0);
    w.add(t0 + 200_000);
    expect(w.perMinute(t0 + 200_000)).toBe(1);
  });
});
