import { describe, expect, it } from 'vitest';
import { PIPELINE_MODES, type PipelineMode } from '../../src/delivery/post-pipeline.js';
import { SENDER_MODES, type SenderMode } from '../../src/delivery/vector-sender.js';
import { LANE_MODES, type LaneMode } from '../../src/engine/logbook-entry.js';
import { Mode } from '../../src/util/mode.js';

describe('modes', () => {
  it('a vector sender drains or halts, may halt while draining, and never comes back once stopping', () => {
    const m = new Mode<SenderMode>('vector sender', 'sending', SENDER_MODES);
    m.to('draining');
    expect(() => m.to('sending')).toThrow('vector sender: no transition from draining to sending');
    m.to('halting');
    expect(() => m.to('draining')).toThrow(/halting to draining/);
    m.to('stopped');
    for (const next of ['sending', 'draining', 'halting'] as const) expect(() => m.to(next)).toThrow();
    expect(m.value).toBe('stopped');
  });

  it('the post pipeline defers and comes back, and nothing leaves stopped', () => {
    const m = new Mode<PipelineMode>('post pipeline', 'in-memory', PIPELINE_MODES);
    m.to('deferring');
    m.to('deferring'); // staying is no transition
    m.to('in-memory');
    m.to('stopped');
    expect(() => m.to('deferring')).toThrow('post pipeline: no transition from stopped to deferring');
    expect(m.is('stopped', 'in-memory')).toBe(true);
  });

  it('a logbook lane is owned and released as its lease comes and goes, and nothing leaves stopped', () => {
    const m = new Mode<LaneMode>('logbook lane', 'released', LANE_MODES);
    m.to('owned');
    m.to('released');
    m.to('owned');
    m.to('stopped');
    for (const next of ['owned', 'released'] as const) {
      expect(() => m.to(next)).toThrow(`logbook lane: no transition from stopped to ${next}`);
    }
    expect(m.value).toBe('stopped');
    const released = new Mode<LaneMode>('logbook lane', 'released', LANE_MODES);
    released.to('stopped');
    expect(released.is('stopped')).toBe(true);
  });
});
