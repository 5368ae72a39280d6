import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import type { PumpConfig } from '../src/config/env.js';
import { now } from './stats.js';

const UNIFIED_BODY = JSON.stringify({ prediccion: 10, status: 'success' });
const OUTAGE_BODY = JSON.stringify({ detail: 'bench outage' });
/** A body larger than this is not one of the engine's requests; the bench answers 413 and moves on. */
const MAX_BODY_BYTES = 64 * 1024;

/**
 * Called once per key, at its first arrival answered 200: the route (`unified` or `sensor`), the request's
 * path, its parsed body, and the arrival time (see `now()`).
 */
export type ArrivalObserver = (
  route: 'unified' | 'sensor',
  path: string,
  body: Record<string, unknown>,
  at: number,
) => void;

export interface Completion {
  done: boolean;
  /** Arrival time (ms, see `now()`) of the request that completed the expected set, or of the last new key. */
  at: number;
}

/**
 * The prediction backend as far as the benchmark needs it: it answers the unified and the per-sensor
 * routes with 200 and the contract bodies, over keep-alive, and records when each Idempotency-Key first
 * arrived. `down` turns every answer into 503 (a backend outage).
 */
export class BenchServer {
  down = false;
  /** First arrival of each unified vector key (answered 200). */
  readonly unified = new Map<string, number>();
  /** Per-sensor keys answered 200 (a Set, not a Map: a million entries in the memory phase). */
  readonly sensorKeys = new Set<string>();
  lastUnifiedAt = 0;
  lastSensorAt = 0;
  /** Requests answered 200 whose key had already been answered 200 before. */
  duplicates = 0;
  requests = 0;
  refused = 0;
  /** Sees every key's first arrival (the fleet phase times each delivery by it); cleared by reset(). */
  observer: ArrivalObserver | undefined;
  /**
   * 0: the reference server, which handles the requests of one connection side by side (node:http
   * parses pipelined requests as they come and sends the answers in order). Above 0: a uvicorn-style
   * server, which takes one request per connection at a time and answers it after this many ms of work
   * (uvicorn reads a connection's next request only once the answer to the one before is written).
   */
  serialMs = 0;
  /** Serial mode: each connection's last request still being handled. */
  private readonly lanes = new WeakMap<Socket, Promise<void>>();
  private readonly unifiedPaths: Set<string>;
  private server: Server | undefined;
  private readonly sockets = new Set<Socket>();
  port = 0;

  constructor(pumps: PumpConfig[]) {
    this.unifiedPaths = new Set(pumps.map((p) => `${p.pathPrefix}${p.unifiedPath}`));
  }

  /** Serves these pumps' unified routes too (the fleet phase's synthetic pumps). */
  servePumps(pumps: PumpConfig[]): void {
    for (const p of pumps) this.unifiedPaths.add(`${p.pathPrefix}${p.unifiedPath}`);
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  async start(): Promise<void> {
    const server = createServer({ keepAlive: true, keepAliveTimeout: 60_000 }, (req, res) =>
      this.handle(req, res),
    );
    server.keepAliveTimeout = 60_000;
    server.headersTimeout = 65_000;
    server.on('connection', (s: Socket) => {
      s.setNoDelay(true);
      this.sockets.add(s);
      s.on('close', () => this.sockets.delete(s));
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, '127.0.0.1', () => resolve());
    });
    this.server = server;
    this.port = (server.address() as AddressInfo).port;
  }

  /** Forgets what was recorded (between phases). */
  reset(): void {
    this.unified.clear();
    this.sensorKeys.clear();
    this.lastUnifiedAt = 0;
    this.lastSensorAt = 0;
    this.duplicates = 0;
    this.requests = 0;
    this.refused = 0;
    this.down = false;
    this.observer = undefined;
  }

  /** Whether the expected numbers of distinct keys have arrived, and when the last new one did. */
  completion(unifiedExpected: number, sensorExpected: number): Completion {
    const done = this.unified.size >= unifiedExpected && this.sensorKeys.size >= sensorExpected;
    const at = Math.max(
      unifiedExpected > 0 ? this.lastUnifiedAt : 0,
      sensorExpected > 0 ? this.lastSensorAt : 0,
    );
    return { done, at };
  }

  async stop(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    for (const s of this.sockets) s.destroy();
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const at = now();
    this.requests += 1;
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size <= MAX_BODY_BYTES) chunks.push(c);
    });
    req.on('end', () => {
      if (this.serialMs <= 0) {
        this.answer(req, res, chunks, size, at);
        return;
      }
      const socket = req.socket;
      const turn = (this.lanes.get(socket) ?? Promise.resolve()).then(
        () =>
          new Promise<void>((resolve) =>
            setTimeout(() => {
              this.answer(req, res, chunks, size, now());
              resolve();
            }, this.serialMs),
          ),
      );
      this.lanes.set(socket, turn);
    });
    req.on('error', () => res.destroy());
  }

  private answer(
    req: IncomingMessage,
    res: ServerResponse,
    chunks: Buffer[],
    size: number,
    at: number,
  ): void {
    if (this.down) {
      this.refused += 1;
      reply(res, 503, OUTAGE_BODY);
      return;
    }
    if (size > MAX_BODY_BYTES) {
      reply(res, 413, '{"detail":"too large"}');
      return;
    }
    const key = header(req, 'idempotency-key') ?? '';
    const path = req.url ?? '';
    if (this.unifiedPaths.has(path)) {
      if (this.unified.has(key)) this.duplicates += 1;
      else {
        this.unified.set(key, at);
        this.lastUnifiedAt = at;
        if (this.observer) this.observer('unified', path, parseBody(chunks), at);
      }
      reply(res, 200, UNIFIED_BODY);
      return;
    }
    let body: { id_sensor?: unknown; valor?: unknown } = {};
    try {
      body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as typeof body;
    } catch {
      reply(res, 422, '{"detail":"not JSON"}');
      return;
    }
    if (this.sensorKeys.has(key)) this.duplicates += 1;
    else {
      this.sensorKeys.add(key);
      this.lastSensorAt = at;
      this.observer?.('sensor', path, body, at);
    }
    reply(
      res,
      200,
      JSON.stringify({
        id_registro: body.id_sensor,
        valor: body.valor,
        prediccion: 1,
        descripcion: 'Normal',
        contador_anomalias: 0,
      }),
    );
  }
}

function parseBody(chunks: Buffer[]): Record<string, unknown> {
  try {
    return JSON.parse(Buffer.concat(chunks).toString('utf8')) as Record<string, unknown>;
  } catch {
    return {};
  }
}

function reply(res: ServerResponse, status: number, body: string): void {
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
  res.end(body);
}

function header(req: IncomingMessage, name: string): string | undefined {
  const v = req.headers[name];
  return Array.isArray(v) ? v[0] : v;
}
