import { Worker } from 'node:worker_threads';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BackendClient, createAgent } from '../../src/delivery/backend-client.js';
import { waitFor } from '../helpers/wait.js';

/**
 * An attempt's deadline and its answer can fall due in the same turn of the event loop: the loop was held
 * up (a GC pause, a loaded machine) while the backend answered. Node runs timers before I/O, so the
 * deadline used to win, and the item was sent again under the same key, to a backend that had already
 * processed it (the "2 posts too many" of plant-replicas.test.ts). The backend here runs in a worker
 * thread, with an event loop of its own, so it answers while the test holds the main loop, as a backend
 * in another process would.
 */

const SERVER = `
const { createServer } = require('node:http');
const { parentPort, workerData } = require('node:worker_threads');
const state = new Int32Array(workerData.state);
const server = createServer((req, res) => {
  req.resume();
  req.on('end', () => {
    if (req.url === '/x') {
      Atomics.store(state, 0, 1); // received
      // Answers only once the test holds its event loop (state 3), at most 5 s on.
      Atomics.wait(state, 0, 1, 5000);
    }
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end('{"prediccion":1}', () => {
      if (req.url === '/x') Atomics.store(state, 0, 2); // answered
    });
  });
});
server.listen(0, '127.0.0.1', () => parentPort.postMessage(server.address().port));
`;

/** The attempt's deadline: long enough for the request to reach the backend on a loaded machine. */
const DEADLINE_MS = 1_500;

let worker: Worker;
let port = 0;
const state = new Int32Array(new SharedArrayBuffer(4));

beforeAll(async () => {
  worker = new Worker(SERVER, { eval: true, workerData: { state: state.buffer } });
  port = await new Promise<number>((resolve) => worker.once('message', resolve));
});

afterAll(async () => {
  await worker.terminate();
});

/** Holds the main event loop for `ms` (bounded), as a GC pause or a starved process would. */
function hold(ms: number): void {
  const until = Date.now() + ms;
  while (Date.now() < until) {
    // busy on purpose
  }
}

describe('an answer that arrives while the event loop is held up past the deadline', () => {
  it('is taken, not dropped for a retry', async () => {
    const agent = createAgent(1);
    try {
      const client = new BackendClient({
        baseUrl: `http://127.0.0.1:${port}`,
        apiKey: 'k',
        timeoutMs: DEADLINE_MS,
        agent,
      });
      // A warm connection, so the one attempt below spends its time on the answer only.
      expect((await client.post('/warm', '{}', 'warm')).status).toBe(200);
      Atomics.store(state, 0, 0);
      const started = Date.now();
      const attempt = client.post('/x', '{"a":1}', 'key-1');
      // The request leaves while the loop runs; once the backend has it, the loop is held until the
      // backend's answer is written and the deadline has passed.
      await waitFor('the backend has the request', () => Atomics.load(state, 0) >= 1, 5_000);
      const waitedFor = Date.now() - started;
      expect(waitedFor, 'the request reached the backend before the deadline').toBeLessThan(DEADLINE_MS);
      // Held from the loop's check phase: its next turn starts with the deadline overdue and the answer
      // in the socket, timers first (held from a timer's callback, the loop's cached clock would not see
      // the deadline pass until the turn after the answer was read).
      await new Promise((resolve) => setImmediate(resolve));
      Atomics.store(state, 0, 3);
      Atomics.notify(state, 0);
      const until = Date.now() + 5_000;
      while (Atomics.load(state, 0) !== 2 && Date.now() < until) Atomics.wait(state, 0, 3, 50);
      expect(Atomics.load(state, 0), 'the backend answered').toBe(2);
      hold(Math.max(0, started + DEADLINE_MS + 200 - Date.now()));
      expect(Date.now() - started).toBeGreaterThan(DEADLINE_MS);
      const answer = await attempt;
      expect(answer.status).toBe(200);
    } finally {
      await agent.close();
    }
  });
});
