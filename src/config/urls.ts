import { fail, hideUrlCredentials } from './read.js';

/** Backend base URLs as the variables give them: checked, and brought to the form each caller posts to. */

/**
 * A backend URL, checked: http(s), no query or fragment, and no user or password. The backend takes its key
 * in X-API-Key (API_KEY); credentials in the URL would be sent nowhere useful and end up in logs and pages.
 * Every message shows the URL with its credentials hidden.
 */
function backendUrl(name: string, raw: string, example: string): URL {
  const shown = hideUrlCredentials(raw);
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    return fail(name, shown, example);
  }
  if (url.username !== '' || url.password !== '') {
    fail(name, shown, 'a URL without a user or password (the backend key goes in API_KEY)');
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') fail(name, shown, 'an http:// or https:// URL');
  if (url.search || url.hash) fail(name, shown, 'a URL without ?query or #fragment');
  return url;
}

/**
 * Makes a base URL end with the pump's path prefix. Real `.env` files hold both
 * `http://host:8000` and `http://host:8000/sensores`; both mean the same base.
 */
export function normalizeBaseUrl(name: string, raw: string, prefix: string): string {
  const url = backendUrl(name, raw, `an http(s) URL such as http://host:8000${prefix}`);
  let path = url.pathname.replace(/\/+$/, '');
  if (!path.endsWith(prefix)) path += prefix;
  return `${url.origin}${path}`;
}

/**
 * The logbook base: the variable's URL with a trailing /sensores or /sensores_b removed, as the original
 * logbook listener derives it from BASE_URL (http://host:8000/sensores → http://host:8000).
 */
export function logbookBaseUrl(name: string, raw: string): string {
  const url = backendUrl(name, raw, 'an http(s) URL such as http://host:8000/sensores');
  const path = url.pathname.replace(/\/+$/, '').replace(/\/sensores(_b)?$/, '');
  return `${url.origin}${path}`;
}
