import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface RecordedRequest {
  at: number;
  path: string;
  apiKey: string | undefined;
  idempotencyKey: string | undefined;
  body: Record<string, unknown>;
  status: number;
}

/** Decides the answer to one request; return undefined for the default 200. */
export type Behaviour = (
  req: RecordedRequest,
) => { status: number; headers?: Record<string, string>; delayMs?: number } | 'hang' | undefined;

/**
 * A real HTTP server standing in for the prediction backend. It records every request and counts
 * successful deliveries by Idempotency-Key, as a backend honouring the key would.
 */
export class FakeBackend {
  readonly requests: RecordedRequest[] = [];
  behaviour: Behaviour = () => undefined;
  private server: Server | undefined;
  private readonly sockets = new Set<import('node:net').Socket>();
  port = 0;

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  async start(port = 0): Promise<this> {
    this.server = createServer((req, res) => void this.handle(req, res));
    this.server.on('connection', (s) => {
      this.sockets.add(s);
      s.on('close', () => this.sockets.delete(s));
    });
    await new Promise<void>((resolve) => this.server?.listen(port, '127.0.0.1', resolve));
    this.port = (this.server.address() as AddressInfo).port;
    return this;
  }

  async stop(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
    this.server = undefined;
  }

  /** Successful (200) requests whose path ends with `suffix`. */
  ok(suffix: string): RecordedRequest[] {
    return this.requests.filter((r) => r.status === 200 && r.path.endsWith(suffix));
  }

  /** Successful deliveries per idempotency key, for requests matching `match`. */
  deliveredByKey(match: (r: RecordedRequest) => boolean): Map<string, number> {
    const out = new Map<string, number>();
    for (const r of this.requests) {
      if (r.status !== 200 || !match(r) || !r.idempotencyKey) continue;
      out.set(r.idempotencyKey, (out.get(r.idempotencyKey) ?? 0) + 1);
    }
    return out;
  }

  /** Per idempotency key: how many 200 answers, and how many different bodies were accepted. */
  successes(): Map<string, { count: number; bodies: Set<string> }> {
    const out = new Map<string, { count: number; bodies: Set<string> }>();
    for (const r of this.requests) {
      if (r.status !== 200 || !r.idempotencyKey) continue;
      const e = out.get(r.idempotencyKey) ?? { count: 0, bodies: new Set<string>() };
      e.count += 1;
      e.bodies.add(JSON.stringify(r.body));
      out.set(r.idempotencyKey, e);
    }
    return out;
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    let body: Record<string, unknown> = {};
    try {
      body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as Record<string, unknown>;
    } catch {
      body = {};
    }
    const rec: RecordedRequest = {
      at: Date.now(),
      path: req.url ?? '',
      apiKey: header(req, 'x-api-key'),
      idempotencyKey: header(req, 'idempotency-key'),
      body,
      status: 200,
    };
    const decision = this.behaviour(rec);
    if (decision === 'hang') {
      rec.status = 0;
      this.requests.push(rec);
      return; // never answers; the client's timeout must fire
    }
    if (decision?.delayMs) await new Promise((r) => setTimeout(r, decision.delayMs));
    rec.status = decision?.status ?? 200;
    this.requests.push(rec);
    const isUnified = rec.path.includes('predecir');
    const answer =
      rec.status !== 200
        ? { detail: 'injected failure' }
        : isUnified
          ? { prediccion: 12.5, status: 'success' }
          : rec.path.includes('gm-bitacoras')
            ? { id: body.id, clasificacion: 'Rutina', alerta_aviso: null, procesado: true }
            : {
                id_registro: body.id_sensor,
                valor: body.valor,
                prediccion: 1,
                descripcion: 'Normal',
                contador_anomalias: 0,
              };
    res.writeHead(rec.status, { 'content-type': 'application/json', ...(decision?.headers ?? {}) });
    res.end(JSON.stringify(answer));
  }
}

function header(req: IncomingMessage, name: string): string | undefined {
  const v = req.headers[name];
  return Array.isArray(v) ? v[0] : v;
}
