import { keeperMain } from './postgres-keeper.js';

await keeperMain(process.argv.slice(2));
