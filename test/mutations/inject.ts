import { randomUUID } from 'node:crypto';
import { appendFileSync } from 'node:fs';
import type { Agent, Dispatcher } from 'undici';
import { AGENT_HOOK } from '../../src/delivery/backend-client.js';

/**
 * Delivery faults injected below the engine, for `npm run test:mutations` (scripts/mutations.ts).
 *
 * Loaded by vitest.mutations.config.ts (`setupFiles`, for engines the tests run in-process) and by
 * test/helpers/child.ts (`--import`, for `pump-monitor listen` children) only when PUMP_MONITOR_MUTATION is
 * set; it does nothing otherwise. It reaches the engine through the one seam the product has for it,
 * `AGENT_HOOK` in src/delivery/backend-client.ts: each new undici agent's `dispatch` is wrapped, so every
 * request the engine sends passes through here after the engine built it. The engine's code runs unchanged.
 *
 * PUMP_MONITOR_MUTATION (one at a time):
 * - `dup-post`: a per-sensor post is sent as built, and sent again PUMP_MONITOR_MUTATION_DELAY_MS later
 *   (default 3000) with the same path, body and headers; the engine never sees the second answer;
 * - `wrong-pump`: a per-sensor post goes to the other pump's base URL and path prefix (`/sensores` and
 *   `/sensores_b`, the default wiring), and its answer comes back to the engine as if from its own;
 * - `fresh-key`: a per-sensor post carries a fresh random Idempotency-Key instead of its own;
 * - `vector-value`: a unified post has its first field's value raised by 1.
 *
 * Every PUMP_MONITOR_MUTATION_EVERY-th eligible request of the process is mutated (default 25 for the
 * per-sensor mutations, 10 for `vector-value`), counting every attempt. Requests are told apart by their
 * bodies, never by key formats: a per-sensor post is exactly `{id_sensor, valor}`, a unified post any
 * other JSON object without `bitacora` (logbook posts are left alone). Each mutation applied is appended,
 * as one JSON line, to PUMP_MONITOR_MUTATION_LOG when set, with the test file that was running
 * (PUMP_MONITOR_MUTATION_FILE, set by the setup file and passed on to children).
 */

export const MUTATIONS = ['dup-post', 'wrong-pump', 'fresh-key', 'vector-value'] as const;
export type Mutation = (typeof MUTATIONS)[number];

/** The default wiring's pump path prefixes, each with the other pump's. */
const OTHER_PREFIX: Record<string, string> = { '/sensores': '/sensores_b', '/sensores_b': '/sensores' };

type Kind = 'sensor' | 'unified' | 'other';

function kindOf(body: unknown): { kind: Kind; json?: Record<string, unknown> } {
  if (typeof body !== 'string') return { kind: 'other' };
  let json: unknown;
  try {
    json = JSON.parse(body);
  } catch {
    return { kind: 'other' };
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) return { kind: 'other' };
  const o = json as Record<string, unknown>;
  const keys = Object.keys(o);
  if (keys.length === 2 && 'id_sensor' in o && 'valor' in o) return { kind: 'sensor', json: o };
  if ('bitacora' in o) return { kind: 'other' };
  return { kind: 'unified', json: o };
}

/** The request's path prefix (its first segment) and the rest. */
function splitPath(path: string): { prefix: string; rest: string } {
  const i = path.indexOf('/', 1);
  return i < 0 ? { prefix: path, rest: '' } : { prefix: path.slice(0, i), rest: path.slice(i) };
}

function withKey(headers: Dispatcher.DispatchOptions['headers'], key: string): string[] {
  const flat: string[] = [];
  if (Array.isArray(headers)) for (const h of headers) flat.push(String(h));
  else if (headers && typeof headers === 'object')
    for (const [k, v] of Object.entries(headers as Record<string, unknown>)) flat.push(k, String(v));
  const out: string[] = [];
  for (let i = 0; i + 1 < flat.length; i += 2) {
    const name = flat[i] as string;
    out.push(name, name.toLowerCase() === 'idempotency-key' ? key : (flat[i + 1] as string));
  }
  return out;
}

