import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config/env.js';
import { Activation } from '../../src/engine/activation.js';
import type { LogbookLane } from '../../src/engine/logbook-lane.js';
import type { PumpLane } from '../../src/engine/pump-lane.js';

const config = loadConfig({});

/** An Activation over lanes that record what they are asked, in one list with the other hooks. */
function setup() {
  const steps: string[] = [];
  const lanes = new Map(
    config.pumps.map((p) => [
      p.id,
      {
        pump: p,
        take: () => steps.push(`take ${p.id}`),
        reset: () => steps.push(`reset ${p.id}`),
        leave: async () => {
          steps.push(`leave ${p.id}`);
        },
      } as unknown as PumpLane,
    ]),
  );
  const a = new Activation({
    pumps: config.pumps,
    lanes,
    logbooks: new Map<string, LogbookLane>(),
    logger: pino({ level: 'silent' }),
    haltGraceMs: 10,
    reload: async (readers) => {
      steps.push(`reload ${readers.length}`);
    },
    hold: (readers) => steps.push(`hold ${readers.length}`),
    postsIdle: async () => {
      steps.push('posts idle');
    },
    flushRecords: async () => {
      steps.push('flush records');
    },
    saveCheckpoints: async (readers) => {
      steps.push(`save ${readers.length}`);
    },
    taken: (pump) => steps.push(`taken ${pump}`),
  });
  return { a, steps };
}

describe('Activation', () => {
  it('at start a pump is taken on the checkpoints just loaded, held until its catch-up', async () => {
    const { a, steps } = setup();
    await a.acquired('A', false);
    expect(steps).toEqual(['hold 20', 'take A', 'taken A']);
    expect(a.owns('A')).toBe(true);
    expect(a.ownedReaders()).toHaveLength(20);
  });

  it("after start, a pump another replica served starts again from that replica's checkpoints", async () => {
    const { a, steps } = setup();
    a.markStarted();
    await a.acquired('B', false);
    expect(steps).toEqual(['reload 15', 'reset B', 'take B', 'taken B']);
  });

  it('a hand-over finishes in order: the lane, the posts, every record, then the checkpoints', async () => {
    const { a, steps } = setup();
    await a.acquired('A', true);
    steps.length = 0;
    await a.releasing('A');
    expect(steps).toEqual(['leave A', 'posts idle', 'flush records', 'save 20']);
    expect(a.owns('A')).toBe(false);
    expect(a.owned()).toEqual([]);
  });
});
