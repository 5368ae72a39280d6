import { Agent, request } from 'undici';

/** How a backend answer is treated. Only 200 is success, as in the original contract. */
export type Verdict = 'ok' | 'retry' | 'reject';

export function classify(status: number): Verdict {
  if (status === 200) return 'ok';
  if (status === 408 || status === 429 || status >= 500) return 'retry';
  return 'reject';
}

export interface BackendAnswer {
  status: number;
  body: string;
  /** From a Retry-After header (seconds or an HTTP date), when present. */
  retryAfterMs?: number;
}

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

export function createAgent(connectionsPerOrigin = 32): Agent {
  return new Agent({ connections: connectionsPerOrigin, keepAliveTimeout: 30_000, pipelining: 1 });
}

/** POSTs JSON to one pump's backend base URL with the API key; never logs or echoes the key. */
export class BackendClient {
  constructor(private readonly opts: BackendClientOptions) {}

  get baseUrl(): string {
    return this.opts.baseUrl;
  }

  /**
   * One attempt. Resolves with any HTTP answer; throws RetryableError when no answer came
   * (connection failure, per-attempt timeout). Aborting `signal` cancels the attempt.
   */
  async post(path: string, body: unknown, headers: Record<string, string>, signal?: AbortSignal) {
    try {
      const res = await request(this.opts.baseUrl + path, {
        method: 'POST',
        dispatcher: this.opts.agent,
        headers: { 'content-type': 'application/json', 'x-api-key': this.opts.apiKey, ...headers },
        body: JSON.stringify(body),
        // undici's own timers: cheaper per request than a timeout signal combined with `signal`.
        headersTimeout: this.opts.timeoutMs,
        bodyTimeout: this.opts.timeoutMs,
        ...(signal ? { signal } : {}),
      });
      const text = await res.body.text();
      this.opts.onAnswer?.(path, res.statusCode);
      const answer: BackendAnswer = { status: res.statusCode, body: text };
      const retryAfter = parseRetryAfter(res.headers['retry-after']);
      if (retryAfter !== undefined) answer.retryAfterMs = retryAfter;
      return answer;
    } catch (err) {
      if (signal?.aborted) throw err;
      this.opts.onAnswer?.(path, 0);
      const e = err as { code?: string; message?: string };
      const timedOut = e.code === 'UND_ERR_HEADERS_TIMEOUT' || e.code === 'UND_ERR_BODY_TIMEOUT';
      const what = timedOut ? `no answer within ${this.opts.timeoutMs} ms` : (e.code ?? e.message ?? 'error');
      throw new RetryableError(`POST ${this.opts.baseUrl}${path}: ${what}`);
    }
  }
}
