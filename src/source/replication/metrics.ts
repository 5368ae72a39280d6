import client from 'prom-client';

/** The replication source's gauges on /metrics, read from the source when scraped. */
export function registerReplicationGauges(
  registry: client.Registry,
  read: { lagBytes: () => number; lagSeconds: () => number; streaming: () => boolean },
): void {
  new client.Gauge({
    name: 'pump_monitor_replication_lag_bytes',
    help: 'WAL the replication slot holds for this engine: from its confirmed position to the current one',
    registers: [registry],
    collect() {
      this.set(read.lagBytes());
    },
  });
  new client.Gauge({
    name: 'pump_monitor_replication_lag_seconds',
    help: 'Age of the oldest transaction read from the slot and not yet confirmed (0 when none waits)',
    registers: [registry],
    collect() {
      this.set(read.lagSeconds());
    },
  });
  new client.Gauge({
    name: 'pump_monitor_replication_streaming',
    help: '1 while this replica reads the replication slot',
    registers: [registry],
    collect() {
      this.set(read.streaming() ? 1 : 0);
    },
  });
}
