import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { LogbookConfig } from '../../src/config/env.js';
import { createAgent } from '../../src/delivery/backend-client.js';
import { createBackends } from '../../src/delivery/backends.js';
import type { Backend } from '../../src/delivery/row-poster.js';
import { LogbookLane, type LogbookOutcome } from '../../src/engine/logbook-lane.js';
import { CheckpointKeeper } from '../../src/ledger/checkpoint-keeper.js';
import { RowFetcher } from '../../src/source/row-fetcher.js';
import { createPool } from '../../src/store/db.js';
import type { DeadLetter } from '../../src/store/dead-letters.js';
import { type Harness, harness } from '../helpers/engine.js';
import { waitFor } from '../helpers/wait.js';

/** LogbookLane alone, on plant-2026-03's logbook (PUMPS=bitacoras), its database and a fake classifier. */
let h: Harness;

beforeAll(async () => {
  h = await harness('logbook_lane', { PUMPS_PROFILE: 'plant-2026-03', PUMPS: 'bitacoras' });
});

afterAll(async () => {
  await h?.close();
});

/** A lane as the engine wires it, with a catch-up batch of `batch` (so `2 × batch` entries in memory). */
function laneOf(batch: number, listening: () => boolean = () => true) {
  const controller = new AbortController();
  const logger = pino({ level: 'silent' });
  const pool = createPool(h.config.database, 'lane-test', 4, 10_000);
  const agent = createAgent();
  const logbook = h.config.logbooks[0] as LogbookConfig;
  const backends = createBackends({ config: h.config, agent, logger, onAnswer: () => {} });
  const ledger = new CheckpointKeeper({
    pool,
    logger,
    everyMs: 60_000,
    ownedReaders: () => [],
    horizon: async () => undefined,
  });
  const rows = new RowFetcher({ pool, logger });
  const letters: DeadLetter[] = [];
  const lane = new LogbookLane({
    logbook,
    pool,
    ledger,
    backend: backends.logbooks.get(logbook.id) as Backend,
    concurrency: 2,
    maxAttempts: 3,
    retryBaseMs: 10,
    retryMaxMs: 50,
    batch,
    rows,
    listening,
    deadLetter: (letter, settled) => {
      letters.push(letter);
      settled();
    },
    signal: controller.signal,
    logger,
  });
  const events: { outcome: LogbookOutcome; id: number | undefined }[] = [];
  lane.on('entry', (outcome, _stream, id) => events.push({ outcome, id }));
  return {
    lane,
    logbook,
    ledger,
    rows,
    pool,
    letters,
    events,
    close: async () => {
      lane.abort();
      controller.abort();
      await agent.close();
      await pool.end();
    },
  };
}

async function entry(table: string, text: string): Promise<number> {
  const { rows } = await h.admin.query<{ id: number }>(
    `INSERT INTO ${table} (bitacora, tiempo_ejecucion) VALUES ($1, now()) RETURNING id`,
    [text],
  );
  return rows[0]?.id as number;
}

describe('LogbookLane', () => {
  it('moves released → owned → released → stopped, and is not taken again once stopped', async () => {
    const { lane, ledger, pool, close } = laneOf(10);
    expect(lane.state).toBe('released');
    await ledger.load(pool, lane.readers());
    lane.take();
    expect(lane.state).toBe('owned');
    await lane.leave(100);
    expect(lane.state).toBe('released');
    lane.take();
    lane.abort();
    expect(lane.state).toBe('stopped');
    lane.take(); // a lease event during shutdown: ignored, not a fault
    expect(lane.state).toBe('stopped');
    await close();
  });

  it('taken before the LISTEN session is up, it reads nothing; its catch-up runs once the listener asks', async () => {
    let listening = false;
    const { lane, logbook, ledger, pool, events, close } = laneOf(10, () => listening);
    const stream = logbook.streams[0] as LogbookConfig['streams'][number];
    await ledger.load(pool, lane.readers());
    const id = await entry(stream.table, 'Escrita antes del LISTEN');
    // A read now could pass a row that commits out of id order before LISTEN, unheard: none starts.
    lane.take();
    expect(lane.catchingUp).toBe(false);
    listening = true;
    lane.catchUp(); // what the listener's `listening` event does
    await waitFor('the entry sent', () => events.some((e) => e.outcome === 'sent' && e.id === id));
    // On record, so the next lane's first catch-up over this table takes it as posted.
    await lane.idle();
    await lane.flush();
    await close();
  });

  it('past 2 × batch entries in memory a notified row is not read: the table is the backlog, each entry is sent once', async () => {
    const { lane, logbook, ledger, rows, pool, events, letters, close } = laneOf(2);
    const stream = logbook.streams[0] as LogbookConfig['streams'][number];
    let open: () => void = () => {};
    const gate = new Promise<void>((r) => {
      open = r;
    });
    // The classifier holds every entry until the gate opens.
    h.backend.behaviour = (req) => (req.idempotencyKey?.startsWith('lb-') ? { gate } : undefined);
    await ledger.load(pool, lane.readers());
    lane.take();
    await waitFor('the first catch-up over', () => !lane.catchingUp);
    const ids: number[] = [];
    for (let i = 0; i < 10; i++) ids.push(await entry(stream.table, `entrada ${i}`));
    // Four notified one by one, each received (read and queued) before the next: memory is then full.
    for (const id of ids.slice(0, 4)) {
      lane.notified(stream.channel, JSON.stringify({ id }));
      await waitFor(`entry ${id} received`, () =>
        events.some((e) => e.outcome === 'received' && e.id === id),
      );
    }
    expect(lane.depth).toBe(4);
    // The other six are not read now (no row request is made): they wait in their table.
    for (const id of ids.slice(4)) lane.notified(stream.channel, JSON.stringify({ id }));
    expect(rows.depth).toBe(0);
    expect(lane.depth).toBe(4);
    open();
    await waitFor(
      'every entry sent',
      () => ids.every((id) => events.some((e) => e.outcome === 'sent' && e.id === id)),
      30_000,
      () => ({ events, depth: lane.depth }),
    );
    await lane.idle();
    const sent = h.backend.answeredByKey((r) => r.idempotencyKey?.startsWith(`lb-${stream.table}-`) ?? false);
    for (const id of ids) expect(sent.get(`lb-${stream.table}-${id}`)).toBe(1);
    expect(letters).toEqual([]);
    h.backend.behaviour = () => undefined;
    await close();
  });
});
