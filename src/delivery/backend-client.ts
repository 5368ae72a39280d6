import { Agent, type Dispatcher } from 'undici';

/**
 * How a backend answer is treated. Only 200 is success, as in the original contract. `hold`: the route
 * itself is refused (a redirect, 401, 403): a fault of the configuration (URL, API key), not of the item,
 * so the item waits for the route to be fixed and is never dead-lettered for it.
 */
export type Verdict = 'ok' | 'retry' | 'reject' | 'hold';

export function classify(status: number): Verdict {
  if (status === 200) return 'ok';
  if (status === 408 || status === 429 || status >= 500) return 'retry';
  if ((status >= 300 && status < 400) || status === 401 || status === 403) return 'hold';
  return 'reject';
}

export interface BackendAnswer {
  status: number;
  /** The body's first `MAX_ANSWER_BYTES` as text (invalid UTF-8 comes out as U+FFFD). */
  body: string;
  /** From a Retry-After header (seconds or an HTTP date), when present. */
  retryAfterMs?: number;
  /** A 3xx answer's Location header, when present: where the backend says the route moved. */
  location?: string;
}

/**
 * How much of an answer's body is kept. The backend's answers are a few hundred bytes; past this cap the
 * rest is not read (the connection is closed) and the attempt stands on its status alone.
 */
export const MAX_ANSWER_BYTES = 64 * 1024;

/** A retryable failure: connection refused or reset, timeout, 408, 429 or 5xx. */
export class RetryableError extends Error {
  override name = 'RetryableError';
  constructor(
    message: string,
    readonly status?: number,
    readonly retryAfterMs?: number,
    /** The answer's body, when the failure was an answer (408, 429, 5xx). */
    readonly body?: string,
  ) {
    super(message);
  }
}

export function parseRetryAfter(value: string | string[] | undefined, now = Date.now()): number | undefined {
  const v = Array.isArray(value) ? value[0] : value;
  if (!v) return undefined;
  if (/^\d+$/.test(v.trim())) return Number(v.trim()) * 1000;
  const at = Date.parse(v);
  return Number.isNaN(at) ? undefined : Math.max(0, at - now);
}

export interface BackendClientOptions {
  baseUrl: string;
  apiKey: string;
  timeoutMs: number;
  /** Shared keep-alive connection pool. */
  agent: Agent;
  /** Observes every answer (for metrics): the path and the status, or 0 when none came. */
  onAnswer?: (path: string, status: number) => void;
}

/**
 * A test seam, and the only one: a function stored on `globalThis` under this symbol is handed each new
 * agent and may wrap its `dispatch` (the suite's mutation runner, `test/mutations/inject.ts`, injects
 * delivery faults below the engine through it). Nothing in the product sets it; unset, it costs one lookup
 * per agent.
 */
export const AGENT_HOOK = Symbol.for('pump-monitor.test.agent-hook');

/**
 * The keep-alive connections every backend client shares. `pipelining` (BACKEND_PIPELINING) is how many
 * requests one connection carries before their answers: undici opens another connection, up to
 * `connectionsPerOrigin`, only once every open one carries that many. Above 1, a slow answer holds up the
 * ones behind it on its connection, and a connection lost with requests in flight sends those behind the
 * first again on a new one (see `post()`).
 */
export function createAgent(connectionsPerOrigin = 32, pipelining = 1): Agent {
  if (!Number.isInteger(pipelining) || pipelining < 1)
    throw new Error(`pipelining: got ${pipelining}, expected an integer >= 1`);
  const agent = new Agent({ connections: connectionsPerOrigin, keepAliveTimeout: 30_000, pipelining });
  const hook = (globalThis as { [AGENT_HOOK]?: (a: Agent) => void })[AGENT_HOOK];
  hook?.(agent);
  return agent;
}

