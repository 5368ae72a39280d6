/**
 * The shapes of what the engine writes as JSON: a sensor row as its trigger notifies it (kept with a
 * deferred post and a dead letter, and decoded again from there), the per-sensor post's body, and a
 * logbook entry's body and dead-letter payload; and the numbers a backend's answer carries. One place, so a
 * reader of any of them reads one shape.
 */

/** A sensor row as its trigger's NOTIFY payload renders it: `{id_sensor, valor, tiempo_sensor}`. */
export function notificationPayload(r: { id: number; valor: number; tiempo: string }): string {
  return JSON.stringify({ id_sensor: r.id, valor: r.valor, tiempo_sensor: r.tiempo });
}

/** The per-sensor POST's body. Decode accepts only finite numbers, so it is written, not serialised. */
export function sensorPostBody(id: number, valor: number): string {
  return `{"id_sensor":${id},"valor":${valor}}`;
}

/** A logbook entry's POST body: its row id, its text and its stream's `tabla`. */
export function logbookPostBody(id: number, bitacora: string, tabla: string): string {
  return JSON.stringify({ id, bitacora, tabla });
}

/** What a logbook entry's dead letter (and an operator's retry of it) keeps: the row, not its text. */
export function logbookEntryPayload(id: number, tabla?: string): string {
  return JSON.stringify(tabla === undefined ? { id } : { id, tabla });
}

/** The row id a logbook entry's payload names, or undefined when it names none. */
export function logbookEntryId(payload: string | null | undefined): number | undefined {
  let id: unknown;
  try {
    id = (JSON.parse(payload ?? '') as Record<string, unknown>).id;
  } catch {
    return undefined;
  }
  return typeof id === 'number' && Number.isSafeInteger(id) && id >= 0 ? id : undefined;
}

/** The classification a logbook backend's answer carries (`clasificacion`), when it has one. */
export function logbookClassification(body: string): string | undefined {
  try {
    const v = (JSON.parse(body) as Record<string, unknown>).clasificacion;
    return typeof v === 'string' ? v : undefined;
  } catch {
    return undefined;
  }
}

/** The numbers a backend answer carries, where present: a body we cannot read yields none. */
export function parseReply(body: string): { prediccion?: number; contador_anomalias?: number } {
  let answer: unknown;
  try {
    answer = JSON.parse(body);
  } catch {
    return {};
  }
  if (typeof answer !== 'object' || answer === null) return {};
  const { prediccion, contador_anomalias } = answer as Record<string, unknown>;
  return {
    ...(typeof prediccion === 'number' && Number.isFinite(prediccion) ? { prediccion } : {}),
    ...(typeof contador_anomalias === 'number' ? { contador_anomalias } : {}),
  };
}
