import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config/env.js';
import { Decoder } from '../../src/source/decode.js';

const decoder = new Decoder(loadConfig({}).pumps);
const ch = 'canal_sensores_corriente';

describe('decoder', () => {
  it('decodes the trigger payload, spaces and all', () => {
    const d = decoder.decode(
      ch,
      '{"id_sensor" : 7, "valor" : 12.5, "tiempo_sensor" : "2025-01-01T10:00:00"}',
      1,
    );
    expect(d).toMatchObject({
      ok: true,
      reading: { pump: 'A', id: 7, valor: 12.5, tiempo: '2025-01-01T10:00:00' },
    });
    if (d.ok) expect(d.reading.sensor.field).toBe('corriente_motor');
  });

  it.each([
    ['not json', 'not_json'],
    ['[1,2]', 'not_object'],
    ['"text"', 'not_object'],
    ['null', 'not_object'],
    ['{"id_sensor": 1, "valor": 1}', 'bad_tiempo_sensor'],
    ['{"id_sensor": 1, "valor": 1, "tiempo_sensor": ""}', 'bad_tiempo_sensor'],
    ['{"id_sensor": 1, "valor": 1, "tiempo_sensor": 5}', 'bad_tiempo_sensor'],
    // A NUL or a lone surrogate: no text column holds one (the outbox insert failed with 22P05).
    ['{"id_sensor": 1, "valor": 1, "tiempo_sensor": "12:00\\u0000"}', 'bad_tiempo_sensor'],
    ['{"id_sensor": 1, "valor": 1, "tiempo_sensor": "\\ud800"}', 'bad_tiempo_sensor'],
    ['{"id_sensor": 1, "valor": "12", "tiempo_sensor": "t"}', 'valor_not_number'],
    ['{"id_sensor": 1, "valor": null, "tiempo_sensor": "t"}', 'valor_null'],
    ['{"id_sensor": 1, "tiempo_sensor": "t"}', 'valor_null'],
    ['{"id_sensor": 1, "valor": "NaN", "tiempo_sensor": "t"}', 'valor_not_finite'],
    ['{"id_sensor": 1, "valor": "-Infinity", "tiempo_sensor": "t"}', 'valor_not_finite'],
    ['{"id_sensor": 1.5, "valor": 1, "tiempo_sensor": "t"}', 'bad_id_sensor'],
    ['{"id_sensor": "1", "valor": 1, "tiempo_sensor": "t"}', 'bad_id_sensor'],
    ['{"valor": 1, "tiempo_sensor": "t"}', 'bad_id_sensor'],
    [`{"id_sensor": 1, "valor": 1, "tiempo_sensor": "t", "pad": "${'x'.repeat(7900)}"}`, 'oversized'],
  ])('rejects %s as %s', (payload, reason) => {
    const d = decoder.decode(ch, payload, 1);
    expect(d.ok).toBe(false);
    if (!d.ok) {
      expect(d.rejection.reason).toBe(reason);
      expect(d.rejection.channel).toBe(ch);
    }
  });

  it('keeps the row id of a bad value for the dead letter', () => {
    const d = decoder.decode(ch, '{"id_sensor": 9, "valor": null, "tiempo_sensor": "t"}', 1);
    expect(d).toMatchObject({ ok: false, rejection: { id: 9, table: 'sensores_corriente', pump: 'A' } });
  });

  it('rejects a notification on a channel no pump listens on', () => {
    const d = decoder.decode('canal_desconocido', '{"id_sensor": 1, "valor": 1, "tiempo_sensor": "t"}', 1);
    expect(d).toMatchObject({ ok: false, rejection: { reason: 'unknown_channel' } });
  });
});

describe('decoder with shared tables (plant-2026-03)', () => {
  const plant = new Decoder(loadConfig({ PUMPS_PROFILE: 'plant-2026-03' }).pumps);
  const payload = '{"id_sensor": 4, "valor": 6.6, "tiempo_sensor": "2026-03-01T08:00:00"}';

  it('decodes a shared channel once into one reading per pump, each with its own field and endpoint', () => {
    const d = plant.decode('canal_presion_agua_b', payload, 1);
    expect(d.ok).toBe(true);
    if (!d.ok) return;
    expect(d.readings.map((r) => [r.pump, r.sensor.field, r.sensor.endpoint, r.shared])).toEqual([
      ['A', 'presion_agua_mp', expect.any(String), true],
      ['B', 'presion_agua_ap', expect.any(String), true],
    ]);
    expect(plant.decode('canal_presion_agua_b', payload, 1, 'catchup', 'B')).toMatchObject({
      ok: true,
      readings: [{ pump: 'B' }],
    });
  });

  it('an unshared channel gives one reading, not marked shared', () => {
    const d = plant.decode('canal_sensores_corriente_b', payload, 1);
    expect(d.ok && d.readings.map((r) => [r.pump, r.shared])).toEqual([['B', undefined]]);
  });
});
