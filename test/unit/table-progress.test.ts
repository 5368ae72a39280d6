import { describe, expect, it } from 'vitest';
import { TableProgress } from '../../src/ledger/table-progress.js';

describe('TableProgress', () => {
  it('holds the checkpoint below a claim whose row is being read, but never moves it for one', () => {
    const p = new TableProgress('t', 10, 1);
    p.release(p.catchUpToken());
    p.claim(12); // a notification named 12; its row is being read
    p.begin(13, 1);
    p.settle(13);
    expect(p.checkpoint()).toBe(11); // 13 settled, but 12 may still be a row
    p.claim(1_000_000_000); // a forged id beyond every row read
    p.unclaim(12);
    expect(p.checkpoint()).toBe(13); // the forged claim holds nothing back, and moves nothing forward
    p.unclaim(1_000_000_000);
    expect(p.checkpoint()).toBe(13); // only rows read count: never past the largest id begun
    expect(p.begin(12, 1)).toBe(true); // a claim does not deduplicate the real row
  });

  it('says which ids a saved checkpoint has passed, and holds from a given id until a catch-up', () => {
    const p = new TableProgress('t', 10, 1);
    p.release(p.catchUpToken());
    expect(p.passed(10)).toBe(true);
    expect(p.passed(11)).toBe(false);
    p.begin(11, 1);
    p.begin(12, 1);
    p.holdFrom(12); // 12's read failed: it may have been missed
    p.settle(11);
    p.settle(12);
    expect(p.checkpoint()).toBe(11);
    p.release(p.catchUpToken()); // a catch-up begun after the hold read the table to its end
    expect(p.checkpoint()).toBe(12);
    p.saved(12);
    expect(p.passed(12)).toBe(true);
  });

  it('moves the checkpoint only past rows whose every part is settled', () => {
    const p = new TableProgress('t', 10, 1);
    p.release(p.catchUpToken()); // no hold: as after the first catch-up
    expect(p.begin(11, 2)).toBe(true);
    expect(p.begin(12, 1)).toBe(true);
    expect(p.checkpoint()).toBe(10);
    p.settle(12);
    expect(p.checkpoint()).toBe(10); // 11 is still in flight
    p.settle(11);
    expect(p.checkpoint()).toBe(10); // one part of 11 left
    p.settle(11);
    expect(p.checkpoint()).toBe(12);
  });

  it('recognises a row in flight or settled recently as a duplicate, and forgets beyond its ring', () => {
    const p = new TableProgress('t', 0, 1, 2);
    expect(p.begin(1, 1)).toBe(true);
    expect(p.begin(1, 1)).toBe(false); // in flight
    p.settle(1);
    expect(p.begin(1, 1)).toBe(false); // settled recently
    for (const id of [2, 3]) {
      p.begin(id, 1);
      p.settle(id);
    }
    expect(p.begin(1, 1)).toBe(true); // pushed out of a ring of two
  });

  it('holds the checkpoint below rows that may have been missed until a catch-up begun after the hold ends', () => {
    const p = new TableProgress('t', 0, 1);
    const atStart = p.catchUpToken(); // a catch-up begins
    p.holdFromLatest(); // the connection drops during it
    p.begin(5, 1);
    p.settle(5);
    expect(p.checkpoint()).toBe(0);
    p.release(atStart); // the catch-up begun before the hold lifts nothing
    expect(p.checkpoint()).toBe(0);
    p.release(p.catchUpToken()); // one begun after it does
    expect(p.checkpoint()).toBe(5);
  });

  it('never goes below what was saved', () => {
    const p = new TableProgress('t', 100, 1);
    p.release(p.catchUpToken());
    p.saved(120);
    p.begin(101, 1); // read again from below the saved checkpoint
    expect(p.checkpoint()).toBe(120);
  });

  it('forgets settled ids once the checkpoint is written past them, unless a catch-up under way may read them', () => {
    const p = new TableProgress('t', 0, 1);
    p.release(p.catchUpToken());
    const settle = (...ids: number[]) => {
      for (const id of ids) {
        expect(p.begin(id, 1)).toBe(true);
        p.settle(id);
      }
    };
    settle(1, 2, 3);
    p.saved(2);
    expect(p.persisted).toBe(2);
    expect(p.begin(3, 1)).toBe(false); // above the checkpoint: still known
    expect(p.begin(2, 1)).toBe(true); // written past: forgotten (no catch-up reads it again)
    p.settle(2);

    // A catch-up begins from 2 and may read 3.. again: what it may read stays known while it runs.
    const token = p.catchUpToken();
    settle(4, 5);
    p.saved(5);
    expect(p.begin(3, 1)).toBe(false);
    expect(p.begin(5, 1)).toBe(false);
    p.release(token);
    p.saved(5); // not moved: nothing changes
    expect(p.begin(4, 1)).toBe(false);
    settle(6);
    p.saved(6); // moved, and no catch-up runs: 2..6 go
    for (const id of [3, 4, 5, 6]) {
      expect(p.begin(id, 1)).toBe(true);
      p.settle(id);
    }
  });
});
