import pino from 'pino';
import { describe, expect, it } from 'vitest';
import type { AddResult } from '../../src/assembler/assembler.js';
import { loadConfig, type PumpConfig } from '../../src/config/env.js';
import { TableProgress } from '../../src/ledger/table-progress.js';
import { RowTicket } from '../../src/ledger/ticket.js';
import type { Part, Reading } from '../../src/model/reading.js';
import { Decoder } from '../../src/source/decode.js';
import { Intake } from '../../src/source/intake.js';
import type { RowFetcher } from '../../src/source/row-fetcher.js';
import type { DeadLetter } from '../../src/store/dead-letters.js';
import { ManualClock } from '../../src/util/clock.js';

const config = loadConfig({});
const pumpA = config.pumps.find((p) => p.id === 'A') as PumpConfig;
const sensor = pumpA.sensors[0] as PumpConfig['sensors'][number];

/**
 * An intake over a ledger of real TableProgress (no database: the keeper's loading is not what is
 * tested), a lane that answers what it is told, and posts and dead letters kept in arrays.
 */
function setup(o: { posts?: boolean; lane?: AddResult } = {}) {
  const progress = new Map<string, TableProgress>();
  const reader = (pump: string, table: string) => {
    let p = progress.get(`${pump}/${table}`);
    if (!p) {
      p = new TableProgress(table, 0, 1);
      p.release(p.catchUpToken());
      progress.set(`${pump}/${table}`, p);
    }
    return p;
  };
  const posted: Reading[] = [];
  const grouped: Reading[] = [];
  const letters: { letter: DeadLetter; settled: (() => void) | undefined }[] = [];
  const intake = new Intake({
    decoder: new Decoder(config.pumps),
    clock: new ManualClock(1_000),
    logger: pino({ level: 'silent' }),
    owns: () => true,
    ledger: {
      begin: (pump, table, id, parts: readonly Part[]) => {
        const p = reader(pump, table);
        if (!p.begin(id, Math.max(1, parts.length))) return undefined;
        if (parts.length === 0) p.settle(id);
        return new RowTicket(p, id, parts);
      },
      passed: (pump, table, id) => reader(pump, table).passed(id),
      claim: (pump, table, id) => reader(pump, table).claim(id),
      unclaim: (pump, table, id) => reader(pump, table).unclaim(id),
      holdFrom: (pump, table, id) => reader(pump, table).holdFrom(id),
      holdAfterSaved: (pump, table) => reader(pump, table).holdFrom(reader(pump, table).persisted + 1),
    },
    rows: { fetch: () => {} } as unknown as RowFetcher,
    missed: () => {},
    lane: () => ({
      add: (r: Reading) => {
        grouped.push(r);
        return o.lane ?? 'added';
      },
    }),
    posts: o.posts === false ? undefined : { submit: (r: Reading) => posted.push(r) },
    deadLetter: (letter, settled) => letters.push({ letter, settled }),
  });
  const checkpoint = () => reader('A', sensor.table).checkpoint();
  return { intake, posted, grouped, letters, checkpoint };
}

const row = (id: number, valor: unknown = 1.5) => ({
  id,
  valor: valor as number,
  tiempo: '2025-01-01T00:00:00',
});

describe('Intake settlement', () => {
  it('a reading is begun with a group and a post part: the checkpoint waits for both owners', () => {
    const s = setup();
    s.intake.row(sensor.channel, row(1), 'catchup');
    expect(s.grouped.map((r) => r.id)).toEqual([1]);
    expect(s.posted.map((r) => r.id)).toEqual([1]);
    s.posted[0]?.ticket?.settle('post');
    expect(s.checkpoint()).toBe(0);
    s.grouped[0]?.ticket?.settle('group');
    expect(s.checkpoint()).toBe(1);
  });

  it('the same row again, from a notification or a catch-up overlap, is a duplicate: not grouped, not posted', () => {
    const s = setup();
    s.intake.row(sensor.channel, row(1), 'catchup');
    s.intake.row(sensor.channel, row(1), 'notify');
    expect(s.grouped).toHaveLength(1);
    expect(s.posted).toHaveLength(1);
  });

  it("a late reading's group part is settled by the intake; its post still holds the checkpoint", () => {
    const s = setup({ lane: 'late' });
    s.intake.row(sensor.channel, row(1), 'catchup');
    expect(s.checkpoint()).toBe(0);
    s.posted[0]?.ticket?.settle('post');
    expect(s.checkpoint()).toBe(1);
  });

  it('a post already on record (catch-up after a restart) is not posted again; only its group holds', () => {
    const s = setup();
    s.intake.row(sensor.channel, row(1), 'catchup', true);
    expect(s.posted).toEqual([]);
    s.grouped[0]?.ticket?.settle('group');
    expect(s.checkpoint()).toBe(1);
  });

  it('a real row that is not a reading is a dead letter, and the row is settled only once it is on record', () => {
    const s = setup();
    s.intake.row(sensor.channel, row(1, 'not a number'), 'catchup');
    expect(s.grouped).toEqual([]);
    expect(s.letters).toHaveLength(1);
    expect(s.letters[0]?.letter).toMatchObject({ kind: 'notification', pump: 'A' });
    expect(s.checkpoint()).toBe(0);
    s.letters[0]?.settled?.();
    expect(s.checkpoint()).toBe(1);
  });

  it("a catch-up batch is begun whole before rows() returns; a bad row is its own dead letter, each row's post as on record", () => {
    const s = setup();
    s.intake.rows(
      sensor.channel,
      [
        { ...row(1), posted: false },
        { ...row(2, 'not a number'), posted: false },
        { ...row(3), posted: true },
      ],
      'A',
    );
    expect(s.grouped.map((r) => r.id)).toEqual([1, 3]);
    expect(s.posted.map((r) => r.id)).toEqual([1]);
    expect(s.letters).toHaveLength(1);
    expect(s.checkpoint()).toBe(0);
    for (const r of s.grouped) r.ticket?.settle('group');
    s.posted[0]?.ticket?.settle('post');
    expect(s.checkpoint()).toBe(1);
    s.letters[0]?.settled?.();
    expect(s.checkpoint()).toBe(3);
  });
});
