import type { Member } from './reading.js';

/** A missing field filled in for a partial vector. */
export interface Fill {
  field: string;
  from: 'last' | 'default';
  value: number;
}

/** A resolved group that can be sent: the body of one unified POST. */
export interface Vector {
  pump: string;
  tiempo: string;
  /** The body of the unified POST: `field: number`. */
  values: Record<string, number>;
  /** How many fields came from readings of this timestamp. */
  present: number;
  filled: Fill[];
  /** Optional fields left out for the backend's own default. */
  omitted: string[];
  members: Member[];
  firstReceivedAt: number;
}

/** A group resolved below what can be sent: recorded, never sent. */
export interface DroppedGroup {
  pump: string;
  tiempo: string;
  values: Record<string, number>;
  missing: string[];
  reason: 'expired' | 'evicted';
  members: Member[];
}
