/**
 * The reference prediction backend, for development and demos (`pump-monitor backend`, `npm start`).
 * It speaks the contract of the real backend (see docs: "Unified prediction", "Per-sensor POST",
 * "Backend key check") with the transparent scoring of ./scoring.ts instead of a trained model, and
 * classifies logbook entries with the keyword matcher of ./logbook-classifier.ts instead of an LLM.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import Fastify, {
  type FastifyBaseLogger,
  type FastifyError,
  type FastifyInstance,
  type FastifyReply,
  type FastifyRequest,
} from 'fastify';
import type pg from 'pg';
import type pino from 'pino';
import type {
  LogbookDefinition,
  LogbookStream,
  PumpDefinition,
  SensorDefinition,
} from '../../config/pumps.js';
import { describePgError, quoteIdent } from '../../store/db.js';
import { type Nominal, nominalOf } from '../nominal.js';
import { CLASSIFIER_METHOD, classifyLogbookEntry } from './logbook-classifier.js';
import { failureProbability, type SensorClass, SensorScorer } from './scoring.js';

/** What the backend needs of a pump; a PumpDefinition or a PumpConfig will do. */
export type BackendPump = Pick<
  PumpDefinition,
  'id' | 'pathPrefix' | 'unifiedPath' | 'sensors' | 'optionalFields' | 'vectorFields'
>;

/** What the backend needs of a logbook; a LogbookDefinition or a LogbookConfig will do. */
export type BackendLogbook = Pick<LogbookDefinition, 'id' | 'endpoint' | 'streams'>;

export interface ReferenceBackendOptions {
  /** The database holding the sensor tables; the backend writes clasificacion and contador_anomalias there. */
  pool: pg.Pool;
  pumps: BackendPump[];
  /** Logbooks whose endpoint (at the root, e.g. /gm-bitacoras/clasificar) classifies entries. */
  logbooks?: BackendLogbook[];
  /** The expected X-API-Key; an empty string disables the check. */
  apiKey: string;
  /** A pino logger for requests and errors; undefined or false logs nothing. */
  logger?: pino.Logger | false;
  /** How many Idempotency-Key answers to remember (least recently used are forgotten first). */
  idempotencyKeys?: number;
}

const DEFAULT_IDEMPOTENCY_KEYS = 10_000;
const MAX_IDEMPOTENCY_KEY_LENGTH = 255;
const INT4_OUT_OF_RANGE = '22003';

/** A status and body, computed once and possibly replayed for a repeated Idempotency-Key. */
interface Answer {
  status: number;
  body: unknown;
}

type JsonObject = Record<string, unknown>;

/** Builds the backend with its routes registered; the caller decides where it listens. */
export async function buildReferenceBackend(opts: ReferenceBackendOptions): Promise<FastifyInstance> {
  const app = createApp(opts.logger);
  const context: RouteContext = {
    pool: opts.pool,
    scorer: new SensorScorer(),
    counters: new AnomalyCounters(opts.pool),
    idempotency: new IdempotencyCache(opts.idempotencyKeys ?? DEFAULT_IDEMPOTENCY_KEYS),
  };
  const checkKey = apiKeyCheck(opts.apiKey);

  app.setNotFoundHandler((_request, reply) => reply.code(404).send({ detail: 'Not Found' }));
  app.setErrorHandler(errorHandler(undefined));
  app.get('/health', async () => ({ status: 'ok' }));

  for (const pump of opts.pumps) {
    const unifiedPath = `${pump.pathPrefix}${pump.unifiedPath}`;
    const vectorNominals = vectorNominalsOf(pump);
    app.post(
      unifiedPath,
      { onRequest: checkKey, errorHandler: errorHandler(unifiedBadBody) },
      answering(context.idempotency, unifiedPath, async (request) =>
        predictPump(pump, vectorNominals, request.body),
      ),
    );
  }
  for (const [sensorPath, targets] of sensorRoutes(opts.pumps)) {
    app.post(
      sensorPath,
      { onRequest: checkKey, errorHandler: errorHandler(sensorBadBody) },
      answering(context.idempotency, sensorPath, (request) => scoreReading(context, targets, request.body)),
    );
  }
  for (const [path, streams] of logbookRoutes(opts.logbooks ?? [])) {
    app.post(
      path,
      { onRequest: checkKey, errorHandler: errorHandler(logbookBadBody) },
      answering(context.idempotency, path, (request) => classifyEntry(context, streams, request.body)),
    );
  }
  return app;
}

/** One sensor a per-sensor path serves: the pump and the sensor whose table takes the write-back. */
interface SensorTarget {
  pump: BackendPump;
  sensor: SensorDefinition;
}

