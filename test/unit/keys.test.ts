import { describe, expect, it } from 'vitest';
import { logbookKey, readingKey, replaySuffix, vectorKey } from '../../src/model/keys.js';
import {
  logbookEntryId,
  logbookEntryPayload,
  notificationPayload,
  sensorPostBody,
} from '../../src/model/payload.js';

describe('idempotency keys', () => {
  it('a reading: its table and id; its pump too when the table is shared; its own key first', () => {
    const r = { pump: 'A', id: 7, sensor: { table: 't' } };
    expect(readingKey(r)).toBe('rd-t-7');
    expect(readingKey({ ...r, shared: true })).toBe('rd-A-t-7');
    expect(readingKey({ ...r, key: 'rd-t-7-replay-3' })).toBe('rd-t-7-replay-3');
  });

  it('a vector: the same rows give the same key, another first member another key', () => {
    const k = vectorKey('A', '2025-01-01T00:00:00', [5, 3]);
    expect(k).toMatch(/^vec-A-[0-9a-f]{32}$/);
    expect(vectorKey('A', '2025-01-01T00:00:00', [3, 9])).toBe(k);
    expect(vectorKey('A', '2025-01-01T00:00:00', [4])).not.toBe(k);
    expect(vectorKey('B', '2025-01-01T00:00:00', [3])).not.toBe(k);
  });

  it('a logbook entry: its table, never its channel; a replay: its suffix', () => {
    expect(logbookKey('gm_bitacoras_a', 12)).toBe('lb-gm_bitacoras_a-12');
    expect(replaySuffix(4)).toBe('-replay-4');
  });
});

describe('payloads', () => {
  it('a sensor row as its trigger notifies it, and the post body of two numbers', () => {
    expect(JSON.parse(notificationPayload({ id: 1, valor: 2.5, tiempo: '10:00' }))).toEqual({
      id_sensor: 1,
      valor: 2.5,
      tiempo_sensor: '10:00',
    });
    expect(JSON.parse(sensorPostBody(1, -0.25))).toEqual({ id_sensor: 1, valor: -0.25 });
  });

  it("a logbook entry's payload names its row; anything else names none", () => {
    expect(logbookEntryId(logbookEntryPayload(9, 'a'))).toBe(9);
    expect(logbookEntryId(logbookEntryPayload(9))).toBe(9);
    for (const bad of ['', 'null', '{"id":-1}', '{"id":"9"}', '{"id":1.5}', undefined, null]) {
      expect(logbookEntryId(bad)).toBeUndefined();
    }
  });
});
