/**
 * Idempotency-Key handling of the reference backend: the first successful answer per key (scoped by path)
 * is kept and replayed, and a retry that arrives while the first attempt runs waits for it.
 */
import type { FastifyReply, FastifyRequest } from 'fastify';
import { type Answer, firstHeader } from './answers.js';

const MAX_IDEMPOTENCY_KEY_LENGTH = 255;

/** Wraps a route's computation with Idempotency-Key handling and sends its answer. */
export function answering(
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