/**
 * Per-sensor paths and the sensors behind each. Usually one; several when a pump's definitions send two
 * tables to one endpoint (plant-2026-03: temperatura_agua_alim_b and temperatura_agua_alim_ap_b both to
 * /sensores_b/prediccion_temperatura_agua_alim). A table several pumps read has one path per pump.
 */
function sensorRoutes(pumps: BackendPump[]): Map<string, SensorTarget[]> {
  const routes = new Map<string, SensorTarget[]>();
  for (const pump of pumps) {
    for (const sensor of pump.sensors) {
      const path = `${pump.pathPrefix}${sensor.endpoint}`;
      const targets = routes.get(path) ?? [];
      targets.push({ pump, sensor });
      routes.set(path, targets);
    }
  }
  return routes;
}

/** The nominal point of each vector field: that of the first vector sensor feeding it. */
function vectorNominalsOf(pump: BackendPump): Map<string, Nominal> {
  const nominals = new Map<string, Nominal>();
  for (const s of pump.sensors) {
    if (s.inVector !== false && !nominals.has(s.field)) nominals.set(s.field, nominalOf(s));
  }
  return nominals;
}

function createApp(logger: pino.Logger | false | undefined): FastifyInstance {
  // Fastify's default request log lines hold method and URL, never headers, so X-API-Key stays out of logs.
  // Widened to Fastify's own logger type so that both branches build the same FastifyInstance type.
  if (logger) return Fastify({ loggerInstance: logger as FastifyBaseLogger });
  return Fastify({ logger: false });
}

interface RouteContext {
  pool: pg.Pool;
  scorer: SensorScorer;
  counters: AnomalyCounters;
  idempotency: IdempotencyCache;
}

// ---------------------------------------------------------------------------------------------------------
// Authentication, idempotency and errors

function digest(value: string): Buffer {
  return createHash('sha256').update(value, 'utf8').digest();
}

/** Rejects a wrong or missing X-API-Key with 401 before the body is even parsed. */
function apiKeyCheck(apiKey: string) {
  // Comparing digests gives equal lengths, so timingSafeEqual applies and the key's length does not leak.
  const expected = digest(apiKey);
  return async (request: FastifyRequest, reply: FastifyReply) => {
    if (apiKey === '') return;
    const given = firstHeader(request.headers['x-api-key']);
    if (given === undefined || !timingSafeEqual(digest(given), expected)) {
      return reply.code(401).send({ detail: 'Invalid or missing API key (X-API-Key)' });
    }
  };
}

function firstHeader(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value[0] : value;
}

/** Wraps a route's computation with Idempotency-Key handling and sends its answer. */
function answering(
  cache: IdempotencyCache,
  scope: string,
  compute: (request: FastifyRequest) => Promise<Answer>,
) {
  return async (request: FastifyRequest, reply: FastifyReply) => {
    const key = firstHeader(request.headers['idempotency-key']);
    if (key === undefined || key === '') return send(reply, await compute(request), false);
    if (key.length > MAX_IDEMPOTENCY_KEY_LENGTH) {
      return send(
        reply,
        { status: 400, body: { detail: 'Idempotency-Key is longer than 255 characters' } },
        false,
      );
    }
    // Scoped by path: one key reused on two endpoints names two different operations.
    const { answer, replayed } = await cache.run(`${scope}\n${key}`, () => compute(request));
    return send(reply, answer, replayed);
  };
}

function send(reply: FastifyReply, answer: Answer, replayed: boolean): FastifyReply {
  if (replayed) reply.header('idempotent-replayed', 'true');
  return reply.code(answer.status).send(answer.body);
}

function isSuccess(answer: Answer): boolean {
  return answer.status >= 200 && answer.status < 300;
}

/**
 * Remembers the first successful answer per Idempotency-Key, least recently used forgotten first.
 * Failed answers are not remembered: a retry after a 4xx or 5xx runs again.
 */
export class IdempotencyCache {
  private readonly answers = new Map<string, Answer>();
  private readonly inFlight = new Map<string, Promise<Answer>>();

  constructor(private readonly capacity: number) {}

  async run(key: string, compute: () => Promise<Answer>): Promise<{ answer: Answer; replayed: boolean }> {
    const stored = this.recall(key);
    if (stored) return { answer: stored, replayed: true };
    const pending = this.inFlight.get(key);
    if (pending) {
      // A retry that arrives while the first attempt still runs waits for it rather than writing twice.
      await pending.catch(() => undefined);
      return this.run(key, compute);
    }
    const attempt = compute();
    this.inFlight.set(key, attempt);
    try {
      const answer = await attempt;
      if (isSuccess(answer)) this.remember(key, answer);
      return { answer, replayed: false };
    } finally {
      this.inFlight.delete(key);
    }
  }

