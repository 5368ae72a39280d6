import { describe, expect, it } from 'vitest';
import { formatLsn, Positions, parseLsn, type RowRef } from '../../src/source/replication/positions.js';
import { tiempoOf, valorOf } from '../../src/source/replication/rows.js';

describe('WAL positions', () => {
  it('parses and formats X/Y', () => {
    expect(parseLsn('0/16B3748')).toBe(0x16b3748n);
    expect(parseLsn('1/0')).toBe(1n << 32n);
    expect(formatLsn(parseLsn('AB/CDEF0123'))).toBe('AB/CDEF0123');
    expect(() => parseLsn('16B3748')).toThrow(/not a WAL position/);
  });
});

describe('Positions', () => {
  const ref = (id: number): RowRef => ({ reader: 'A', table: 't', id });

  it('confirms a transaction only once every row of it is settled, and never past an earlier open one', () => {
    const p = new Positions();
    const settled = new Set<number>();
    const isSettled = (r: RowRef) => settled.has(r.id);
    p.begin(1);
    p.row(ref(1));
    p.row(ref(2));
    p.commit(100n);
    p.begin(2);
    p.row(ref(3));
    p.commit(200n);
    expect(p.advance(isSettled)).toBeUndefined();
    settled.add(3); // the later transaction settles first: nothing may be confirmed yet
    expect(p.advance(isSettled)).toBeUndefined();
    settled.add(1);
    expect(p.advance(isSettled)).toBeUndefined();
    expect(p.pending).toBe(2); // row 2, and row 3 not yet looked at again
    settled.add(2);
    expect(p.advance(isSettled)).toBe(200n);
    expect(p.pending).toBe(0);
  });

  it('confirms an idle keepalive only with nothing open or waiting, and never goes back', () => {
    const p = new Positions();
    p.keepalive(50n);
    expect(p.advance(() => true)).toBe(50n);
    p.begin(1);
    p.row(ref(9));
    p.keepalive(80n); // a transaction is open: its rows are below what the keepalive says was sent
    expect(p.advance(() => false)).toBeUndefined();
    p.commit(90n);
    expect(p.advance(() => false)).toBeUndefined();
    expect(p.advance(() => true)).toBe(90n);
    p.keepalive(70n);
    expect(p.advance(() => true)).toBeUndefined();
    expect(p.confirmed).toBe(90n);
  });

  it('refuses rows and commits outside a transaction', () => {
    const p = new Positions();
    expect(() => p.row(ref(1))).toThrow(/outside a transaction/);
    expect(() => p.commit(1n)).toThrow(/outside a transaction/);
  });
});

describe('row values from the slot, rendered as the tables are read', () => {
  it('valor_sensor as float8', () => {
    expect(valorOf('12.5')).toBe(12.5);
    expect(valorOf('-1e-7')).toBe(-1e-7);
    expect(valorOf('Infinity')).toBe(Number.POSITIVE_INFINITY);
    expect(valorOf('NaN')).toBeNaN();
    expect(valorOf('')).toBeNaN();
    expect(valorOf('12abc')).toBeNaN();
    expect(valorOf(null)).toBeNull();
    expect(valorOf(3)).toBe(3);
  });

  it('tiempo_sensor as to_json renders it', () => {
    expect(tiempoOf('2025-01-01T10:00:00', 25)).toBe('2025-01-01T10:00:00');
    expect(tiempoOf('10:00', 25)).toBe('10:00');
    expect(tiempoOf('2025-01-01 10:00:00.25', 1114)).toBe('2025-01-01T10:00:00.25');
    expect(tiempoOf('2025-01-01 10:00:00+00', 1184)).toBe('2025-01-01T10:00:00+00:00');
    expect(tiempoOf('2025-01-01 10:00:00+05:30', 1184)).toBe('2025-01-01T10:00:00+05:30');
    expect(tiempoOf('2025-01-01 10:00:00', undefined, 'timestamp without time zone')).toBe(
      '2025-01-01T10:00:00',
    );
    expect(tiempoOf('infinity', 1114)).toBe('infinity');
    expect(tiempoOf(null, 25)).toBeNull();
  });
});
