import type { SensorDefinition } from '../config/pumps.js';

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
  /** Its table is read by more than one pump: the per-sensor post's key names the pump. */
  shared?: boolean;
  /** A deferred post's own Idempotency-Key (a replay's); without it the reading's key is used. */
  key?: string;
}

/** A row of a sensor table, as a group remembers its members. */
export interface Member {
  table: string;
  id: number;
}
