import pg from 'pg';
import pino from 'pino';
import type { Agent } from 'undici';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { BackendClient, createAgent } from '../../src/delivery/backend-client.js';
import { DeadLetterSink } from '../../src/delivery/dead-letter-sink.js';
import { OutboxRecorder } from '../../src/delivery/outbox-recorder.js';
import { createBreaker, RouteGuard } from '../../src/delivery/policy.js';
import { type SendResult, VectorSender } from '../../src/delivery/vector-sender.js';
import type { DeadLetter } from '../../src/store/dead-letters.js';
import { ENGINE_SCHEMA } from '../../src/store/migrations.js';
import { insertGroups, type OutboxRow } from '../../src/store/outbox.js';
import { API_KEY, type Harness, harness } from '../helpers/engine.js';
import type { RecordedRequest } from '../helpers/fake-backend.js';
import { waitFor } from '../helpers/wait.js';

/**
 * One pump's VectorSender on its own, against a real PostgreSQL outbox and a real HTTP backend: its modes,
 * its window of unrecorded vectors (VECTOR_WINDOW), the order of its sends, a rejected vector's dead
 * letter, and a stop while records wait. Records are held back for real, by a row lock on the outbox that
 * the delivery record's UPDATE waits on.
 */

const UNIFIED = '/sensores/predecir-bomba';

let h: Harness;
let agent: Agent;
beforeAll(async () => {
  h = await harness('vector_sender');
  agent = createAgent(8);
});
afterAll(async () => {
  await agent?.close();
  await h?.close();
});

const cleanups: (() => Promise<void>)[] = [];
beforeEach(async () => {
  h.backend.behaviour = () => undefined;
  h.backend.requests.length = 0;
  await h.admin.query(`DELETE FROM ${ENGINE_SCHEMA}.dead_letters`);
  await h.admin.query(`DELETE FROM ${ENGINE_SCHEMA}.outbox`);
});
/** Row locks the tests hold: let go first, so that a sender's stop is not left waiting on its records. */
const locks: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of locks.splice(0)) await c().catch(() => {});
  for (const c of cleanups.splice(0).reverse()) await c().catch(() => {});
});

let tiempoSeq = 0;

/** `n` pending vectors of pump A in the outbox, in id order (a body the backend takes). */
async function pending(n: number): Promise<OutboxRow[]> {
  const body = Object.fromEntries(h.pumps.A.sensors.map((s, i) => [s.field, 100 + i]));
  const groups = Array.from({ length: n }, () => {
    tiempoSeq += 1;
    return {
      pump: 'A',
      tiempo: `2026-01-01T00:${String(Math.floor(tiempoSeq / 60)).padStart(2, '0')}:${String(tiempoSeq % 60).padStart(2, '0')}`,
      status: 'pending' as const,
      body,
      filled: [],
      missing: [],
      members: [tiempoSeq],
    };
  });
  const { stored } = await insertGroups(h.admin, groups);
  expect(stored).toHaveLength(n);
  return stored;
}

interface Rig {
  sender: VectorSender;
  /** Vectors whose delivery record the recorder reported written, in order. */
  recorded: number[];
  results: { row: OutboxRow; result: SendResult }[];
  letters: DeadLetter[];
  /** For each letter the sink announced: how many deliveries were on record then. */
  recordedAtLetters: number[];
  /** Arrivals of unified requests at which more than `window` vectors had been sent without a record. */
  overWindow: string[];
  /** Arrivals that came while another unified request was still unanswered. */
  overlapping: string[];
  /** The most vectors sent and not recorded, seen at an arrival. */
  maxUnrecorded: number;
  stopEngine(): void;
}

/**
 * A sender for pump A with its own pool, a real OutboxRecorder and DeadLetterSink, and checks run at every
 * arrival of a vector at the backend: how many vectors had been sent without their record written, and
 * whether another vector was still in flight.
 */
