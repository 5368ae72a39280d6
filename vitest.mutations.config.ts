import { defineConfig } from 'vitest/config';
import { limits } from './vitest.config.js';

/**
 * `npm run test:mutations` (scripts/mutations.ts): the notify project's files, on one project, with the
 * mutation injector loaded (the suite's config has two projects, which a root `setupFiles` would not reach).
 */
export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    globalSetup: ['test/helpers/global-setup.ts'],
    setupFiles: ['test/mutations/setup.ts'],
    pool: 'forks',
    fileParallelism: true,
    maxWorkers: 2,
    ...limits,
  },
});
