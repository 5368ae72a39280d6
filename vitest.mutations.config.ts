import { defineConfig, mergeConfig } from 'vitest/config';
import base from './vitest.config.js';

/** `npm run test:mutations` (scripts/mutations.ts): the suite's config with the mutation injector loaded. */
export default mergeConfig(base, defineConfig({ test: { setupFiles: ['test/mutations/setup.ts'] } }));
