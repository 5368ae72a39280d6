/**
 * The test notifications `pump-monitor diagnose` sends on every channel: `{"probe": PROBE_MARKER, "nonce":
 * <hex>}`, exactly those two keys. A probe names no row, so the engine counts it as a probe
 * (pump_monitor_probes_total) instead of an invalid notification, writes no dead letter and logs no
 * warning. Anyone may NOTIFY, so a probe is treated like any payload that names no row in every other way:
 * the readers of its channel are held and their tables read again (catch-up), so a forged probe sent for
 * a real row makes nobody skip that row. A payload with anything more (an id_sensor, an id) is no probe.
 */
export const PROBE_MARKER = 'pump-monitor diagnose';

/** The probe's payload, with the nonce that lets its sender know its own. */
export function probePayload(nonce: string): string {
  return JSON.stringify({ probe: PROBE_MARKER, nonce });
}

/** A probe's nonce: hex, bounded. */
const NONCE = /^[0-9a-f]{8,64}$/;

/** The nonce of a probe payload; undefined for anything else. */
export function probeNonce(payload: string): string | undefined {
  // A probe is under 100 characters: longer text is not parsed here.
  if (payload.length > 128) return undefined;
  let body: unknown;
  try {
    body = JSON.parse(payload);
  } catch {
    return undefined;
  }
  if (typeof body !== 'object' || body === null || Array.isArray(body)) return undefined;
  const keys = Object.keys(body);
  if (keys.length !== 2) return undefined;
  const { probe, nonce } = body as Record<string, unknown>;
  if (probe !== PROBE_MARKER || typeof nonce !== 'string' || !NONCE.test(nonce)) return undefined;
  return nonce;
}

/** Whether a payload is a diagnose probe (and nothing more). */
export function isProbe(payload: string): boolean {
  return probeNonce(payload) !== undefined;
}
