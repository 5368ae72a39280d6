import { describe, expect, it } from 'vitest';
import { describeStop, listenersOf } from '../../src/cli/runtime.js';
import { loadConfig } from '../../src/config/env.js';

describe('the stop line of listen and npm start', () => {
  it('names the pumps on the default wiring', () => {
    const config = loadConfig({});
    expect(listenersOf(config)).toBe('the listeners of A, B');
  });

  it('names the logbook stream too on plant-2026-03, which runs a third listener', () => {
    const config = loadConfig({ PUMPS_PROFILE: 'plant-2026-03' });
    expect(config.logbooks.length).toBeGreaterThan(0);
    const ids = config.logbooks.map((l) => l.id).join(', ');
    expect(describeStop({ stopped: [listenersOf(config)], removed: [] })).toBe(
      `stopped the listeners of A, B and of the logbook stream ${ids}; removed nothing`,
    );
  });
});
