import type { RowFields } from '../decode.js';

/**
 * Pure: a row's values as the slot gives them (the columns' text output), turned into what the rest of
 * the engine reads from the table: `valor_sensor` as float8, `tiempo_sensor` as `to_json(tiempo_sensor)
 * #>> '{}'` renders it (store/sensor-rows.ts). So a row groups by the same text whichever source read it,
 * and an installation switching sources does not split a timestamp's vector.
 */

/** Type oids whose text output differs from their JSON rendering. */
const TIMESTAMP = 1114;
const TIMESTAMPTZ = 1184;

/** float8's text output (finite, or NaN and the infinities). */
const FLOAT_TEXT = /^(?:[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|NaN|[+-]?Infinity)$/;

/** `valor_sensor` as float8: null stays null; text the cast would refuse becomes NaN, which the decoder rejects. */
export function valorOf(raw: unknown): number | null {
  if (raw === null || raw === undefined) return null;
  if (typeof raw === 'number') return raw;
  const text = String(raw).trim();
  return FLOAT_TEXT.test(text) ? Number(text) : Number.NaN;
}

/**
 * `tiempo_sensor` as to_json renders it: a text column as it is; a timestamp in ISO 8601 with a `T`, and
 * with time zone, an offset of hours and minutes (`+00` becomes `+00:00`). Needs DateStyle ISO, the
 * default, on the walsender.
 */
export function tiempoOf(raw: unknown, typeOid: number | undefined, typeName?: string): string | null {
  if (raw === null || raw === undefined) return null;
  const text = String(raw);
  const isTs = typeOid === TIMESTAMP || typeName === 'timestamp without time zone';
  const isTsTz = typeOid === TIMESTAMPTZ || typeName === 'timestamp with time zone';
  if (!isTs && !isTsTz) return text;
  const m = /^(\d{4,}-\d\d-\d\d) (\d\d:\d\d:\d\d(?:\.\d+)?)([+-]\d\d(?::\d\d(?::\d\d)?)?)?( BC)?$/.exec(text);
  if (!m) return text; // infinity, -infinity, or a style other than ISO: as given
  let zone = m[3] ?? '';
  if (isTsTz && /^[+-]\d\d$/.test(zone)) zone = `${zone}:00`;
  return `${m[1]}T${m[2]}${zone}${m[4] ?? ''}`;
}

/** A sensor row from the slot's columns; undefined when the id is not a safe integer (not one of ours). */
export function sensorRow(
  values: Record<string, unknown>,
  types: Map<string, { oid?: number; name?: string }>,
): RowFields | undefined {
  const id = Number(values.id);
  if (!Number.isSafeInteger(id)) return undefined;
  const t = types.get('tiempo_sensor');
  return { id, valor: valorOf(values.valor_sensor), tiempo: tiempoOf(values.tiempo_sensor, t?.oid, t?.name) };
}
