import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  BackendClient,
  createAgent,
  MAX_ANSWER_BYTES,
  RetryableError,
} from '../../src/delivery/backend-client.js';

/** The client's own undici handler: what it sends, and the answer as it comes, in any number of chunks. */

let server: Server;
let base: string;
const seen: { path: string; headers: IncomingMessage['headers']; body: string }[] = [];
const agent = createAgent(4);
/** Bytes the /huge and /drip answers got written before the client closed their connection. */
const written = { huge: 0, drip: 0 };
const HUGE_BYTES = 20 * 1024 * 1024;
const DRIP_BYTES = 20;

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
      } else if (req.url?.endsWith('/huge')) {
        // 20 MB in 64 KiB writes, each only once the last one drained: stops when the client goes.
        res.writeHead(200, { 'content-type': 'application/json' });
        const piece = Buffer.alloc(64 * 1024, 0x61);
        const next = () => {
          while (written.huge < HUGE_BYTES && !res.destroyed) {
            written.huge += piece.length;
            if (!res.write(piece)) return void res.once('drain', next);
          }
          res.end();
        };
        next();
      } else if (req.url?.endsWith('/drip')) {
        // The headers at once, then one byte of the body every 300 ms: never idle for as long as the timeout.
        res.writeHead(200, { 'content-type': 'application/json' });
        const timer = setInterval(() => {
          if (res.destroyed || written.drip >= DRIP_BYTES) {
            clearInterval(timer);
            res.end();
            return;
          }
          written.drip += 1;
          res.write(' ');
        }, 300);
        res.on('close', () => clearInterval(timer));
      } else if (req.url?.endsWith('/moved')) {
        res.writeHead(301, { location: 'https://elsewhere.example/sensores' });
        res.end('moved');
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

  it('keeps at most 64 KiB of a 20 MB answer, reads no further and answers on the status', async () => {
    const client = new BackendClient({ baseUrl: base, apiKey: 'k', timeoutMs: 30_000, agent });
    const answer = await client.post('/huge', '{}', 'k-huge');
    expect(answer.status).toBe(200);
    expect(answer.body.length).toBe(MAX_ANSWER_BYTES);
    // The connection was closed at the cap: the server could not write the rest (socket buffers allow a
    // few MB on loopback, never the 20).
    await new Promise((r) => setTimeout(r, 200));
    expect(written.huge).toBeLessThan(HUGE_BYTES / 2);
  });

  it('ends an attempt at timeoutMs even while the body keeps coming, a byte at a time', async () => {
    const client = new BackendClient({ baseUrl: base, apiKey: 'k', timeoutMs: 1_000, agent });
    const err = await client.post('/drip', '{}', 'k-drip').then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(RetryableError);
    expect((err as Error).message).toMatch(/no whole answer within 1000 ms/);
    // Cut long before the 20 bytes (6 s) were all sent.
    expect(written.drip).toBeLessThan(DRIP_BYTES);
  });

  it("gives a 3xx answer's Location", async () => {
    const client = new BackendClient({ baseUrl: base, apiKey: 'k', timeoutMs: 5_000, agent });
    expect(await client.post('/moved', '{}', 'k-moved')).toEqual({
      status: 301,
      body: 'moved',
      location: 'https://elsewhere.example/sensores',
    });
  });
});

describe('BACKEND_PIPELINING', () => {
  /**
   * A server on a raw socket that holds its first answer until the second request has arrived on the same
   * connection (or 5 s passed): it sees the second POST early only when the client pipelines.
   */
  async function pipelineProbe(pipelining: number) {
    const arrivals: { socket: number; key: string; beforeFirstAnswer: boolean }[] = [];
    let sockets = 0;
    let answeredFirst = false;
    const srv = createServer();
    let release: (() => void) | undefined;
    const secondArrived = new Promise<void>((resolve) => {
      release = resolve;
    });
    srv.on('connection', () => {
      sockets += 1;
    });
    srv.on('request', (req, res) => {
      const socket = sockets;
      const key = String(req.headers['idempotency-key']);
      req.resume();
      req.on('end', () => {
        arrivals.push({ socket, key, beforeFirstAnswer: !answeredFirst });
        const send = () => {
          res.writeHead(200, { 'content-type': 'application/json' });
          res.end('{"prediccion":1}');
        };
        if (arrivals.length === 1) {
          const giveUp = setTimeout(() => release?.(), 5_000);
          void secondArrived.then(() => {
            clearTimeout(giveUp);
            answeredFirst = true;
            send();
          });
        } else {
          release?.();
          send();
        }
      });
    });
    await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', () => resolve()));
    const url = `http://127.0.0.1:${(srv.address() as AddressInfo).port}`;
    const one = createAgent(1, pipelining);
    try {
      const client = new BackendClient({ baseUrl: url, apiKey: 'k', timeoutMs: 10_000, agent: one });
      const answers = await Promise.all([client.post('/a', '{}', 'k-a'), client.post('/b', '{}', 'k-b')]);
      return { answers: answers.map((a) => a.status), arrivals, sockets };
    } finally {
      await one.close();
      await new Promise<void>((resolve) => srv.close(() => resolve()));
    }
  }

  it('with 2, sends the second POST on the same connection before the first is answered', async () => {
    const r = await pipelineProbe(2);
    expect(r.answers).toEqual([200, 200]);
    expect(r.sockets).toBe(1);
    expect(r.arrivals.map((a) => [a.key, a.beforeFirstAnswer])).toEqual([
      ['k-a', true],
      ['k-b', true],
    ]);
  });

  it('with 1 (the default), sends the second only after the first answer', async () => {
    const r = await pipelineProbe(1);
    expect(r.answers).toEqual([200, 200]);
    expect(r.arrivals.map((a) => [a.key, a.beforeFirstAnswer])).toEqual([
      ['k-a', true],
      ['k-b', false],
    ]);
  });

  it('refuses a pipelining below 1 or not an integer', () => {
    expect(() => createAgent(1, 0)).toThrow(/pipelining: got 0/);
    expect(() => createAgent(1, 1.5)).toThrow(/pipelining: got 1.5/);
  });
});