  get size(): number {
    return this.answers.size;
  }

  private recall(key: string): Answer | undefined {
    const answer = this.answers.get(key);
    if (answer === undefined) return undefined;
    // Re-inserting moves the key to the end of the Map's order, which is its recency.
    this.answers.delete(key);
    this.answers.set(key, answer);
    return answer;
  }

  private remember(key: string, answer: Answer): void {
    this.answers.set(key, answer);
    for (const oldest of this.answers.keys()) {
      if (this.answers.size <= this.capacity) break;
      this.answers.delete(oldest);
    }
  }
}

/** A database failure while serving a request: answered 503 so that clients retry later. */
class DatabaseError extends Error {
  override name = 'DatabaseError';
}

function unifiedBadBody(message: string): Answer {
  return { status: 422, body: { detail: [{ type: 'json_invalid', loc: ['body'], msg: message }] } };
}

function sensorBadBody(message: string): Answer {
  return { status: 400, body: { detail: message } };
}

/**
 * Maps errors to the contract's `{"detail": ...}` bodies. A body Fastify cannot parse as JSON (bad
 * syntax, empty, another media type) gets the route's own answer for a bad body: 422 for the unified
 * route, 400 for the per-sensor ones, never a 500.
 */
function errorHandler(badBody: ((message: string) => Answer) | undefined) {
  return (error: FastifyError, request: FastifyRequest, reply: FastifyReply) => {
    const status = error.statusCode ?? 500;
    if (badBody && error.code?.startsWith('FST_ERR_CTP_') && status !== 413) {
      const answer = badBody(`Body must be a JSON object: ${error.message}`);
      return reply.code(answer.status).send(answer.body);
    }
    if (status >= 400 && status < 500) return reply.code(status).send({ detail: error.message });
    if (error instanceof DatabaseError) {
      request.log.error(error.message);
      return reply.code(503).send({ detail: 'Database unavailable' });
    }
    request.log.error({ err: error }, 'request failed');
    return reply.code(500).send({ detail: 'Internal Server Error' });
  };
}

// ---------------------------------------------------------------------------------------------------------
// Unified prediction

interface FieldError {
  type: string;
  loc: [string, string];
  msg: string;
  input: unknown;
}

