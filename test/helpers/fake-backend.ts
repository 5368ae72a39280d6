import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { loadPumpDefinitions, type PumpDefinition } from '../../src/config/pumps.js';
import {
  JSON_CONTENT_TYPE,
  LOGBOOK_PATH,
  specPumpFor,
  specSensorPath,
  specUnifiedPath,
} from './spec-oracle.js';

export interface RecordedRequest {
  /** Arrival order at this backend, from 1. */
  seq: number;
  at: number;
  path: string;
  apiKey: string | undefined;
  idempotencyKey: string | undefined;
  /** The Content-Type header; anything but application/json is answered 415. */
  contentType: string | undefined;
  /** The raw request body. */
  raw: string;
  /** The body parsed as a JSON object; {} when it was not one (see `json`). */
  body: Record<string, unknown>;
  /** Whether the body was a JSON object. */
  json: boolean;
  /** The status answered; 0 while no answer has been sent (a held or hanging request). */
  status: number;
}

/** What the test wants for one request; undefined lets the backend validate and answer as the real one. */
export type Decision =
  | {
      status?: number;
      headers?: Record<string, string>;
      delayMs?: number;
      /** Answers only once this settles (a request held in flight on purpose). */
      gate?: Promise<unknown>;
    }
  | 'hang'
  | undefined;

export type Behaviour = (req: RecordedRequest) => Decision;

interface Route {
  pump: string;
  kind: 'unified' | 'sensor' | 'logbook';
  /** Unified only: the fields the body must hold, and those it may leave out. */
  required?: string[];
  optional?: string[];
}

export interface ServeOptions {
  /** The pumps whose paths this backend serves (their `pathPrefix` + endpoints and unified path). */
  pumps: (Pick<PumpDefinition, 'id' | 'pathPrefix' | 'unifiedPath' | 'sensors' | 'optionalFields'> & {
    vectorFields?: string[];
  })[];
  /** When set, a request with another X-API-Key gets 401, as the real backend answers. */
  apiKey?: string;
}

/**
 * A real HTTP server standing in for the prediction backend. It answers like the real one: 404 on a path
 * it does not serve, 401 on a wrong key, 400/422 on a body the real one rejects, else 200. It records every
 * request on arrival and the status it answered; the delivery ledger reads those records.
 */
export class FakeBackend {
  readonly requests: RecordedRequest[] = [];
  behaviour: Behaviour = () => undefined;
  /** The failure probability the unified routes answer (percent), or a function of the request's path. */
  prediction: number | ((path: string) => number) = 12.5;
  private server: Server | undefined;
  private readonly sockets = new Set<Socket>();
  private routes = new Map<string, Route>();
  private apiKey: string | undefined;
  /** Requests that failed inside the handler (e.g. the client vanished mid-body). */
  readonly handlerErrors: Error[] = [];
  port = 0;

  constructor(opts: ServeOptions = { pumps: loadPumpDefinitions() }) {
    this.serve(opts);
  }