function rig(window: number, o: { breakerThreshold?: number; route?: RouteGuard } = {}): Rig {
  const pool = new pg.Pool({ connectionString: h.db.url, max: 4 });
  pool.on('error', () => {});
  const engine = new AbortController();
  const logger = pino({ level: 'silent' });
  const recorder = new OutboxRecorder({ pool, logger, signal: engine.signal });
  const sink = new DeadLetterSink({ pool, logger, signal: engine.signal });
  const r: Rig = {
    sender: undefined as unknown as VectorSender,
    recorded: [],
    results: [],
    letters: [],
    recordedAtLetters: [],
    overWindow: [],
    overlapping: [],
    maxUnrecorded: 0,
    stopEngine: () => engine.abort(),
  };
  sink.on('stored', (l) => {
    r.letters.push(l);
    r.recordedAtLetters.push(r.recorded.length);
  });
  const previousBehaviour = h.backend.behaviour;
  h.backend.behaviour = (req: RecordedRequest) => {
    if (req.path === UNIFIED) {
      const vectors = h.backend.requests.filter((x) => x.path === UNIFIED);
      // Sent and not recorded: answered 200 with no record written yet, and this one, in flight.
      const sent = vectors.filter((x) => x !== req && x.status === 200).length + 1;
      const unrecorded = sent - r.recorded.length;
      r.maxUnrecorded = Math.max(r.maxUnrecorded, unrecorded);
      if (unrecorded > window) r.overWindow.push(`arrival ${req.seq}: ${unrecorded} unrecorded`);
      if (vectors.some((x) => x !== req && x.status === 0)) r.overlapping.push(`arrival ${req.seq}`);
    }
    return previousBehaviour(req);
  };
  r.sender = new VectorSender({
    pump: h.pumps.A,
    pool,
    client: new BackendClient({ baseUrl: h.pumps.A.baseUrl, apiKey: API_KEY, timeoutMs: 2_000, agent }),
    breaker: createBreaker({
      threshold: o.breakerThreshold ?? 5,
      halfOpenAfterMs: 50,
      maxHalfOpenAfterMs: 200,
    }),
    ...(o.route ? { route: o.route } : {}),
    retryBaseMs: 10,
    retryMaxMs: 50,
    logger,
    deadLetters: sink,
    onResult: (row, result) => r.results.push({ row, result }),
    recordSent: async (s) => {
      const written = await recorder.recordSent(s);
      if (written) r.recorded.push(s.id);
      return written;
    },
    pollMs: 200,
    window,
  });
  cleanups.push(async () => {
    await r.sender.stop({ drainUntil: AbortSignal.abort() });
    engine.abort();
    await pool.end();
  });
  return r;
}

/** Holds the delivery record of `id` (and every record batched behind it) with a row lock. */
async function lockRow(id: number): Promise<() => Promise<void>> {
  const c = await h.admin.connect();
  await c.query('BEGIN');
  await c.query(`SELECT 1 FROM ${ENGINE_SCHEMA}.outbox WHERE id = $1 FOR UPDATE`, [id]);
  let released = false;
  const release = async () => {
    if (released) return;
    released = true;
    await c.query('ROLLBACK');
    c.release();
  };
  locks.push(release);
  return release;
}

/** Whether a delivery record's UPDATE is waiting on a lock. */
async function recordWaiting(): Promise<boolean> {
  const { rows } = await h.admin.query(
    `SELECT 1 FROM pg_stat_activity
      WHERE datname = current_database() AND wait_event_type = 'Lock' AND query ILIKE '%UPDATE pump_monitor.outbox%'`,
  );
  return rows.length > 0;
}

async function statuses(): Promise<Map<number, string>> {
  const { rows } = await h.admin.query<{ id: string; status: string }>(
    `SELECT id, status FROM ${ENGINE_SCHEMA}.outbox ORDER BY id`,
  );
  return new Map(rows.map((x) => [Number(x.id), x.status]));
}

function answeredKeys(): string[] {
  return h.backend.answered(UNIFIED).map((x) => x.idempotencyKey as string);
}

/**
 * `n` pending vectors and a sender of window `w` whose first record waits on a row lock: returns once the
 * record waits and `w` vectors are answered (the window full).
 */
async function heldWindow(w: number, n: number) {
  const rows = await pending(n);
  const release = await lockRow(rows[0]?.id as number);
  const r = rig(w);
  r.sender.start();
  // The first record waits on the lock and every later one queues behind it: the window fills.
  await waitFor('the first record waiting on the lock', recordWaiting);
  await waitFor(`${w} vectors answered`, () => h.backend.answered(UNIFIED).length === w);
  return { rows, release, r };
}

