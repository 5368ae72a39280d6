import type { PumpLane } from '../engine/pump-lane.js';
import type { Intake } from '../source/intake.js';
import type { HealthUnit } from './health-unit.js';

/**
 * Feeds the health unit from the engine's own events, as telemetry is fed: each reading (its pump,
 * channel, value and time received) and each answer of the backend to a vector (its failure
 * probability). Nothing else; no unit on the data's path knows about health.
 */
export function observeHealth(
  health: HealthUnit,
  u: { intake: Pick<Intake, 'on'>; lanes: Map<string, Pick<PumpLane, 'on'>> },
): void {
  u.intake.on('reading', (r) => {
    health.reading(r.pump, r.sensor.channel, r.valor, r.receivedAt, r.origin === 'notify');
  });
  for (const [pump, lane] of u.lanes) {
    lane.on('sent', (_row, result) => {
      if (result.kind !== 'dead' && result.prediccion !== undefined) health.answer(pump, result.prediccion);
    });
  }
}
