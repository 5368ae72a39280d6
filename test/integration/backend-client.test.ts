import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BackendClient, createAgent } from '../../src/delivery/backend-client.js';

/** The client's own undici handler: what it sends, and the answer as it comes, in any number of chunks. */

let server: Server;
let base: string;
const seen: { path: string; headers: IncomingMessage['headers']; body: string }[] = [];
const agent = createAgent(4);

beforeAll(async () => {
  server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      seen.push({ path: req.url ?? '', headers: req.headers, body: Buffer.concat(chunks).toString('utf8') });
      if (req.url?.endsWith('/split')) {
        // "clasificación" with its "ó" (two bytes in UTF-8) cut between two writes.
        const body = Buffer.from('{"clasificacion":"clasificación"}', 'utf8');
        const cut = body.indexOf(0xc3) + 1;
        res.writeHead(200, { 'content-type': 'application/json' });
        res.write(body.subarray(0, cut));
        setTimeout(() => res.end(body.subarray(cut)), 20);
      } else if (req.url?.endsWith('/busy')) {
        res.writeHead(503, { 'retry-after': '7' });
        res.end('later');
      } else {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end('{"prediccion":1}');
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(async () => {
  await agent.close();
  await new Promise<void>((resolve) => server.close(() => resolve()));
});

describe('BackendClient', () => {
  it("sends the body, the key and the Idempotency-Key under the base URL's own path", async () => {
    const client = new BackendClient({ baseUrl: `${base}/prefijo/`, apiKey: 'k-1', timeoutMs: 5_000, agent });
    const answer = await client.post('/prediccion_x', '{"id_sensor":7,"valor":1.5}', 'rd-t-7');
    expect(answer).toEqual({ status: 200, body: '{"prediccion":1}' });
    expect(seen.at(-1)).toMatchObject({
      path: '/prefijo/prediccion_x',
      body: '{"id_sensor":7,"valor":1.5}',
      headers: { 'content-type': 'application/json', 'x-api-key': 'k-1', 'idempotency-key': 'rd-t-7' },
    });
  });

  it('decodes an answer whose character is cut between two chunks', async () => {
    const client = new BackendClient({ baseUrl: base, apiKey: 'k', timeoutMs: 5_000, agent });
    const answer = await client.post('/split', '{}', 'k-split');
    expect(JSON.parse(answer.body)).toEqual({ clasificacion: 'clasificación' });
  });

  it('keeps the status and Retry-After of a refusal', async () => {
    const client = new BackendClient({ baseUrl: base, apiKey: 'k', timeoutMs: 5_000, agent });
    expect(await client.post('/busy', '{}', 'k-busy')).toEqual({
      status: 503,
      body: 'later',
      retryAfterMs: 7_000,
    });
  });
});