/** Takes the answer of a request the engine does not know about, and drops it. */
const sink: Dispatcher.DispatchHandler = {
  onRequestStart() {},
  onResponseStart() {},
  onResponseData() {},
  onResponseEnd() {},
  onResponseError() {},
};

export function installMutation(mutation: Mutation, env: NodeJS.ProcessEnv = process.env): void {
  const every = Number(env.PUMP_MONITOR_MUTATION_EVERY ?? (mutation === 'vector-value' ? 10 : 25));
  const delayMs = Number(env.PUMP_MONITOR_MUTATION_DELAY_MS ?? 3000);
  if (!Number.isInteger(every) || every < 1)
    throw new Error('PUMP_MONITOR_MUTATION_EVERY: a positive integer');
  if (!Number.isFinite(delayMs) || delayMs < 0)
    throw new Error('PUMP_MONITOR_MUTATION_DELAY_MS: a number >= 0');
  const wanted: Kind = mutation === 'vector-value' ? 'unified' : 'sensor';
  /** The origin each path prefix was last sent to: where the other pump's requests go. */
  const originOf = new Map<string, string>();
  let eligible = 0;

  const note = (what: Record<string, unknown>) => {
    const log = env.PUMP_MONITOR_MUTATION_LOG;
    if (!log) return;
    const line = { mutation, file: env.PUMP_MONITOR_MUTATION_FILE ?? '', pid: process.pid, ...what };
    appendFileSync(log, `${JSON.stringify(line)}\n`);
  };

  (globalThis as { [AGENT_HOOK]?: (a: Agent) => void })[AGENT_HOOK] = (agent: Agent) => {
    const dispatch = agent.dispatch.bind(agent);
    agent.dispatch = (opts: Dispatcher.DispatchOptions, handler: Dispatcher.DispatchHandler): boolean => {
      const { prefix, rest } = splitPath(opts.path);
      if (opts.origin) originOf.set(prefix, String(opts.origin));
      const { kind, json } = kindOf(opts.body);
      if (kind !== wanted) return dispatch(opts, handler);
      eligible += 1;
      if (eligible % every !== 0) return dispatch(opts, handler);
      switch (mutation) {
        case 'dup-post': {
          note({ path: opts.path, body: opts.body });
          const again = setTimeout(() => {
            try {
              dispatch({ ...opts }, sink);
            } catch {
              // The agent is closed: the engine stopped before the second post was due.
            }
          }, delayMs);
          again.unref();
          return dispatch(opts, handler);
        }
        case 'wrong-pump': {
          const other = OTHER_PREFIX[prefix];
          if (!other) return dispatch(opts, handler);
          const origin = originOf.get(other) ?? opts.origin;
          note({ path: opts.path, to: `${String(origin)}${other}${rest}`, body: opts.body });
          return dispatch({ ...opts, origin: origin as string, path: `${other}${rest}` }, handler);
        }
        case 'fresh-key': {
          const key = randomUUID();
          note({ path: opts.path, body: opts.body, key });
          return dispatch({ ...opts, headers: withKey(opts.headers, key) }, handler);
        }
        case 'vector-value': {
          const field = Object.keys(json ?? {}).find((k) => typeof json?.[k] === 'number');
          if (!json || field === undefined) return dispatch(opts, handler);
          const changed = { ...json, [field]: (json[field] as number) + 1 };
          note({ path: opts.path, field, from: json[field], to: changed[field] });
          return dispatch({ ...opts, body: JSON.stringify(changed) }, handler);
        }
      }
    };
  };
}

const chosen = process.env.PUMP_MONITOR_MUTATION;
if (chosen) {
  if (!(MUTATIONS as readonly string[]).includes(chosen))
    throw new Error(`PUMP_MONITOR_MUTATION=${chosen}: one of ${MUTATIONS.join(', ')}`);
  installMutation(chosen as Mutation);
}