/**
 * POSTs JSON to one pump's backend base URL with the API key; never logs or echoes the key.
 *
 * Each POST goes to undici's dispatcher with a handler of its own (`Answer`) rather than through
 * `request()`: a per-sensor POST is the engine's most frequent operation, and `request()` builds a
 * response stream, an async resource and a headers object for every answer, where a body of a few dozen
 * bytes and the status are all that is read.
 */
export class BackendClient {
  private readonly origin: string;
  /** The base URL's own path, prefixed to every request's path ("" for none). */
  private readonly prefix: string;

  constructor(private readonly opts: BackendClientOptions) {
    const url = new URL(opts.baseUrl);
    this.origin = url.origin;
    this.prefix = url.pathname.replace(/\/+$/, '');
  }

  /**
   * One attempt with a JSON body (already serialised) and its Idempotency-Key. Resolves with any HTTP
   * answer; throws RetryableError when no answer came (connection failure, or no whole answer within
   * `timeoutMs`: connecting, the headers and the body all count). Aborting `signal` cancels the attempt.
   */
  post(path: string, json: string, idempotencyKey: string, signal?: AbortSignal): Promise<BackendAnswer> {
    return new Promise<BackendAnswer>((resolve, reject) => {
      if (signal?.aborted) {
        reject(signal.reason);
        return;
      }
      const answer = new Answer(this, path, resolve, reject, signal, this.opts.timeoutMs);
      this.opts.agent.dispatch(
        {
          origin: this.origin,
          path: this.prefix + path,
          method: 'POST',
          headers: [
            'content-type',
            'application/json',
            'x-api-key',
            this.opts.apiKey,
            'idempotency-key',
            idempotencyKey,
          ],
          body: json,
          // undici pipelines only requests it may send twice, and none behind one whose headers it
          // expects to take long (`blocking`, on for every POST by default). Every request here carries
          // its Idempotency-Key and is answered in milliseconds, so both are set; with
          // BACKEND_PIPELINING=1 (the default) a connection never carries two, and they change nothing.
          // Above 1, a connection that drops re-sends the requests queued behind the first under their
          // same keys: a backend that does not deduplicate by key may count them twice.
          idempotent: true,
          blocking: false,
          // The attempt's own deadline (one plain timer in Answer) bounds the whole exchange; undici's
          // timers only bound the wait for headers and the gap between chunks, so they are off.
          headersTimeout: 0,
          bodyTimeout: 0,
        },
        answer,
      );
    });
  }

  /** @internal The outcome of one attempt, for Answer. */
  answered(path: string, status: number): void {
    this.opts.onAnswer?.(path, status);
  }

  /** @internal Why an attempt got no answer, without the key or the body. */
  failure(path: string, err: unknown): RetryableError {
    this.opts.onAnswer?.(path, 0);
    const e = err as { code?: string; message?: string };
    const timedOut =
      err === DEADLINE || e.code === 'UND_ERR_HEADERS_TIMEOUT' || e.code === 'UND_ERR_BODY_TIMEOUT';
    const what = timedOut
      ? `no whole answer within ${this.opts.timeoutMs} ms`
      : (e.code ?? e.message ?? 'error');
    return new RetryableError(`POST ${this.opts.baseUrl}${path}: ${what}`);
  }
}

/** Why an attempt was cut short by its deadline (one object: nothing is built per timeout). */
const DEADLINE = new Error('deadline');
/** Why the rest of an answer past `MAX_ANSWER_BYTES` is not read. */
const CAPPED = new Error('answer past the cap');

/**
 * undici's handler for one POST: gathers the status, a Retry-After, a 3xx's Location and at most
 * `MAX_ANSWER_BYTES` of the body, within the attempt's deadline. Settles once: the first of the answer's
 * end, the cap, an error, the deadline or the caller's abort decides.
 */
