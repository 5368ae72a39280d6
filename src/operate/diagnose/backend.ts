import { performance } from 'node:perf_hooks';
import { Agent, request } from 'undici';
import type { Config } from '../../config/env.js';
import { type Check, elapsed } from './report.js';

/** A backend route to try with an empty body: 422 means reachable and the key accepted, nothing written. */
interface Target {
  name: string;
  url: string;
  /** The variable the base URL comes from, and its value now. */
  env: string;
  base: string;
  /** The path the URL adds to the base (shown in a redirect's fix). */
  path: string;
  /** An example of the base URL's expected form. */
  example: string;
}

/** Every route to try: each pump's unified prediction, and each logbook's classifier. */
export function targetsOf(config: Pick<Config, 'pumps' | 'logbooks'>): Target[] {
  return [
    ...config.pumps.map((p) => ({
      name: `backend ${p.id}`,
      url: `${p.baseUrl}${p.unifiedPath}`,
      env: p.baseUrlEnv,
      base: p.baseUrl,
      path: p.unifiedPath,
      example: `http://host:8000${p.pathPrefix}`,
    })),
    ...config.logbooks.map((l) => ({
      name: `backend ${l.id}`,
      url: l.url,
      env: l.baseUrlEnv,
      base: l.baseUrl,
      path: l.endpoint,
      example: 'http://host:8000/sensores',
    })),
  ];
}

/** POSTs `{}` to the route: 422 means reachable and key accepted, without writing anything. */
async function backendCheck(t: Target, apiKey: string, agent: Agent, timeoutMs: number): Promise<Check> {
  const { name, url } = t;
  const envHint = `check ${t.env} (now ${t.base}) and that the backend is running and reachable from here`;
  const started = performance.now();
  const signal = AbortSignal.timeout(timeoutMs);
  let status: number;
  let location: string | undefined;
  try {
    const res = await request(url, {
      method: 'POST',
      dispatcher: agent,
      headers: { 'content-type': 'application/json', 'x-api-key': apiKey },
      body: '{}',
      signal,
      headersTimeout: timeoutMs,
      bodyTimeout: timeoutMs,
    });
    status = res.statusCode;
    const loc = res.headers.location;
    location = Array.isArray(loc) ? loc[0] : loc;
    await res.body.dump().catch(() => {});
  } catch (err) {
    const e = err as { code?: string; message?: string; cause?: { code?: string } };
    const code = e.code ?? e.cause?.code;
    const timedOut = signal.aborted || (code !== undefined && /^UND_ERR_.*TIMEOUT$/.test(code));
    const what = timedOut ? `no answer within ${timeoutMs} ms` : (code ?? e.message ?? 'error');
    return {
      name,
      ok: false,
      detail: `POST ${url}: ${what}; the backend is down or unreachable`,
      hint: envHint,
      ms: elapsed(started),
    };
  }
  const ms = elapsed(started);
  const head = `POST ${url} with {} answered ${status}`;
  if (status === 422) {
    return {
      name,
      ok: true,
      detail: `${head} (validation error, as expected): reachable, API key accepted`,
      ms,
    };
  }
  if (status >= 200 && status < 300) {
    return {
      name,
      ok: true,
      detail: `${head}: reachable and API key accepted, although an empty body should get 422`,
      ms,
    };
  }
  // A refused route: the listener holds these deliveries (nothing dead-lettered) until it is fixed.
  const held = "while it lasts, the listener holds this route's deliveries (none dead-lettered)";
  if (status === 401 || status === 403) {
    return {
      name,
      ok: false,
      detail: `${head}: the backend rejected the API key${apiKey === '' ? ' (API_KEY is empty)' : ''}; ${held}`,
      hint: "check API_KEY: it must equal the backend's INTERNAL_API_KEY; then restart the listener, which delivers what it held",
      ms,
    };
  }
  if (status >= 300 && status < 400) {
    return {
      name,
      ok: false,
      detail: `${head}: a redirect${location ? ` to ${location}` : ' (no Location)'}, which the listener does not follow; ${held}`,
      hint: `set ${t.env} to the backend's current address${location ? ` (the redirect's target, ${location}, without ${t.path})` : ''}; then restart the listener, which delivers what it held`,
      ms,
    };
  }
  if (status === 404 || status === 405) {
    return {
      name,
      ok: false,
      detail: `${head}: no such endpoint at this base URL`,
      hint: `check ${t.env}: it must point at the prediction backend (e.g. ${t.example})`,
      ms,
    };
  }
  return {
    name,
    ok: false,
    detail: `${head}: unexpected answer (expected 422)`,
    hint: status >= 500 ? 'the backend is failing: look at its logs' : envHint,
    ms,
  };
}

export async function backendChecks(
  config: Pick<Config, 'pumps' | 'logbooks' | 'apiKey'>,
  timeoutMs: number,
): Promise<Check[]> {
  const agent = new Agent({ connections: 2, keepAliveTimeout: 1_000 });
  try {
    return await Promise.all(targetsOf(config).map((t) => backendCheck(t, config.apiKey, agent, timeoutMs)));
  } finally {
    await agent.destroy().catch(() => {});
  }
}
