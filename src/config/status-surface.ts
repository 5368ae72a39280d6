import { ConfigError, type Env, num, read } from './read.js';

// ---- The status surface (issue 13): STATUS_AUTH and EVENTS_MAX_CLIENTS ------------------------------

export interface StatusSurfaceConfig {
  /** HTTP Basic credentials for every route but /healthz and /readyz; undefined: the surface is open. */
  auth: { user: string; password: string } | undefined;
  /** Most /events (SSE) clients at once; past it /events answers 503. */
  eventsMaxClients: number;
}

/** STATUS_AUTH=user:password. The value is a secret: a malformed one is reported without echoing it. */
export function statusSurfaceConfig(env: Env): StatusSurfaceConfig {
  const raw = read(env, 'STATUS_AUTH');
  let auth: StatusSurfaceConfig['auth'];
  if (raw !== undefined) {
    const colon = raw.indexOf(':');
    const user = colon < 0 ? '' : raw.slice(0, colon);
    const password = colon < 0 ? '' : raw.slice(colon + 1);
    // RFC 7617: no control characters in either part, and the user cannot hold a ':'.
    // biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what it rejects
    if (user === '' || password === '' || /[\x00-\x1f\x7f]/.test(raw)) {
      throw new ConfigError(
        'STATUS_AUTH: got (hidden), expected user:password (a non-empty user without ":", then a non-empty password)',
      );
    }
    auth = { user, password };
  }
  return { auth, eventsMaxClients: num(env, 'EVENTS_MAX_CLIENTS', 50, { min: 1, int: true }) };
}
