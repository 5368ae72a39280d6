import type { PumpConfig } from '../config/env.js';
import type { SensorDefinition } from '../config/pumps.js';
import type { Reading } from '../model/reading.js';
import { MEMBER_ID_LIMIT } from '../store/members.js';
import { pgText } from '../util/pg-text.js';

export type RejectReason =
  | 'unknown_channel'
  | 'oversized'
  | 'not_json'
  | 'not_object'
  | 'bad_id_sensor'
  | 'bad_tiempo_sensor'
  | 'valor_null'
  | 'valor_not_number'
  | 'valor_not_finite'
  /** The notification named a row id the table does not hold. */
  | 'no_such_row'
  /** The notification's valor or tiempo_sensor differ from the row it names: the row's are used. */
  | 'payload_mismatch';

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

/**
 * A decoded payload: one reading per (pump, sensor) route of its channel (a shared table's row reaches
 * every pump that lists it); `reading` is the first of them.
 */
export type Decoded =
  | { ok: true; reading: Reading; readings: Reading[] }
  | { ok: false; rejection: Rejection };

/**
 * What a notification claims: a row id of the channel's table, with the values the payload carries. Only
 * the id is used, to read the row; the values are compared with the row's.
 */
export type Claim =
  | { ok: true; id: number; valor: unknown; tiempo: unknown }
  | { ok: false; rejection: Rejection };

/** A sensor table's row as read: the truth a reading is made of. */
export interface RowFields {
  id: number;
  valor: number | null;
  /** `tiempo_sensor` as the trigger's JSON renders it. */
  tiempo: string | null;
}

/** Our own trigger's payload is under 200 characters; anything this large is not a reading we understand. */
export const MAX_PAYLOAD_CHARS = 2048;
const MAX_TIEMPO_LENGTH = 64;

interface Route {
  pump: string;
  sensor: SensorDefinition;
}

/**
 * Maps channels to sensors and turns raw payloads into readings or counted rejections. A channel maps to
 * every (pump, sensor) that lists it: a payload is decoded once, and gives one reading per route.
 */
export class Decoder {
  private readonly routes = new Map<string, Route[]>();
  /** Channels that feed more than one (pump, sensor) of the whole wiring, served here or not. */
  private readonly sharedChannels = new Set<string>();

  /**
   * `wiring`: every pump of the wiring (default: `pumps`). Whether a table is shared is a fact of the
   * wiring, not of the pumps one process serves: a process per pump keys a shared table's posts with the
   * pump, as one process for both does, so their keys never meet at the backend.
   */
  constructor(pumps: PumpConfig[], wiring: readonly Pick<PumpConfig, 'id' | 'sensors'>[] = pumps) {
    for (const p of pumps) {
      for (const s of p.sensors) {
        const list = this.routes.get(s.channel) ?? [];
        list.push({ pump: p.id, sensor: s });
        this.routes.set(s.channel, list);
      }
    }
    const readers = new Map<string, number>();
    for (const p of wiring)
      for (const s of p.sensors) readers.set(s.channel, (readers.get(s.channel) ?? 0) + 1);
    for (const [channel, n] of readers) if (n > 1) this.sharedChannels.add(channel);
  }

  get channels(): string[] {
    return [...this.routes.keys()];
  }

  /** The channel's first route (its only one unless the table is shared). */
  route(channel: string): Route | undefined {
    return this.routes.get(channel)?.[0];
  }

  /** Every (pump, sensor) the channel feeds, in the order the pumps were given. */
  routesOf(channel: string): readonly Route[] {
    return this.routes.get(channel) ?? [];
  }

  decode(
    channel: string,
    payload: string,
    receivedAt: number,
    origin: Reading['origin'] = 'notify',
    /** Only this pump's route (a deferred post, a dead letter). */
    pump?: string,
  ): Decoded {
    const c = this.claim(channel, payload);
    if (!c.ok) return c;
    return this.fields(channel, c.id, c.valor, c.tiempo, receivedAt, origin, pump, payload);
  }

