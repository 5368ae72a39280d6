import { keeperMain } from './keeper.js';

await keeperMain(process.argv.slice(2));