function isJsonObject(value: unknown): value is JsonObject {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function ownValue(body: JsonObject, field: string): unknown {
  return Object.hasOwn(body, field) ? body[field] : undefined;
}

function isFiniteNumber(value: unknown): value is number {
  return typeof value === 'number' && Number.isFinite(value);
}

/** `POST {pathPrefix}{unifiedPath}`: a flat `field: number` vector of the pump's vector fields to a failure probability. */
async function predictPump(
  pump: BackendPump,
  nominals: Map<string, Nominal>,
  body: unknown,
): Promise<Answer> {
  if (!isJsonObject(body)) {
    const detail = [
      { type: 'model_attributes_type', loc: ['body'], msg: 'Input should be a JSON object', input: body },
    ];
    return { status: 422, body: { detail } };
  }
  const measured: Record<string, number> = {};
  const errors: FieldError[] = [];
  for (const field of pump.vectorFields) {
    const value = ownValue(body, field);
    if (isFiniteNumber(value)) measured[field] = value;
    else if (value !== undefined && value !== null) errors.push(fieldError(field, 'float_type', value));
    else if (!Object.hasOwn(pump.optionalFields, field)) errors.push(fieldError(field, 'missing', value));
  }
  if (errors.length > 0) return { status: 422, body: { detail: errors } };
  // A missing optional field takes its default as model input, but it is no measurement: scoring it
  // against nominal would invent a deviation (salida_bomba defaults to 0 against a nominal 1000).
  const prediccion =
    Math.round(
      failureProbability(measured, (field) => nominals.get(field) ?? nominalOf({ table: '', field })) * 100,
    ) / 100;
  return { status: 200, body: { prediccion, status: 'success' } };
}

function fieldError(field: string, type: 'missing' | 'float_type', input: unknown): FieldError {
  const msg =
    type === 'missing' ? 'Field required' : 'Input should be a finite number (got a value of another type)';
  return { type, loc: ['body', field], msg, input: input ?? null };
}

// ---------------------------------------------------------------------------------------------------------
// Per-sensor classification

/** `POST {pathPrefix}{endpoint}`: classifies one reading and writes the result back into its row. */
async function scoreReading(context: RouteContext, targets: SensorTarget[], body: unknown): Promise<Answer> {
  if (!isJsonObject(body)) {
    return {
      status: 400,
      body: { detail: 'Body must be a JSON object {"id_sensor": <int>, "valor": <number>}' },
    };
  }
  const id = ownValue(body, 'id_sensor');
  if (typeof id !== 'number' || !Number.isSafeInteger(id)) {
    return { status: 400, body: { detail: 'id_sensor is required and must be an integer' } };
  }
  const value = ownValue(body, 'valor');
  if (!isFiniteNumber(value)) {
    const detail = [
      {
        type: 'float_type',
        loc: ['body', 'valor'],
        msg: 'valor must be a finite number',
        input: value ?? null,
      },
    ];
    return { status: 422, body: { detail } };
  }
  let target = targets[0] as SensorTarget;
  try {
    target = await chooseTarget(context.pool, targets, id, value);
    return await classifyRow(context, target.pump, target.sensor, id, value);
  } catch (err) {
    throw new DatabaseError(`${target.sensor.table} row ${id}: ${describePgError(err)}`);
  }
}

/**
 * The sensor whose row a post names. With one sensor behind the path, that one. With several (two tables
 * posting to one endpoint, where id_sensor alone is ambiguous) the real backend writes to one fixed
 * table; this one prefers the table whose row `id_sensor` holds exactly `valor`, then any table that has
 * the row, then the first listed (which answers 404).
 */
async function chooseTarget(
  pool: pg.Pool,
  targets: SensorTarget[],
  id: number,
  value: number,
): Promise<SensorTarget> {
  if (targets.length === 1) return targets[0] as SensorTarget;
  let existing: SensorTarget | undefined;
  for (const target of targets) {
    const { rows } = await pool.query<{ valor_sensor: number | null }>(
      `SELECT valor_sensor FROM ${quoteIdent(target.sensor.table)} WHERE id = $1::bigint`,
      [id],
    );
    const row = rows[0];
    if (row === undefined) continue;
    if (row.valor_sensor === value) return target;
    existing ??= target;
  }
  return existing ?? (targets[0] as SensorTarget);
}

interface StoredRow {
  clasificacion: number | null;
}

async function classifyRow(
  context: RouteContext,
  pump: BackendPump,
  sensor: SensorDefinition,
  id: number,
  value: number,
): Promise<Answer> {
  // Loaded before taking a pooled client for the transaction, so a full pool cannot deadlock on it.
  const counter = await context.counters.forTable(sensor.table);
  const client = await context.pool.connect();
  let broken: Error | undefined;
  try {
    await client.query('BEGIN');
    const row = await lockRow(client, sensor.table, id);
    if (!row) {
      await client.query('ROLLBACK');
      return { status: 404, body: { detail: `No row with id ${id} in table ${sensor.table}` } };
    }
    const score = context.scorer.score(pump.id, sensor.field, value, nominalOf(sensor));
    const count = await writeBack(client, sensor.table, id, score.prediction, counter, row);
    const body = {
      id_registro: id,
      valor: value,
      prediccion: score.prediction,
      descripcion: score.description,
      contador_anomalias: count,
    };
    return { status: 200, body };
  } catch (err) {
    await client.query('ROLLBACK').catch((rollbackError: Error) => {
      broken = rollbackError;
    });
    if ((err as { code?: string }).code === INT4_OUT_OF_RANGE) {
      return { status: 404, body: { detail: `No row with id ${id} in table ${sensor.table}` } };
    }
    throw err;
  } finally {
    client.release(broken);
  }
}

/** Reads the row and locks it, so two requests for one row take turns and the count stays exact. */
async function lockRow(client: pg.PoolClient, table: string, id: number): Promise<StoredRow | undefined> {
  const { rows } = await client.query<StoredRow>(
    `SELECT clasificacion FROM ${quoteIdent(table)} WHERE id = $1 FOR UPDATE`,
    [id],
  );
  return rows[0];
}

/**
 * Writes clasificacion and contador_anomalias and commits. The count is the number of rows classified -1,
 * as its initial value is: a row classified again (a retry) is not counted twice, and one that stops being
 * an anomaly is taken back out. The UPDATE touches neither valor_sensor nor tiempo_sensor, so no trigger
 * notifies.
 */
async function writeBack(
  client: pg.PoolClient,
  table: string,
  id: number,
  prediction: SensorClass,
  counter: { value: number },
  row: StoredRow,
): Promise<number> {
  const delta = (prediction === -1 ? 1 : 0) - (row.clasificacion === -1 ? 1 : 0);
  // Applied before the await so that concurrent requests on other rows each see their own count.
  counter.value += delta;
  const count = counter.value;
  try {
    await client.query(
      `UPDATE ${quoteIdent(table)} SET clasificacion = $1, contador_anomalias = $2 WHERE id = $3`,
      [prediction, count, id],
    );
    await client.query('COMMIT');
  } catch (err) {
    counter.value -= delta;
    throw err;
  }
  return count;
}

/** The anomaly count per sensor table, read from the table once and then kept in memory. */
class AnomalyCounters {
  private readonly counters = new Map<string, Promise<{ value: number }>>();

  constructor(private readonly pool: pg.Pool) {}

  forTable(table: string): Promise<{ value: number }> {
    let counter = this.counters.get(table);
    if (!counter) {
      counter = this.load(table);
      this.counters.set(table, counter);
      // A failed load (database down) is retried by the next request instead of being cached.
      counter.catch(() => this.counters.delete(table));
    }
    return counter;
  }

  private async load(table: string): Promise<{ value: number }> {
    const { rows } = await this.pool.query<{ n: string }>(
      `SELECT count(*) AS n FROM ${quoteIdent(table)} WHERE clasificacion = -1`,
    );
    return { value: Number(rows[0]?.n ?? 0) };
  }
}

// ---------------------------------------------------------------------------------------------------------
// Logbook classification

/** Logbook endpoints and the streams each serves, by their `tabla`. */
function logbookRoutes(logbooks: BackendLogbook[]): Map<string, Map<string, LogbookStream>> {
  const routes = new Map<string, Map<string, LogbookStream>>();
  for (const l of logbooks) {
    const streams = routes.get(l.endpoint) ?? new Map<string, LogbookStream>();
    for (const s of l.streams) if (!streams.has(s.tabla)) streams.set(s.tabla, s);
    routes.set(l.endpoint, streams);
  }
  return routes;
}

function logbookBadBody(message: string): Answer {
  return { status: 422, body: { detail: [{ type: 'json_invalid', loc: ['body'], msg: message }] } };
}

function bodyError(loc: string, msg: string, input: unknown): Answer {
  return {
    status: 422,
    body: { detail: [{ type: 'value_error', loc: ['body', loc], msg, input: input ?? null }] },
  };
}

/**
 * `POST {root}/gm-bitacoras/clasificar` with {id, bitacora, tabla}: classifies the entry by keywords
 * (./logbook-classifier.ts, never an LLM) and writes clasificacion and alerta_aviso into the row.
 * 200 {id, clasificacion, alerta_aviso, procesado: true, metodo, palabras_clave}; 404 without the row;
 * 422 for a bad body.
 */
async function classifyEntry(
  context: RouteContext,
  streams: Map<string, LogbookStream>,
  body: unknown,
): Promise<Answer> {
  if (!isJsonObject(body)) {
    return logbookBadBody('Body must be a JSON object {"id": <int>, "bitacora": <text>, "tabla": "a" | "b"}');
  }
  const id = ownValue(body, 'id');
  if (typeof id !== 'number' || !Number.isSafeInteger(id)) {
    return bodyError('id', 'id is required and must be an integer', id);
  }
  const bitacora = ownValue(body, 'bitacora');
  if (typeof bitacora !== 'string' || bitacora.trim() === '') {
    return bodyError('bitacora', 'bitacora is required and must be a non-empty text', bitacora);
  }
  const tabla = ownValue(body, 'tabla');
  const stream = typeof tabla === 'string' ? streams.get(tabla) : undefined;
  if (!stream) {
    const known = [...streams.keys()].map((t) => `"${t}"`).join(' or ');
    return bodyError('tabla', `tabla must be ${known}`, tabla);
  }
  const result = classifyLogbookEntry(bitacora, stream.pump);
  let updated: number;
  try {
    const { rowCount } = await context.pool.query(
      `UPDATE ${quoteIdent(stream.table)} SET clasificacion = $1, alerta_aviso = $2 WHERE id = $3::bigint`,
      [result.clasificacion, result.alerta_aviso, id],
    );
    updated = rowCount ?? 0;
  } catch (err) {
    throw new DatabaseError(`${stream.table} row ${id}: ${describePgError(err)}`);
  }
  if (updated === 0)
    return { status: 404, body: { detail: `Bitacora no encontrada: no row ${id} in ${stream.table}` } };
  return {
    status: 200,
    body: {
      id,
      clasificacion: result.clasificacion,
      alerta_aviso: result.alerta_aviso,
      procesado: true,
      metodo: CLASSIFIER_METHOD,
      palabras_clave: result.palabras_clave,
    },
  };
}
