import type pg from 'pg';
import { countPending } from '../store/outbox.js';

/**
 * Each pump's vectors waiting in the outbox, for /status and the gauges: read every two seconds, shown as
 * last read. Display only: a failed read leaves the last figures, and the next one tries again.
 */
export class OutboxDepth {
  private readonly depth = new Map<string, number>();
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly pool: pg.Pool,
    private readonly pumps: string[],
    private readonly everyMs = 2_000,
  ) {}

  start(): void {
    this.timer ??= setInterval(() => void this.refresh(), this.everyMs);
  }

  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }

  of(pump: string): number {
    return this.depth.get(pump) ?? 0;
  }

  /** Every pump's figure, for the gauge. */
  entries(): [string, number][] {
    return this.pumps.map((p) => [p, this.of(p)]);
  }

  private async refresh(): Promise<void> {
    try {
      const depth = await countPending(this.pool);
      for (const p of this.pumps) this.depth.set(p, depth.get(p) ?? 0);
    } catch {
      // Display only; the next refresh tries again.
    }
  }
}
