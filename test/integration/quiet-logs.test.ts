import { Writable } from 'node:stream';
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { logDefinitionWarnings } from '../../src/cli/runtime.js';
import { loadDefinitions, profileDir } from '../../src/config/pumps.js';
import { createPool } from '../../src/store/db.js';
import { runSimulator } from '../../src/tools/simulator.js';
import { loggerOptions, RepeatLimiter } from '../../src/util/logger.js';
import { type Harness, harness } from '../helpers/engine.js';
import { waitFor } from '../helpers/wait.js';

/**
 * Quiet by default (issue 22): the engine, fed the demo's kind of input (gaps, late rows) on both wirings,
 * logs its per-vector and per-reading events at debug, says each pump's figures in one info line per
 * summary interval (shortened here, instead of a minute of waiting), and keeps warnings for what an
 * operator must act on.
 */

const TIMESTAMPS = 60;
const SUMMARY_MS = 400;

/** A deterministic random source, so each run writes the same gaps. */
function seeded(seed: number): () => number {
  let x = seed;
  return () => {
    x = (x * 1_103_515_245 + 12_345) % 2_147_483_648;
    return x / 2_147_483_648;
  };
}

let h: Harness | undefined;
afterEach(async () => {
  await h?.close();
  h = undefined;
});

describe.each([
  ['the default wiring', {}],
  ['the plant-2026-03 profile', { PUMPS_PROFILE: 'plant-2026-03' }],
])('quiet logs on %s', (_name, env: Record<string, string>) => {
  it('per-vector events stay at debug; each pump gets a summary line; warnings stay few', async () => {
    h = await harness('quiet', env);
    const lines: Record<string, unknown>[] = [];
    const sink = new Writable({
      write(chunk, _e, done) {
        for (const l of chunk.toString('utf8').split('\n')) if (l) lines.push(JSON.parse(l));
        done();
      },
    });
    const limiter = new RepeatLimiter();
    const monitor = await h.startMonitor(
      {},
      { logger: pino(loggerOptions('info', [], limiter), sink), summaryEveryMs: SUMMARY_MS },
    );
    const pool = createPool(h.config.database, 'quiet-simulator', 2);
    pool.on('error', () => {});
    try {
      const sim = await runSimulator({
        pool,
        pumps: h.config.pumps,
        rate: 20,
        count: TIMESTAMPS,
        missingProbability: 0.05,
        lateProbability: 0.02,
        random: seeded(22),
      });
      expect(sim.missing).toBeGreaterThan(0);
    } finally {
      await pool.end();
    }
    const pumps = h.config.pumps.map((p) => p.id);
    const resolved = () =>
      pumps.every((id) => {
        const s = monitor.units.telemetry.pump(id);
        return s.vectors_sent + s.vectors_dropped + s.vectors_dead >= TIMESTAMPS;
      });
    await waitFor('every timestamp sent or dropped', resolved, 60_000);

    // The summary lines add up to the counters: nothing is said per vector, everything is counted.
    const summed = (id: string, field: string) =>
      lines
        .filter((l) => l.stage === 'summary' && l.pump === id)
        .reduce((n, l) => n + Number(l[field] ?? 0), 0);
    await waitFor(
      'summary lines covering every vector',
      () =>
        pumps.every((id) => {
          const s = monitor.units.telemetry.pump(id);
          return (
            summed(id, 'vectors_sent') === s.vectors_sent &&
            summed(id, 'vectors_dropped') === s.vectors_dropped
          );
        }),
      30_000,
    );
    for (const id of pumps) {
      const s = monitor.units.telemetry.pump(id);
      expect(s.vectors_sent, `pump ${id} sent vectors`).toBeGreaterThan(0);
      expect(summed(id, 'readings_conflicting')).toBe(s.readings_conflicting);
      expect(summed(id, 'readings_late')).toBe(s.readings_late);
      const summaries = lines.filter((l) => l.stage === 'summary' && l.pump === id);
      expect(summaries.every((l) => l.level === 30)).toBe(true);
      expect(String(summaries[0]?.msg)).toMatch(new RegExp(`^pump ${id}, last 0 s: \\d+ vectors sent`));
      // A dropped group's summary names the field it lacked.
      const withDrops = summaries.find((l) => Number(l.vectors_dropped) > 0);
      if (withDrops) {
        expect(Object.keys(withDrops.dropped_missing as object).length).toBeGreaterThan(0);
        expect(String(withDrops.msg)).toContain('missing ');
      }
    }
    // No line per vector or per reading at info or above.
    const perEvent = lines.filter(
      (l) =>
        l.stage !== 'summary' &&
        /partial vector|below what can be sent|conflicting value|late reading|already in the outbox/.test(
          String(l.msg),
        ),
    );
    expect(perEvent).toEqual([]);
    // Warnings: none for healthy input with gaps; a handful at most for what an operator must act on.
    const warnings = lines.filter((l) => Number(l.level) >= 40);
    expect(warnings.map((w) => w.msg)).toEqual([]);
    // Everything said at info or above, for 60 timestamps per pump: start, listening, leases, summaries.
    const other = lines.filter((l) => l.stage !== 'summary');
    expect(other.length, other.map((l) => l.msg).join('\n')).toBeLessThan(20);
  }, 120_000);
});