  /** A payload's claim: its row id, or why it names no row of the channel's table. */
  claim(channel: string, payload: string): Claim {
    const route = this.routes.get(channel)?.[0];
    const reject = (reason: RejectReason, detail: string): Claim => ({
      ok: false,
      rejection: { reason, detail, channel, payload },
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
    return { ok: true, id, valor, tiempo };
  }

  /**
   * A row's values, as read from its table or as a trusted payload carries them, into one reading per
   * route of the channel, or a rejection. `payload`: the text kept with a rejection (built from the
   * values when not given).
   */
  fields(
    channel: string,
    id: number,
    valor: unknown,
    tiempo: unknown,
    receivedAt: number,
    origin: Reading['origin'],
    pump?: string,
    payload?: string,
  ): Decoded {
    const all = this.routes.get(channel) ?? [];
    const routes = pump === undefined ? all : all.filter((r) => r.pump === pump);
    const route = routes[0];
    const reject = (reason: RejectReason, detail: string): Decoded => ({
      ok: false,
      rejection: {
        reason,
        detail,
        channel,
        payload: payload ?? rowPayload(id, valor, tiempo),
        ...(route ? { pump: route.pump, table: route.sensor.table, id } : {}),
      },
    });
    if (!route) return reject('unknown_channel', `no pump listens on channel "${channel}"`);
    if (
      typeof tiempo !== 'string' ||
      tiempo.trim() === '' ||
      tiempo.length > MAX_TIEMPO_LENGTH ||
      // A NUL or a lone surrogate: no sensor row's text holds one, and the outbox could not store it.
      pgText(tiempo) !== tiempo
    ) {
      return reject('bad_tiempo_sensor', `tiempo_sensor ${describe(tiempo)} is not a timestamp text`);
    }
    if (valor === null || valor === undefined) return reject('valor_null', 'valor is null');
    if (typeof valor !== 'number') {
      // PostgreSQL renders NaN and Infinity as JSON strings.
      if (typeof valor === 'string' && /^-?(NaN|Infinity)$/.test(valor)) {
        return reject('valor_not_finite', `valor is ${valor}`);
      }
      return reject('valor_not_number', `valor ${describe(valor)} is not a number`);
    }
    if (!Number.isFinite(valor)) return reject('valor_not_finite', `valor is ${valor}`);
    const shared = this.sharedChannels.has(channel);
    const readings = routes.map(
      (x): Reading => ({
        pump: x.pump,
        sensor: x.sensor,
        id,
        valor,
        tiempo,
        receivedAt,
        origin,
        ...(shared ? { shared } : {}),
      }),
    );
    return { ok: true, reading: readings[0] as Reading, readings };
  }
}

/** A row as the trigger's payload would carry it (kept with a dead letter of a row's values). */
export function rowPayload(id: number, valor: unknown, tiempo: unknown): string {
  return JSON.stringify({
    id_sensor: id,
    valor: typeof valor === 'number' && !Number.isFinite(valor) ? String(valor) : valor,
    tiempo_sensor: tiempo,
  });
}

/**
 * Whether a notification's claimed values are the row's; a value it leaves out is not a claim. NaN and
 * Infinity, which JSON cannot hold, are rendered by PostgreSQL as strings.
 */
export function claimMatches(claim: { valor: unknown; tiempo: unknown }, row: RowFields): boolean {
  // A payload may name the row alone (a trigger that sends `{id_sensor}`): only what it says is compared.
  if (claim.tiempo !== undefined && claim.tiempo !== row.tiempo) return false;
  if (claim.valor === undefined) return true;
  if (row.valor === null) return claim.valor === null;
  if (Number.isFinite(row.valor)) return claim.valor === row.valor;
  return (
    claim.valor === String(row.valor) ||
    (typeof claim.valor === 'number' && Object.is(claim.valor, row.valor))
  );
}

function describe(v: unknown): string {
  if (v === undefined) return 'missing';
  const s = JSON.stringify(v) ?? String(v);
  return s.length > 40 ? `${s.slice(0, 40)}…` : s;
}
