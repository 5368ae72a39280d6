/**
 * The reference prediction backend, for development and demos (`pump-monitor backend`, `npm start`).
 * It speaks the contract of the real backend (see docs: "Unified prediction", "Per-sensor POST",
 * "Backend key check") with the transparent scoring of ./scoring.ts instead of a trained model, and
 * classifies logbook entries with the keyword matcher of ./logbook-classifier.ts instead of an LLM.
 * Its HTTP plumbing is in ./answers.ts, the Idempotency-Key cache in ./idempotency.ts and the per-sensor
 * write-back into the sensor tables in ./write-back.ts.
 */
import Fastify, { type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import type pg from 'pg';
import type pino from 'pino';
import type { LogbookDefinition, LogbookStream, PumpDefinition } from '../../config/pumps.js';
import { describePgError, quoteIdent } from '../../store/db.js';
import { type Nominal, nominalOf } from '../nominal.js';
import {
  type Answer,
  apiKeyCheck,
  DatabaseError,
  errorHandler,
  isFiniteNumber,
  isJsonObject,
  ownValue,
} from './answers.js';
import { answering, IdempotencyCache } from './idempotency.js';
import { CLASSIFIER_METHOD, classifyLogbookEntry } from './logbook-classifier.js';
import { failureProbability, SensorScorer } from './scoring.js';
import { AnomalyCounters, chooseTarget, classifyRow, type SensorTarget } from './write-back.js';

export { IdempotencyCache } from './idempotency.js';

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

function unifiedBadBody(message: string): Answer {
  return { status: 422, body: { detail: [{ type: 'json_invalid', loc: ['body'], msg: message }] } };
}

function sensorBadBody(message: string): Answer {
  return { status: 400, body: { detail: message } };
}

// ---------------------------------------------------------------------------------------------------------
// Unified prediction

interface FieldError {
  type: string;
  loc: [string, string];
  msg: string;
  input: unknown;
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