class Answer implements Dispatcher.DispatchHandler {
  private status = 0;
  private retryAfter: string | undefined;
  private location: string | undefined;
  /** The body as it came, up to the cap; decoded at the end, so a character split across chunks stays whole. */
  private readonly chunks: Buffer[] = [];
  private bytes = 0;
  private settled = false;
  private controller: Dispatcher.DispatchController | undefined;
  private readonly onAbort: (() => void) | undefined;
  /** One plain timer per attempt: cheaper than a timeout signal, and it covers connect, headers and body. */
  private readonly timer: NodeJS.Timeout;

  constructor(
    private readonly client: BackendClient,
    private readonly path: string,
    private readonly resolve: (a: BackendAnswer) => void,
    private readonly reject: (err: unknown) => void,
    private readonly signal: AbortSignal | undefined,
    timeoutMs: number,
  ) {
    if (signal) {
      this.onAbort = () => this.cancel(signal.reason as Error, signal.reason);
      signal.addEventListener('abort', this.onAbort, { once: true });
    }
    // The deadline decides only after this turn's I/O: when the event loop was held up past it (a GC
    // pause, a loaded machine), the timer and the answer are both due, and Node runs timers first. An
    // answer the backend has sent is taken, not dropped for a retry that would reach it a second time.
    this.timer = setTimeout(
      () =>
        setImmediate(() => {
          if (!this.settled) this.cancel(DEADLINE, this.client.failure(this.path, DEADLINE));
        }),
      timeoutMs,
    );
  }

  onRequestStart(controller: Dispatcher.DispatchController): void {
    this.controller = controller;
    // Cut short before undici started it (waiting for a connection of the pool).
    if (this.settled) controller.abort(DEADLINE);
  }

  onResponseStart(
    _controller: Dispatcher.DispatchController,
    statusCode: number,
    headers: Record<string, string | string[] | undefined>,
  ): void {
    this.status = statusCode;
    const ra = headers['retry-after'];
    this.retryAfter = Array.isArray(ra) ? ra[0] : ra;
    if (statusCode >= 300 && statusCode < 400) {
      const loc = headers.location;
      this.location = Array.isArray(loc) ? loc[0] : loc;
    }
  }

  onResponseData(controller: Dispatcher.DispatchController, chunk: Buffer): void {
    if (this.settled) return;
    const room = MAX_ANSWER_BYTES - this.bytes;
    if (chunk.length < room) {
      this.chunks.push(chunk);
      this.bytes += chunk.length;
      return;
    }
    // The cap: keep what fits, answer on the status, and read no more of this body.
    this.chunks.push(chunk.subarray(0, room));
    this.bytes += room;
    this.answer();
    controller.abort(CAPPED);
  }

  onResponseEnd(): void {
    if (!this.settled) this.answer();
  }

  onResponseError(_controller: Dispatcher.DispatchController, err: Error): void {
    if (this.settled) return;
    this.finish();
    if (this.signal?.aborted) this.reject(this.signal.reason);
    else this.reject(this.client.failure(this.path, err));
  }

  private answer(): void {
    this.finish();
    this.client.answered(this.path, this.status);
    const body =
      this.chunks.length === 1
        ? (this.chunks[0] as Buffer).toString('utf8')
        : Buffer.concat(this.chunks).toString('utf8');
    const answer: BackendAnswer = { status: this.status, body };
    const retryAfter = parseRetryAfter(this.retryAfter);
    if (retryAfter !== undefined) answer.retryAfterMs = retryAfter;
    if (this.location !== undefined) answer.location = this.location;
    this.resolve(answer);
  }

  /** Ends the attempt early (its deadline, or the caller's abort): rejects with `err` and closes the request. */
  private cancel(reason: Error, err: unknown): void {
    if (this.settled) return;
    this.finish();
    this.reject(err);
    this.controller?.abort(reason);
  }

  private finish(): void {
    this.settled = true;
    clearTimeout(this.timer);
    if (this.onAbort) this.signal?.removeEventListener('abort', this.onAbort);
  }
}
