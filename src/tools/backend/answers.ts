/**
 * The reference backend's HTTP plumbing: the contract's answers and error bodies, the X-API-Key check, and
 * the reading of a JSON body.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify';

/** A status and body, computed once and possibly replayed for a repeated Idempotency-Key. */
export interface Answer {
  status: number;
  body: unknown;
}

export type JsonObject = Record<string, unknown>;

function digest(value: string): Buffer {
  return createHash('sha256').update(value, 'utf8').digest();
}

/** Rejects a wrong or missing X-API-Key with 401 before the body is even parsed. */
export function apiKeyCheck(apiKey: string) {
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

export function firstHeader(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value[0] : value;
}

/** A database failure while serving a request: answered 503 so that clients retry later. */
export class DatabaseError extends Error {
  override name = 'DatabaseError';
}

/**
 * Maps errors to the contract's `{"detail": ...}` bodies. A body Fastify cannot parse as JSON (bad
 * syntax, empty, another media type) gets the route's own answer for a bad body: 422 for the unified
 * route, 400 for the per-sensor ones, never a 500.
 */
export function errorHandler(badBody: ((message: string) => Answer) | undefined) {
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

export function isJsonObject(value: unknown): value is JsonObject {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

export function ownValue(body: JsonObject, field: string): unknown {
  return Object.hasOwn(body, field) ? body[field] : undefined;
}

export function isFiniteNumber(value: unknown): value is number {
  return typeof value === 'number' && Number.isFinite(value);
}
