import { describe, expect, it } from 'vitest';
import { pgText, pgTextOrNull } from '../../src/util/pg-text.js';

describe('pgText', () => {
  it('returns text PostgreSQL accepts unchanged, emoji and accents included', () => {
    const s = 'clasificación 🔧 ok';
    expect(pgText(s)).toBe(s);
    expect(pgText('')).toBe('');
  });

  it('replaces NUL and lone surrogates with U+FFFD, and keeps surrogate pairs', () => {
    const nul = String.fromCharCode(0);
    expect(pgText(`a${nul}b${nul}`)).toBe('a\ufffdb\ufffd');
    expect(pgText('x\ud800y')).toBe('x\ufffdy');
    expect(pgText('\udc00🔧\ud83d')).toBe('\ufffd🔧\ufffd');
    expect(pgText(`🔧${nul}`)).toBe('🔧\ufffd');
  });

  it('maps undefined and null to SQL NULL', () => {
    expect(pgTextOrNull(undefined)).toBeNull();
    expect(pgTextOrNull(null)).toBeNull();
    expect(pgTextOrNull(`${String.fromCharCode(0)}`)).toBe('\ufffd');
  });
});