  /** Which pumps' paths this backend answers, and with which key. */
  serve(opts: ServeOptions): this {
    // A pump of the default or the plant-2026-03 wiring is served at the paths the specification gives
    // (spec-oracle.ts), not at those the product's loader gave the caller: a wiring mistake gets 404.
    this.routes = new Map();
    for (const p of opts.pumps) {
      const optional = Object.keys(p.optionalFields ?? {});
      const spec = specPumpFor(p);
      this.routes.set(spec ? specUnifiedPath(spec) : `${p.pathPrefix}${p.unifiedPath}`, {
        pump: p.id,
        kind: 'unified',
        required: (p.vectorFields ?? p.sensors.map((s) => s.field)).filter((f) => !optional.includes(f)),
        optional,
      });
      for (const s of p.sensors)
        this.routes.set(spec ? specSensorPath(spec, s.table) : `${p.pathPrefix}${s.endpoint}`, {
          pump: p.id,
          kind: 'sensor',
        });
    }
    // The logbook classifier sits at the backend's root, beside the pumps' prefixes.
    this.routes.set(LOGBOOK_PATH, { pump: '', kind: 'logbook' });
    this.apiKey = opts.apiKey;
    return this;
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  async start(port = 0): Promise<this> {
    this.server = createServer((req, res) => {
      this.handle(req, res).catch((err: Error) => {
        this.handlerErrors.push(err);
        res.destroy();
      });
    });
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

  /** Requests to exactly `path` that were answered 200. */
  answered(path: string): RecordedRequest[] {
    return this.requests.filter((r) => r.status === 200 && r.path === path);
  }

  /** 200 answers per Idempotency-Key, for the requests matching `match`. */
  answeredByKey(match: (r: RecordedRequest) => boolean): Map<string, number> {
    const out = new Map<string, number>();
    for (const r of this.requests) {
      if (r.status !== 200 || !r.idempotencyKey || !match(r)) continue;
      out.set(r.idempotencyKey, (out.get(r.idempotencyKey) ?? 0) + 1);
    }
    return out;
  }

  /** Requests that arrived and have not been answered yet. */
  get inFlight(): number {
    return this.requests.filter((r) => r.status === 0).length;
  }

  /** The status the real backend would answer (per its contract in SYSTEM.md). */
  private validate(rec: RecordedRequest): number {
    const route = this.routes.get(rec.path);
    if (!route) return 404;
    if (this.apiKey !== undefined && rec.apiKey !== this.apiKey) return 401;
    // Every request of the engine is a JSON body: one without the header is refused, not guessed at.
    if (!JSON_CONTENT_TYPE.test(rec.contentType ?? '')) return 415;
    if (route.kind === 'sensor') {
      if (!rec.json || !Number.isInteger(rec.body.id_sensor)) return 400;
      return isNumber(rec.body.valor) ? 200 : 422;
    }
    if (route.kind === 'logbook') {
      const { id, bitacora, tabla } = rec.body;
      return rec.json &&
        Number.isInteger(id) &&
        typeof bitacora === 'string' &&
        (tabla === 'a' || tabla === 'b')
        ? 200
        : 422;
    }
    if (!rec.json) return 422;
    const allowed = new Set([...(route.required ?? []), ...(route.optional ?? [])]);
    if (!(route.required ?? []).every((f) => f in rec.body)) return 422;
    for (const [k, v] of Object.entries(rec.body)) if (!allowed.has(k) || !isNumber(v)) return 422;
    return 200;
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const rec: RecordedRequest = {
      seq: this.requests.length + 1,
      at: Date.now(),
      path: req.url ?? '',
      apiKey: header(req, 'x-api-key'),
      idempotencyKey: header(req, 'idempotency-key'),
      contentType: header(req, 'content-type'),
      raw: '',
      body: {},
      json: false,
      status: 0,
    };
    this.requests.push(rec);
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    rec.raw = Buffer.concat(chunks).toString('utf8');
    try {
      const parsed: unknown = JSON.parse(rec.raw);
      if (typeof parsed === 'object' && parsed !== null && !Array.isArray(parsed)) {
        rec.body = parsed as Record<string, unknown>;
        rec.json = true;
      }
    } catch {
      // Not JSON: rec.json stays false, and the validation answers 400/422.
    }
    const decision = this.behaviour(rec);
    if (decision === 'hang') return; // never answers; the client's timeout must fire
    if (decision?.gate) await decision.gate;
    if (decision?.delayMs) await new Promise((r) => setTimeout(r, decision.delayMs));
    const status = decision?.status ?? this.validate(rec);
    const isUnified = this.routes.get(rec.path)?.kind === 'unified';
    const answer =
      status !== 200
        ? { detail: `fake backend: ${status}` }
        : isUnified
          ? {
              prediccion: typeof this.prediction === 'number' ? this.prediction : this.prediction(rec.path),
              status: 'success',
            }
          : rec.path === LOGBOOK_PATH
            ? { id: rec.body.id, clasificacion: 'Rutina', alerta_aviso: null, procesado: true }
            : {
                id_registro: rec.body.id_sensor,
                valor: rec.body.valor,
                prediccion: 1,
                descripcion: 'Normal',
                contador_anomalias: 0,
              };
    rec.status = status;
    res.writeHead(status, { 'content-type': 'application/json', ...(decision?.headers ?? {}) });
    res.end(JSON.stringify(answer));
  }
}

function isNumber(v: unknown): v is number {
  return typeof v === 'number' && Number.isFinite(v);
}

function header(req: IncomingMessage, name: string): string | undefined {
  const v = req.headers[name];
  return Array.isArray(v) ? v[0] : v;
}
