import { expect } from 'vitest';
import './inject.js';

// The test file about to run, for the mutation log (children get it through test/helpers/child.ts).
if (process.env.PUMP_MONITOR_MUTATION)
  process.env.PUMP_MONITOR_MUTATION_FILE = expect.getState().testPath ?? '';
