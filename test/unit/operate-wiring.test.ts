import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config/env.js';
import { chooseWiring } from '../../src/operate/wiring.js';
import { isProbe, probeNonce, probePayload } from '../../src/source/probe.js';
import type { RecordedWiring } from '../../src/store/wiring.js';

/** A wiring as listen records it, from a profile's configuration. */
function recorded(env: Record<string, string>, served: string[], at: string): RecordedWiring {
  const { wiring } = loadConfig(env);
  return {
    digest: wiring.digest,
    profile: wiring.profile,
    folder: wiring.folder,
    // As stored: JSON, read back.
    definitions: JSON.parse(JSON.stringify([...wiring.definitions.pumps, ...wiring.definitions.logbooks])),
    served,
    firstRecordedAt: new Date(at),
    recordedAt: new Date(at),
  };
}

const plant = () =>
  recorded({ PUMPS_PROFILE: 'plant-2026-03' }, ['A', 'B', 'bitacoras'], '2026-12-07T00:00:00Z');

describe('the wiring an operator command uses', () => {
  it('with none configured: the one recorded last, with what it served, and the same digest', () => {
    const chosen = chooseWiring({}, [plant()]);
    expect(chosen.warnings).toEqual([]);
    expect(chosen.config.wiring.digest).toBe(loadConfig({ PUMPS_PROFILE: 'plant-2026-03' }).wiring.digest);
    expect(chosen.config.pumps.map((p) => p.id)).toEqual(['A', 'B']);
    expect(chosen.config.logbooks.map((l) => l.id)).toEqual(['bitacoras']);
    expect(chosen.config.pumps[0]?.sensors).toHaveLength(25);
    expect(chosen.line).toMatch(
      /^wiring: profile plant-2026-03 \(digest [0-9a-f]{16}\), as listen recorded it at 2026-12-07 00:00:00Z: pumps A, B, logbooks bitacoras$/,
    );
    // PUMPS narrows what was served.
    expect(chooseWiring({ PUMPS: 'B' }, [plant()]).config.pumps.map((p) => p.id)).toEqual(['B']);
  });

  it('with nothing recorded: the default files, said so', () => {
    const chosen = chooseWiring({}, []);
    expect(chosen.config.wiring.profile).toBeUndefined();
    expect(chosen.line).toBe(
      'wiring: the built-in default (nothing configured, and no wiring recorded by listen): pumps A, B',
    );
  });

  it('a wiring given wins; a different one recorded is warned about, the same one is not', () => {
    const other = chooseWiring({ PUMPS_PROFILE: 'default' }, [plant()]);
    expect(other.config.pumps[0]?.sensors).toHaveLength(20);
    expect(other.warnings).toHaveLength(1);
    expect(other.warnings[0]).toMatch(
      /^the wiring given \(profile default, digest [0-9a-f]{16}\) differs from the one listen recorded last: profile plant-2026-03/,
    );
    expect(chooseWiring({ PUMPS_PROFILE: 'plant-2026-03' }, [plant()]).warnings).toEqual([]);
  });

  it('two wirings recorded within the hour: the latest, and a warning naming the other', () => {
    const older = recorded({}, ['A', 'B'], '2026-12-06T23:30:00Z');
    const chosen = chooseWiring({}, [plant(), older]);
    expect(chosen.config.wiring.profile).toBe('plant-2026-03');
    expect(chosen.warnings).toEqual([
      expect.stringMatching(/^listen also recorded another wiring within the hour: the built-in default/),
    ]);
  });

  it('a record that does not check out is not used: the default, with a warning saying why', () => {
    const broken = { ...plant(), definitions: [{ kind: 'pump', id: 'A' }] };
    const chosen = chooseWiring({}, [broken]);
    expect(chosen.config.pumps.map((p) => p.sensors.length)).toEqual([20, 15]);
    expect(chosen.warnings[0]).toMatch(
      /^the wiring listen recorded \(profile plant-2026-03 .*\) cannot be used: pump definition the wiring recorded by listen/,
    );
  });
});

describe('a diagnose probe', () => {
  it('is exactly the marker and a hex nonce; anything more, or less, is no probe', () => {
    const payload = probePayload('0123456789abcdef');
    expect(probeNonce(payload)).toBe('0123456789abcdef');
    expect(isProbe(payload)).toBe(true);
    for (const forged of [
      JSON.stringify({ probe: 'pump-monitor diagnose', nonce: '0123456789abcdef', id_sensor: 5 }),
      JSON.stringify({ probe: 'pump-monitor diagnose', nonce: '0123456789abcdef', id: 5, bitacora: 'x' }),
      JSON.stringify({ probe: 'pump-monitor diagnose' }),
      JSON.stringify({ probe: 'something else', nonce: '0123456789abcdef' }),
      JSON.stringify({ probe: 'pump-monitor diagnose', nonce: 'not hex!' }),
      JSON.stringify({ diagnostic: true, nonce: '0123456789abcdef' }),
      `[${payload}]`,
      'not json',
      `${payload.slice(0, -1)}, "pad": "${'x'.repeat(200)}"}`,
    ]) {
      expect(isProbe(forged), forged).toBe(false);
    }
  });
});