describe("the definitions' warnings at start", () => {
  function capture() {
    const lines: Record<string, unknown>[] = [];
    const sink = new Writable({
      write(chunk, _e, done) {
        for (const l of chunk.toString('utf8').split('\n')) if (l) lines.push(JSON.parse(l));
        done();
      },
    });
    return { lines, log: pino(loggerOptions('info', [], new RepeatLimiter()), sink) };
  }

  it("a built-in profile's facts are one info line; an operator's own folder's are warnings", () => {
    const plant = loadDefinitions(profileDir('plant-2026-03'));
    expect(plant.warnings.length).toBe(13);
    const built = capture();
    logDefinitionWarnings(built.log, { warnings: plant.warnings, profile: 'plant-2026-03' });
    expect(built.lines).toHaveLength(1);
    expect(built.lines[0]).toMatchObject({ level: 30, profile: 'plant-2026-03', facts: plant.warnings });
    expect(String(built.lines[0]?.msg)).toContain('13 known facts of the plant');
    const own = capture();
    logDefinitionWarnings(own.log, { warnings: plant.warnings, profile: undefined });
    expect(own.lines.map((l) => [l.level, l.msg])).toEqual(plant.warnings.map((w) => [40, w]));
  });
});

describe('a flood of one warning', () => {
  it('a backend answering 503 for a while: each warning written once, its repeats counted and said once', async () => {
    h = await harness('quietflood');
    const lines: Record<string, unknown>[] = [];
    const sink = new Writable({
      write(chunk, _e, done) {
        for (const l of chunk.toString('utf8').split('\n')) if (l) lines.push(JSON.parse(l));
        done();
      },
    });
    let now = Date.now();
    const limiter = new RepeatLimiter(60_000, () => now);
    // A breaker that does not open: every retry reaches the backend and logs its warning.
    const monitor = await h.startMonitor(
      { BREAKER_THRESHOLD: '100000' },
      { logger: pino(loggerOptions('info', [], limiter), sink) },
    );
    const backend = h.backend;
    let refused = 0;
    // Pump A's vectors (its base URL ends in /sensores) are refused; its per-sensor posts go through.
    const unified = `/sensores${h.pumps.A.unifiedPath}`;
    backend.behaviour = (r) => {
      if (r.path !== unified) return undefined;
      refused += 1;
      return { status: 503 };
    };
    const pool = createPool(h.config.database, 'quiet-flood-simulator', 2);
    pool.on('error', () => {});
    try {
      await runSimulator({ pool, pumps: [h.pumps.A], rate: 20, count: 10, random: seeded(7) });
    } finally {
      await pool.end();
    }
    // Each vector of A is retried against the 503s: dozens of retries, one warning line per kind.
    await waitFor('many refused vectors', () => refused >= 40, 60_000);
    backend.behaviour = () => undefined;
    await waitFor(
      'every vector sent after the backend heals',
      () => monitor.units.telemetry.pump('A').vectors_sent >= 10,
      60_000,
    );
    const warned = lines.filter((l) => l.level === 40);
    const kinds = new Map<string, number>();
    for (const w of warned) {
      const k = String(w.msg).replace(/\d+/g, '#');
      kinds.set(k, (kinds.get(k) ?? 0) + 1);
    }
    expect(
      [...kinds.values()].every((n) => n === 1),
      JSON.stringify([...kinds]),
    ).toBe(true);
    expect(warned.length).toBeLessThanOrEqual(3);
    expect(limiter.suppressedTotal).toBeGreaterThan(20);
    // The minute passes: one line per kind says how many were not written, and they add up.
    now += 60_000;
    limiter.sweep();
    const said = lines.filter((l) => l.repeated !== undefined);
    expect(said.length).toBeGreaterThan(0);
    expect(said.reduce((n, l) => n + Number(l.repeated), 0)).toBe(limiter.suppressedTotal);
    for (const l of said)
      expect(String(l.msg)).toMatch(/\[repeated \d+ more times? within 60 s; not written each time\]$/);
  }, 120_000);
});
