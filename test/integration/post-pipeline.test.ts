import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createAgent } from '../../src/delivery/backend-client.js';
import { createBackends } from '../../src/delivery/backends.js';
import { PostPipeline } from '../../src/delivery/post-pipeline.js';
import { readingKey } from '../../src/model/keys.js';
import type { Part, Reading } from '../../src/model/reading.js';
import { Decoder } from '../../src/source/decode.js';
import { createPool } from '../../src/store/db.js';
import type { DeadLetter } from '../../src/store/dead-letters.js';
import { ENGINE_SCHEMA } from '../../src/store/schema.js';
import { type Harness, harness } from '../helpers/engine.js';
import { waitFor } from '../helpers/wait.js';

let h: Harness;

/** A row's ticket that counts how often each part is settled. */
class CountingTicket {
  readonly settled: Part[] = [];
  constructor(readonly id: number) {}
  settle(part: Part): void {
    this.settled.push(part);
  }
}

/** A PostPipeline on the harness's database and backend, as the engine wires it, with a small queue. */
function pipeline(maxQueued: number) {
  const controller = new AbortController();
  const agent = createAgent();
  const pool = createPool(h.config.database, 'pipeline-test', 4, 10_000);
  const backends = createBackends({
    config: h.config,
    agent,
    logger: pino({ level: 'silent' }),
    onAnswer: () => {},
  });
  const letters: DeadLetter[] = [];
  const events: string[] = [];
  const p = new PostPipeline({
    pool,
    logger: pino({ level: 'silent' }),
    signal: controller.signal,
    backends: backends.pumps,
    decoder: new Decoder(h.config.pumps),
    maxQueued,
    concurrency: 2,
    maxAttempts: 3,
    retryBaseMs: 10,
    retryMaxMs: 50,
    deadLetter: (letter, settled) => {
      letters.push(letter);
      settled();
    },
    owned: () => ['A', 'B'],
  });
  p.on('deferring', (on) => events.push(on ? 'deferring' : 'in-memory'));
  return {
    p,
    letters,
    events,
    close: async () => {
      p.abort();
      controller.abort();
      await agent.close();
      await pool.end();
    },
  };
}

function readingOf(id: number): Reading & { ticket: CountingTicket } {
  const sensor = h.pumps.A.sensors[0] as Reading['sensor'];
  return {
    pump: 'A',
    sensor,
    id,
    valor: 100 + id,
    tiempo: '2025-06-01T00:00:00',
    receivedAt: Date.now(),
    origin: 'notify',
    ticket: new CountingTicket(id),
  };
}

/** Both wirings: the seed's and plant-2026-03's (shared tables, a logbook beside the pumps). */
describe.each([
  ['seed', {}],
  ['plant-2026-03', { PUMPS_PROFILE: 'plant-2026-03' }],
])('PostPipeline (%s)', (_name, env: Record<string, string>) => {
  beforeAll(async () => {
    h = await harness('pipeline', env);
  });

  afterAll(async () => {
    await h?.close();
  });

  it("defers past its pump's share, settles each deferred post once on record, drains them back and posts each once", async () => {
    let open: () => void = () => {};
    const gate = new Promise<void>((r) => {
      open = r;
    });
    // Pump A's per-sensor posts are held at the backend until the gate opens.
    h.backend.behaviour = (req) =>
      req.path.includes(h.pumps.A.sensors[0]?.endpoint ?? '?') ? { gate } : undefined;
    const { p, events, letters, close } = pipeline(4); // two pumps: a share of 2 each
    const readings = Array.from({ length: 10 }, (_, i) => readingOf(9_000 + i));
    for (const r of readings) p.submit(r);
    expect(p.deferring).toBe(true);
    expect(events).toEqual(['deferring']);
    // The two in memory are in flight and unsettled; the eight past the share settle once on record.
    await waitFor('the eight deferred posts on record and settled', () =>
      readings.slice(2).every((r) => r.ticket.settled.length === 1),
    );
    expect(readings.slice(0, 2).map((r) => r.ticket.settled)).toEqual([[], []]);
    const { rows } = await h.admin.query<{ n: number }>(
      `SELECT count(*)::int AS n FROM ${ENGINE_SCHEMA}.deferred_posts WHERE pump = 'A'`,
    );
    expect(rows[0]?.n).toBe(8);
    p.start();
    open();
    await waitFor(
      'every post answered and the pipeline in memory again',
      async () => {
        const left = await h.admin.query<{ n: number }>(
          `SELECT count(*)::int AS n FROM ${ENGINE_SCHEMA}.deferred_posts WHERE pump = 'A'`,
        );
        return !p.deferring && left.rows[0]?.n === 0 && p.depth === 0;
      },
      30_000,
    );
    expect(events).toEqual(['deferring', 'in-memory']);
    expect(readings.map((r) => r.ticket.settled)).toEqual(readings.map(() => ['post']));
    const answered = h.backend.answeredByKey((r) => r.path.includes(h.pumps.A.sensors[0]?.endpoint ?? '?'));
    for (const r of readings) expect(answered.get(readingKey(r))).toBe(1);
    expect(letters).toEqual([]);
    await p.flush();
    const posted = await h.admin.query<{ n: number }>(
      `SELECT count(*)::int AS n FROM ${ENGINE_SCHEMA}.sensor_posts WHERE pump = 'A' AND row_id >= 9000`,
    );
    expect(posted.rows[0]?.n).toBe(10);
    await close();
    h.backend.behaviour = () => undefined;
  });
});