describe('VectorSender', { timeout: 60_000 }, () => {
  it('rejects a window that is not an integer of at least 1', () => {
    for (const window of [0, -1, 1.5, Number.NaN]) {
      expect(() => rig(window)).toThrow(/window must be an integer >= 1/);
    }
  });

  it('with its records held, sends exactly W vectors and no more; once written, the rest in outbox order', async () => {
    const W = 3;
    const { rows, release, r } = await heldWindow(W, 8);
    await waitFor('the window full', () => r.sender.unrecordedCount === W);
    expect(await recordWaiting()).toBe(true);
    // Every arrival so far was checked as it came: a sender ignoring W sends the 4th while the lock holds.
    expect(r.overWindow).toEqual([]);
    expect(r.recorded).toEqual([]);
    await release();
    await waitFor('every vector answered and recorded', () => r.recorded.length === rows.length);
    expect(answeredKeys()).toEqual(rows.map((x) => x.key));
    expect(r.overWindow).toEqual([]);
    expect(r.maxUnrecorded).toBe(W);
    expect(r.overlapping).toEqual([]);
    expect([...(await statuses()).values()]).toEqual(rows.map(() => 'sent'));
    // Results are announced once recorded, in order.
    expect(r.results.map((x) => x.row.id)).toEqual(rows.map((x) => x.id));
    expect(r.results.every((x) => x.result.kind === 'sent')).toBe(true);
  });

  it('W = 1 waits for each record before the next vector', async () => {
    const { rows, release, r } = await heldWindow(1, 3);
    expect(r.overWindow).toEqual([]);
    await release();
    await waitFor('all recorded', () => r.recorded.length === 3);
    expect(r.maxUnrecorded).toBe(1);
    expect(answeredKeys()).toEqual(rows.map((x) => x.key));
  });

  it('sends one request at a time in outbox order through retries, an open circuit and a refused route', async () => {
    const rows = await pending(12);
    const retried = rows[3]?.key;
    const refused = rows[7]?.key;
    let fails = 0;
    let refusals = 0;
    const route = new RouteGuard();
    h.backend.behaviour = (req) => {
      if (req.idempotencyKey === retried && fails < 3) {
        fails += 1;
        return { status: 503 };
      }
      if (req.idempotencyKey === refused && refusals < 2) {
        refusals += 1;
        return { status: 401 };
      }
      return undefined;
    };
    // Three 503s in a row open the circuit (threshold 2): the vector waits for the trial call.
    const r = rig(4, { breakerThreshold: 2, route });
    r.sender.start();
    await waitFor('every vector recorded', () => r.recorded.length === rows.length);
    expect(fails).toBe(3);
    expect(refusals).toBe(2);
    expect(answeredKeys()).toEqual(rows.map((x) => x.key));
    // Every request, retries included, in outbox order: a vector is asked only once those before it were taken.
    const asked = h.backend.requests.filter((x) => x.path === UNIFIED).map((x) => x.idempotencyKey);
    const firstAsk = rows.map((x) => asked.indexOf(x.key));
    expect(firstAsk).toEqual([...firstAsk].sort((a, b) => a - b));
    for (const [i, row] of rows.entries()) {
      const lastAsk = asked.lastIndexOf(row.key);
      expect(lastAsk, `vector ${i} asked after the next one`).toBeLessThan(
        rows[i + 1] ? asked.indexOf(rows[i + 1]?.key) : Number.POSITIVE_INFINITY,
      );
    }
    expect(r.overlapping).toEqual([]);
    expect(r.overWindow).toEqual([]);
    expect(route.fault).toBeUndefined();
    expect(r.letters).toEqual([]);
  });

  it('a rejected vector is dead with its letter, counted through the sink, once the deliveries before it are on record', async () => {
    const rows = await pending(6);
    const rejected = rows[2] as OutboxRow;
    h.backend.behaviour = (req) => (req.idempotencyKey === rejected.key ? { status: 422 } : undefined);
    const r = rig(4);
    r.sender.start();
    await waitFor('every vector settled', () => r.results.length === rows.length);
    expect(r.letters).toHaveLength(1);
    expect(r.letters[0]).toMatchObject({
      kind: 'vector',
      pump: 'A',
      outboxId: rejected.id,
      responseStatus: 422,
    });
    // The two delivered before it were on record when it was.
    expect(r.recordedAtLetters).toEqual([2]);
    const { rows: stored } = await h.admin.query<{ outbox_id: string; kind: string }>(
      `SELECT outbox_id, kind FROM ${ENGINE_SCHEMA}.dead_letters`,
    );
    expect(stored).toEqual([{ outbox_id: String(rejected.id), kind: 'vector' }]);
    const s = await statuses();
    expect(rows.map((x) => s.get(x.id))).toEqual(['sent', 'sent', 'dead', 'sent', 'sent', 'sent']);
    expect(r.results.map((x) => [x.row.id, x.result.kind])).toEqual(
      rows.map((x) => [x.id, x.id === rejected.id ? 'dead' : 'sent']),
    );
    expect(answeredKeys()).toEqual(rows.filter((x) => x !== rejected).map((x) => x.key));
  });

  it('modes: a drain sends the outbox to its end and stops; a halt stops; neither comes back', async () => {
    const rows = await pending(5);
    const r = rig(2);
    expect(r.sender.state).toBe('sending');
    r.sender.start();
    await r.sender.stop({ drainUntil: new AbortController().signal });
    expect(r.sender.state).toBe('stopped');
    expect(r.recorded).toEqual(rows.map((x) => x.id));
    // Stopped is final: a halt, another stop and rows offered later change nothing.
    await r.sender.halt(100);
    await r.sender.stop({ drainUntil: AbortSignal.abort() });
    const later = await pending(1);
    r.sender.offer(later);
    expect(r.sender.state).toBe('stopped');
    expect((await statuses()).get(later[0]?.id as number)).toBe('pending');
    expect(h.backend.answered(UNIFIED)).toHaveLength(rows.length);

    // A halt while draining is allowed (a hand-over during a stop).
    const rows2 = await pending(3);
    const release = await lockRow(rows2[0]?.id as number);
    const r2 = rig(2);
    r2.sender.start();
    await waitFor('the record waiting on the lock', recordWaiting);
    const drained = r2.sender.stop({ drainUntil: new AbortController().signal });
    expect(r2.sender.state).toBe('draining');
    const halted = r2.sender.halt(5_000);
    expect(r2.sender.state).toBe('halting');
    await release();
    await Promise.all([drained, halted]);
    expect(r2.sender.state).toBe('stopped');
  });

  it('a stop while records are held waits for them, sends nothing more, and leaves the rest pending', async () => {
    const W = 3;
    const { rows, release, r } = await heldWindow(W, 6);
    let stopped = false;
    const stop = r.sender.stop({ drainUntil: AbortSignal.abort() }).then(() => {
      stopped = true;
    });
    // The stop cannot end before the records it holds are written, and they wait on the lock.
    expect(await recordWaiting()).toBe(true);
    expect(stopped).toBe(false);
    expect(r.sender.state).toBe('draining');
    await release();
    await stop;
    expect(r.sender.state).toBe('stopped');
    expect(r.recorded).toEqual(rows.slice(0, W).map((x) => x.id));
    const s = await statuses();
    expect(rows.map((x) => s.get(x.id))).toEqual(rows.map((_, i) => (i < W ? 'sent' : 'pending')));
    expect(h.backend.requests.filter((x) => x.path === UNIFIED)).toHaveLength(W);
  });

  it('a halt (hand-over) with records held ends only once they are written', async () => {
    const { rows, release, r } = await heldWindow(2, 5);
    let halted = false;
    const halt = r.sender.halt(10_000).then(() => {
      halted = true;
    });
    expect(await recordWaiting()).toBe(true);
    expect(halted).toBe(false);
    await release();
    await halt;
    const s = await statuses();
    expect(rows.map((x) => s.get(x.id))).toEqual(['sent', 'sent', 'pending', 'pending', 'pending']);
  });

  it('when the engine stops before a record is written, the sender stops and the row stays pending', async () => {
    const rows = await pending(6);
    // The recorder's writer is stopped before it writes: its records resolve false.
    const W = 3;
    const r = rig(W);
    r.stopEngine();
    r.sender.start();
    await waitFor('the sender stopped', () => r.sender.state === 'stopped');
    // No more than the window went out, and nothing is on record.
    const answered = h.backend.answered(UNIFIED).length;
    expect(answered).toBeGreaterThanOrEqual(1);
    expect(answered).toBeLessThanOrEqual(W);
    expect(r.recorded).toEqual([]);
    const s = await statuses();
    expect(rows.map((x) => s.get(x.id))).toEqual(rows.map(() => 'pending'));
  });
});
