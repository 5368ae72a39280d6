import type { PumpConfig } from '../config/env.js';
import type { SensorDefinition } from '../config/pumps.js';
import { MEMBER_ID_LIMIT } from '../store/members.js';

/** One sensor reading, decoded from a NOTIFY payload or from a catch-up row. */
export interface Reading {
  pump: string;
  sensor: SensorDefinition;
  /** The row id in the sensor table (`id_sensor`). */
  id: number;
  valor: number;
  /** The grouping key, exactly as stored. */
  tiempo: string;
  /** Clock time at which the engine received it. */
  receivedAt: number;
  origin: 'notify' | 'catchup';
  /** Set for a per-sensor post taken back from the deferred queue: its group was dealt with long ago. */
  deferredId?: number;
  /** A deferred post's own Idempotency-Key (a replay's); without it the reading's key is used. */
  key?: string;
}

export type RejectReason =
  | 'unknown_channel'
  | 'oversized'
  | 'not_json'
  | 'not_object'
  | 'bad_id_sensor'
  | 'bad_tiempo_sensor'
  | 'valor_null'
  | 'valor_not_number'
  | 'valor_not_finite';

export interface Rejection {
  reason: RejectReason;
  detail: string;
  channel: string;
  payload: string;
  /** Set when the payload names a row id: kept with the dead letter. */
  pump?: string;
  table?: string;
  id?: number;
}

export type Decoded = { ok: true; reading: Reading } | { ok: false; rejection: Rejection };

/** Our own trigger's payload is under 200 characters; anything this large is not a reading we understand. */
export const MAX_PAYLOAD_CHARS = 2048;
const MAX_TIEMPO_LENGTH = 64;

interface Route {
  pump: string;
  sensor: SensorDefinition;
}

/** Maps channels to sensors and turns raw payloads into readings or counted rejections. */
export class Decoder {
  private readonly routes = new Map<string, Route>();

  constructor(pumps: PumpConfig[]) {
    for (const p of pumps) for (const s of p.sensors) this.routes.set(s.channel, { pump: p.id, sensor: s });
  }

  get channels(): string[] {
    return [...this.routes.keys()];
  }

  route(channel: string): Route | undefined {
    return this.routes.get(channel);
  }

  decode(
    channel: string,
    payload: string,
    receivedAt: number,
    origin: Reading['origin'] = 'notify',
  ): Decoded {
    const route = this.routes.get(channel);
    const reject = (reason: RejectReason, detail: string, id?: number): Decoded => ({
      ok: false,
      rejection: {
        reason,
        detail,
        channel,
        payload,
        ...(route && id !== undefined ? { pump: route.pump, table: route.sensor.table, id } : {}),
      },
    });
    if (!route) return reject('unknown_channel', `no pump listens on channel "${channel}"`);
    if (payload.length > MAX_PAYLOAD_CHARS) {
      return reject('oversized', `payload of ${payload.length} characters exceeds ${MAX_PAYLOAD_CHARS}`);
    }
    let body: unknown;
    try {
      body = JSON.parse(payload);
    } catch {
      return reject('not_json', 'payload is not JSON');
    }
    if (typeof body !== 'object' || body === null || Array.isArray(body)) {
      return reject(
        'not_object',
        `payload is a JSON ${Array.isArray(body) ? 'array' : typeof body}, expected an object`,
      );
    }
    const { id_sensor: id, valor, tiempo_sensor: tiempo } = body as Record<string, unknown>;
    if (typeof id !== 'number' || !Number.isSafeInteger(id) || id < 0) {
      return reject('bad_id_sensor', `id_sensor ${JSON.stringify(id) ?? 'missing'} is not a row id`);
    }
    if (id >= MEMBER_ID_LIMIT) {
      return reject('bad_id_sensor', `id_sensor ${id} is beyond the 2^40 row ids the outbox can record`);
    }
    if (typeof tiempo !== 'string' || tiempo.trim() === '' || tiempo.length > MAX_TIEMPO_LENGTH) {
      return reject('bad_tiempo_sensor', `tiempo_sensor ${describe(tiempo)} is not a timestamp text`, id);
    }
    if (valor === null || valor === undefined) return reject('valor_null', 'valor is null', id);
    if (typeof valor !== 'number') {
      // PostgreSQL renders NaN and Infinity as JSON strings.
      if (typeof valor === 'string' && /^-?(NaN|Infinity)$/.test(valor)) {
        return reject('valor_not_finite', `valor is ${valor}`, id);
      }
      return reject('valor_not_number', `valor ${describe(valor)} is not a number`, id);
    }
    if (!Number.isFinite(valor)) return reject('valor_not_finite', `valor is ${valor}`, id);
    return {
      ok: true,
      reading: { pump: route.pump, sensor: route.sensor, id, valor, tiempo, receivedAt, origin },
    };
  }
}

function describe(v: unknown): string {
  if (v === undefined) return 'missing';
  const s = JSON.stringify(v) ?? String(v);
  return s.length > 40 ? `${s.slice(0, 40)}…` : s;
}
