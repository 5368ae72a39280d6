import { defineConfig } from 'vitest/config';

/** Each test's limits: integration tests start real servers and child processes; a loaded 2-core machine is slow. */
export const limits = {
  testTimeout: 120_000,
  hookTimeout: 120_000,
  teardownTimeout: 30_000,
} as const;

/**
 * The acceptance, fault and plant-profile files, run a second time on SOURCE=replication (the `replication`
 * project): the contract, thresholds (partial vectors) and bad input, the plant-2026-03 wiring, the logbook
 * stream, and every fault file. Tests of the NOTIFY path itself skip there (docs/replication.md, Tests).
 */
export const replicationFiles = [
  'test/integration/engine.test.ts',
  'test/integration/plant.test.ts',
  'test/integration/trust.test.ts',
  'test/integration/logbook.test.ts',
  'test/fault/faults.test.ts',
  'test/fault/replicas.test.ts',
  'test/fault/plant-replicas.test.ts',
  'test/fault/lease-loss.test.ts',
  'test/fault/logbook-faults.test.ts',
  'test/fault/seams.test.ts',
  'test/fault/routes.test.ts',
  'test/fault/unreachable-stop.test.ts',
  // Not test/fault/handover.test.ts: a rebalance between replicas does not happen on this source, where
  // the slot's holder serves every pump.
];

/**
 * `npm test`: two projects on one embedded PostgreSQL (the root's global set-up, which runs once and which
 * both projects inherit; its server has wal_level=logical). `notify` runs every file on the default source;
 * `replication` runs `replicationFiles` again with TEST_SOURCE=replication (test/helpers/engine.ts).
 * `--project notify` or `--project replication` runs one of them.
 */
export default defineConfig({
  test: {
    globalSetup: ['test/helpers/global-setup.ts'],
    fileParallelism: true,
    maxWorkers: 2,
    projects: [
      { test: { name: 'notify', include: ['test/**/*.test.ts'], pool: 'forks', ...limits } },
      {
        test: {
          name: 'replication',
          include: replicationFiles,
          env: { TEST_SOURCE: 'replication' },
          pool: 'forks',
          ...limits,
        },
      },
    ],
  },
});
