import type { SensorDefinition } from '../config/pumps.js';

/** A part of a row that its owner settles: its group, its post, or the dead letter that rejects it. */
export type Part = 'group' | 'post' | 'letter';

/** A row begun in its reader's ledger: each owner settles its part (ledger/ticket.ts). */
export interface Ticket {
  readonly id: number;
  settle(part: Part): void;
}

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
  /** Its row in its reader's ledger, once the intake has begun it (none for a post read back from the database). */
  ticket?: Ticket;
}

/** A row of a sensor table, as a group remembers its members. */
export interface Member {
  table: string;
  id: number;
  /** The row's ticket, whose group part is settled once the group is stored. */
  ticket?: Ticket | undefined;
}
