import { describe, expect, it } from 'vitest';
import { parseEngineVariants, parseOptions } from '../../bench/options.js';

/** The bench's command line: the variants a before/after run compares, and the new phase's sizes. */
describe('bench options', () => {
  it('reads --engine-variants as named settings, in order', () => {
    expect(
      parseEngineVariants('p1:BACKEND_PIPELINING=1; p4:BACKEND_PIPELINING=4,SENSOR_POSTS=true;plain'),
    ).toEqual([
      { name: 'p1', env: { BACKEND_PIPELINING: '1' } },
      { name: 'p4', env: { BACKEND_PIPELINING: '4', SENSOR_POSTS: 'true' } },
      { name: 'plain', env: {} },
    ]);
    expect(parseEngineVariants(undefined)).toEqual([]);
  });

  it('refuses a variant named twice, a bad name or a setting without a value', () => {
    expect(() => parseEngineVariants('a:X=1;a:X=2')).toThrow(/"a" given twice/);
    expect(() => parseEngineVariants('a b:X=1')).toThrow(/expected 1-24 letters/);
    expect(() => parseEngineVariants('a:X')).toThrow(/--engine-variants: got "X", expected KEY=VALUE/);
  });

  it('sizes the burst by mode and takes the burst phase and a serial backend', () => {
    const quick = parseOptions(['--quick', '--only', 'burst', '--backend-serial-ms', '2']);
    expect([quick.burstRows, quick.backendSerialMs, [...quick.phases]]).toEqual([3_500, 2, ['burst']]);
    expect(parseOptions([]).burstRows).toBe(70_000);
    expect(() => parseOptions(['--burst-rows', '10'])).toThrow(/--burst-rows: got "10"/);
  });
});
