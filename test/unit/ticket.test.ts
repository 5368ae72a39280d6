import { describe, expect, it } from 'vitest';
import { TableProgress } from '../../src/ledger/table-progress.js';
import { RowTicket } from '../../src/ledger/ticket.js';

/** A reader whose saved checkpoint is 10 and whose start-up hold a catch-up has lifted. */
function reader(): TableProgress {
  const p = new TableProgress('t', 10, 1);
  p.release(p.catchUpToken());
  return p;
}

function begin(p: TableProgress, id: number, parts: ('group' | 'post' | 'letter')[]): RowTicket {
  expect(p.begin(id, Math.max(1, parts.length))).toBe(true);
  return new RowTicket(p, id, parts);
}

describe('settlement tickets', () => {
  it("a row's checkpoint cannot pass it while one of its parts is unsettled, whichever settles first", () => {
    for (const first of ['group', 'post'] as const) {
      const p = reader();
      const row = begin(p, 11, ['group', 'post']);
      const next = begin(p, 12, ['post']);
      next.settle('post');
      row.settle(first);
      expect(row.settled).toBe(false);
      expect(p.checkpoint()).toBe(10);
      row.settle(first === 'group' ? 'post' : 'group');
      expect(row.settled).toBe(true);
      expect(p.checkpoint()).toBe(12);
    }
  });

  it('a part settled twice counts once: the row stays unsettled until the other part is done', () => {
    const p = reader();
    const row = begin(p, 11, ['group', 'post']);
    row.settle('post');
    row.settle('post');
    expect(p.checkpoint()).toBe(10);
    expect(row.owes('group')).toBe(true);
    row.settle('group');
    expect(p.checkpoint()).toBe(11);
  });

  it('settling a part the row was not begun with is refused, and moves nothing', () => {
    const p = reader();
    const row = begin(p, 11, ['group']);
    expect(() => row.settle('post')).toThrow(/no post part/);
    expect(p.checkpoint()).toBe(10);
  });

  it('a duplicate gets no ticket: the row in flight keeps its own parts', () => {
    const p = reader();
    const row = begin(p, 11, ['letter']);
    expect(p.begin(11, 1)).toBe(false);
    row.settle('letter');
    expect(p.begin(11, 1)).toBe(false); // settled recently: still a duplicate
    expect(p.checkpoint()).toBe(11);
  });
});
