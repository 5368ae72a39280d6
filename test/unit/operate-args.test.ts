import { InvalidArgumentError } from 'commander';
import { describe, expect, it } from 'vitest';
import { parseId, parseSince } from '../../src/cli/args.js';

describe('operator command arguments', () => {
  it('--since takes a duration back from now or a timestamp', () => {
    const now = Date.parse('2025-06-01T12:00:00Z');
    expect(parseSince('30m', now).toISOString()).toBe('2025-06-01T11:30:00.000Z');
    expect(parseSince('2h', now).toISOString()).toBe('2025-06-01T10:00:00.000Z');
    expect(parseSince('7d', now).toISOString()).toBe('2025-05-25T12:00:00.000Z');
    expect(parseSince('2025-05-31T08:00:00Z', now).toISOString()).toBe('2025-05-31T08:00:00.000Z');
    expect(() => parseSince('last tuesday', now)).toThrow(InvalidArgumentError);
  });

  it('dead letter ids are positive integers, gathered in order', () => {
    expect(parseId('12', parseId('3'))).toEqual([3, 12]);
    for (const bad of ['0', '-1', '1.5', 'abc', '']) expect(() => parseId(bad)).toThrow(InvalidArgumentError);
  });
});
