// Languages of the status page: every label in Spanish and English, and the chosen language.

/** Every visible label, in both languages. `{0}`, `{1}` are filled in by t(). */
const DICT = {
  es: {
    documentTitle: 'Monitor de bombas',
    title: 'Monitor de bombas',
    subtitle: 'Bombas de agua de alimentación · estado en vivo',
    updated: 'Actualizado',
    languageGroup: 'Idioma',
    footer: 'pump-monitor · servido por el propio servicio, sin recursos externos',
    linkLive: 'En vivo',
    linkPolling: 'Consultando cada 2 s',
    linkConnecting: 'Conectando…',
    linkStale: 'Sin datos recientes',
    linkDown: 'Sin conexión con el servicio',
    waiting: 'Esperando datos del servicio…',
    pumpConnected: 'Escuchando',
    pumpDisconnected: 'Sin escucha',
    lastPrediction: 'Última probabilidad de falla',
    noPredictionYet: 'sin predicción',
    connection: 'Conexión',
    connState: 'Estado',
    connUptime: 'Tiempo activo',
    connReconnects: 'Reconexiones',
    connHeartbeat: 'Último latido',
    connChannels: 'Canales',
    stateListening: 'Escuchando',
    stateConnecting: 'Conectando',
    stateBackoff: 'Esperando para reconectar',
    stateClosed: 'Cerrada',
    stateFailed: 'Fallida',
    stateIdle: 'Inactiva',
    probability: 'Probabilidad de falla',
    probabilityHint: 'Respuesta del backend para cada vector enviado (%)',
    probabilitySeries: 'Probabilidad (%)',
    chartEmpty: 'Aún no hay predicciones. Los puntos aparecen al enviar vectores.',
    points: '{0} puntos',
    backlog: 'Pendientes',
    outbox: 'Vectores en outbox',
    breaker: 'Interruptor del backend',
    openGroups: 'Grupos abiertos',
    breakerClosed: 'Cerrado',
    breakerOpen: 'Abierto',
    breakerHalfOpen: 'Semiabierto',
    routeFault: 'Ruta del backend rechazada: los envíos de esta bomba esperan.',
    routeRedirect: 'El backend respondió {0} (redirección a {1}).',
    routeNoLocation: 'sin Location',
    routeUnauthorized: 'El backend respondió 401: rechazó la API key.',
    routeForbidden: 'El backend respondió {0}: acceso prohibido.',
    routeFixUrl: 'Revise la BASE_URL de la bomba y reinicie; nada se descarta.',
    routeFixKey: 'Revise API_KEY y reinicie; nada se descarta.',
    logbookRouteFault: 'Ruta del clasificador rechazada: las entradas de esta bitácora esperan.',
    logbookRouteFixUrl: 'Revise la URL base del clasificador y reinicie; nada se descarta.',
    counters: 'Contadores',
    readings: 'Lecturas',
    vectors: 'Vectores',
    sensorPosts: 'Envíos por sensor',
    received: 'recibidas',
    invalid: 'inválidas',
    sent: 'enviados',
    filled: 'con relleno',
    dropped: 'descartados',
    ok: 'correctos',
    failed: 'fallidos',
    channels: 'Canales',
    channelsHint: 'Un canal NOTIFY por sensor',
    colField: 'Campo / descripción',
    colSeen: 'Visto',
    colRate: 'Lect./min',
    colValue: 'Último valor',
    colClass: 'Anomalía',
    colAnomalies: 'Anomalías detectadas por el backend',
    anomalyCount: '{0} anom.',
    classNormal: 'Normal',
    classAnomaly: 'Anomalía',
    classNone: 'Sin clasificar',
    never: 'nunca',
    ago: 'hace {0}',
    completeness: 'Completitud',
    completenessHint: 'Marcas de tiempo abiertas frente a los sensores; se envían con al menos {0} de {1}',
    colTiempo: 'Marca de tiempo',
    colCount: 'Presentes',
    present: 'Presente',
    missing: 'Falta',
    noOpenGroups: 'No hay marcas de tiempo abiertas: todo lo recibido ya se agrupó.',
    sentVectors: 'Vectores enviados recientes',
    colPrediction: 'Probabilidad',
    colAnswered: 'Respuesta',
    noSentVectors: 'Todavía no se ha enviado ningún vector.',
    errors: 'Errores',
    noErrors: 'Sin errores recientes.',
    colAt: 'Hora',
    colPump: 'Bomba',
    colMessage: 'Mensaje',
    systemErrors: 'Errores generales',
    systemErrorsHint: 'Errores que no pertenecen a una bomba concreta',
    systemPump: 'general',
    logbooks: 'Bitácoras',
    logbooksHint: 'Entradas de operación enviadas al clasificador',
    logbookCounts: 'recibidas {0} · enviadas {1} · fallidas {2} · en cola {3}',
    logbookLast: 'Última clasificación: {0} (tabla {1}, entrada {2})',
    logbookNone: 'Todavía no se ha clasificado ninguna entrada.',
    logbookStandby: 'en espera (otra réplica la atiende)',
    // ---- the wiring on the page ----
    postedOnly: 'Sólo envío por sensor',
    postedOnlyHint: 'Sensores que no entran en el vector: cada lectura se envía sola a su endpoint',
    sharedWith: 'compartida con {0}',
    sharedWithTitle: 'Tabla que también lee la bomba {0}: una fila, un valor en ambos vectores',
    completenessFields:
      'Marcas de tiempo abiertas frente a los {1} campos del vector; se envían con al menos {0}',
    missingList: 'faltan: {0}',
    recentVectors: 'Vectores recientes',
    colOutcome: 'Resultado',
    vectorSent: 'enviado',
    vectorDropped: 'descartado',
    droppedMissing: 'faltaba {0}',
    droppedExpired: 'caducó',
    droppedEvicted: 'desplazado',
    droppedWhy: 'Descartados recientes, por campo que faltaba: {0}',
    droppedTitle: 'Marcas de tiempo que no reunieron los campos necesarios dentro de su plazo',
    logbookRecent: 'Últimas entradas',
    logbookNoEntries: 'Todavía no ha llegado ninguna entrada.',
    entryReceived: 'recibida',
    entryRetrying: 'reintentando',
    entrySent: 'enviada',
    entryFailed: 'no entregada',
    entryNoText: '(texto leído al enviar)',
    entryLabel: 'Entrada {0} de {1}',
    errInvalid: 'Notificación inválida en {0}: {1}',
    errInternal: 'Error interno en {0}: {1}',
    errVectorDead: 'El backend respondió {0} al vector de {1}; guardado como carta muerta',
    errLogbookDead: 'Bitácora {0}: la entrada {1} de {2} no se entregó',
    errPostFailed: 'Envío por sensor {0} (id {1}) fallido: {2}',
    errListenLost: 'Conexión LISTEN perdida: {0}',
  },
  en: {
    documentTitle: 'Pump monitor',
    title: 'Pump monitor',
    subtitle: 'Feed-water pumps · live status',
    updated: 'Updated',
    languageGroup: 'Language',
    footer: 'pump-monitor · served by the service itself, no external resources',
    linkLive: 'Live',
    linkPolling: 'Polling every 2 s',
    linkConnecting: 'Connecting…',
    linkStale: 'No recent data',
    linkDown: 'Service unreachable',
    waiting: 'Waiting for data from the service…',
    pumpConnected: 'Listening',
    pumpDisconnected: 'Not listening',
    lastPrediction: 'Latest failure probability',
    noPredictionYet: 'no prediction',
    connection: 'Connection',
    connState: 'State',
    connUptime: 'Uptime',
    connReconnects: 'Reconnects',
    connHeartbeat: 'Last heartbeat',
    connChannels: 'Channels',
    stateListening: 'Listening',
    stateConnecting: 'Connecting',
    stateBackoff: 'Waiting to reconnect',
    stateClosed: 'Closed',
    stateFailed: 'Failed',
    stateIdle: 'Idle',
    probability: 'Failure probability',
    probabilityHint: 'Backend answer for each vector sent (%)',
    probabilitySeries: 'Probability (%)',
    chartEmpty: 'No predictions yet. Points appear as vectors are sent.',
    points: '{0} points',
    backlog: 'Backlog',
    outbox: 'Vectors in outbox',
    breaker: 'Backend breaker',
    openGroups: 'Open groups',
    breakerClosed: 'Closed',
    breakerOpen: 'Open',
    breakerHalfOpen: 'Half-open',
    routeFault: "Backend route refused: this pump's deliveries are on hold.",
    routeRedirect: 'The backend answered {0} (redirect to {1}).',
    routeNoLocation: 'no Location',
    routeUnauthorized: 'The backend answered 401: it refused the API key.',
    routeForbidden: 'The backend answered {0}: access forbidden.',
    routeFixUrl: "Check the pump's BASE_URL and restart; nothing is discarded.",
    routeFixKey: 'Check API_KEY and restart; nothing is discarded.',
    logbookRouteFault: "Classifier route refused: this logbook's entries are on hold.",
    logbookRouteFixUrl: "Check the classifier's base URL and restart; nothing is discarded.",
    counters: 'Counters',
    readings: 'Readings',
    vectors: 'Vectors',
    sensorPosts: 'Sensor posts',
    received: 'received',
    invalid: 'invalid',
    sent: 'sent',
    filled: 'filled',
    dropped: 'dropped',
    ok: 'ok',
    failed: 'failed',
    channels: 'Channels',
    channelsHint: 'One NOTIFY channel per sensor',
    colField: 'Field / description',
    colSeen: 'Seen',
    colRate: 'Rdg./min',
    colValue: 'Last value',
    colClass: 'Anomaly',
    colAnomalies: 'Anomalies counted by the backend',
    anomalyCount: '{0} anom.',
    classNormal: 'Normal',
    classAnomaly: 'Anomaly',
    classNone: 'Not classified',
    never: 'never',
    ago: '{0} ago',
    completeness: 'Completeness',
    completenessHint: 'Open timestamps against the sensors; sent with at least {0} of {1}',
    colTiempo: 'Timestamp',
    colCount: 'Present',
    present: 'Present',
    missing: 'Missing',
    noOpenGroups: 'No open timestamps: everything received has been grouped.',
    sentVectors: 'Recently sent vectors',
    colPrediction: 'Probability',
    colAnswered: 'Answered',
    noSentVectors: 'No vector has been sent yet.',
    errors: 'Errors',
    noErrors: 'No recent errors.',
    colAt: 'Time',
    colPump: 'Pump',
    colMessage: 'Message',
    systemErrors: 'General errors',
    systemErrorsHint: 'Errors that do not belong to one pump',
    systemPump: 'general',
    logbooks: 'Logbooks',
    logbooksHint: 'Operator entries sent to the classifier',
    logbookCounts: 'received {0} · sent {1} · failed {2} · queued {3}',
    logbookLast: 'Last classification: {0} (table {1}, entry {2})',
    logbookNone: 'No entry classified yet.',
    logbookStandby: 'standby (another replica serves it)',
    // ---- the wiring on the page ----
    postedOnly: 'Posted on their own only',
    postedOnlyHint: "Sensors outside the vector: each reading goes alone to its sensor's endpoint",
    sharedWith: 'shared with {0}',
    sharedWithTitle: 'A table pump {0} reads too: one row, one value in both vectors',
    completenessFields: "Open timestamps against the vector's {1} fields; sent with at least {0}",
    missingList: 'missing: {0}',
    recentVectors: 'Recent vectors',
    colOutcome: 'Outcome',
    vectorSent: 'sent',
    vectorDropped: 'dropped',
    droppedMissing: '{0} missing',
    droppedExpired: 'expired',
    droppedEvicted: 'evicted',
    droppedWhy: 'Recently dropped, by the field they lacked: {0}',
    droppedTitle: 'Timestamps that did not gather the fields they need within their time',
    logbookRecent: 'Latest entries',
    logbookNoEntries: 'No entry has arrived yet.',
    entryReceived: 'received',
    entryRetrying: 'retrying',
    entrySent: 'sent',
    entryFailed: 'not delivered',
    entryNoText: '(text read when sent)',
    entryLabel: 'Entry {0} of {1}',
    errInvalid: 'Invalid notification on {0}: {1}',
    errInternal: 'Internal error on {0}: {1}',
    errVectorDead: 'The backend answered {0} to the vector of {1}; kept as a dead letter',
    errLogbookDead: 'Logbook {0}: entry {1} of {2} not delivered',
    errPostFailed: 'Sensor post {0} (id {1}) failed: {2}',
    errListenLost: 'LISTEN connection lost: {0}',
  },
};

const LANGS = ['es', 'en'];
const LOCALES = { es: 'es-ES', en: 'en-GB' };
const STORAGE_KEY = 'pump-monitor.lang';

let current = readLanguage();

function readLanguage() {
  try {
    const stored = window.localStorage.getItem(STORAGE_KEY);
    if (LANGS.includes(stored)) return stored;
  } catch {
    // Storage can be unavailable (private mode); the default applies.
  }
  return 'es';
}

/** The language in use: 'es' or 'en'. */
export function language() {
  return current;
}

/** Switches the language and remembers it; false for a language the page does not have. */
export function chooseLanguage(lang) {
  if (!LANGS.includes(lang)) return false;
  current = lang;
  try {
    window.localStorage.setItem(STORAGE_KEY, lang);
  } catch {
    // Not remembered, still applied.
  }
  return true;
}

/** The label `key` in the current language, `{0}`, `{1}`… replaced by `args`. */
export function t(key, ...args) {
  const text = DICT[current][key] ?? DICT.es[key] ?? key;
  return text.replace(/\{(\d)\}/g, (_m, i) => String(args[Number(i)] ?? ''));
}

/** The locale numbers and times are written in. */
export function locale() {
  return LOCALES[current];
}

// ---- texts that come from the definitions and the backend, in both languages ----

/**
 * The Spanish phrases of the sensor descriptions (pumps/*.json), most specific first, with their English.
 * Plant tags (1A, 1B, BAA, AE01B, 12FPMFC) are names and stay as they are.
 */
const SENSOR_PHRASES = [
  ['Corriente motor bomba agua alimentación', 'Feed-water pump motor current'],
  ['Excentricidad bomba', 'Pump eccentricity'],
  ['Flujo de agua alimentación domo AP', 'HP drum feed-water flow'],
  ['Flujo de agua alimentación domo MP', 'IP drum feed-water flow'],
  ['Flujo de agua atemperación recalentador', 'Reheater attemperation water flow'],
  ['Flujo de agua atemperación vapor alta AP SH', 'HP superheater attemperation water flow'],
  ['Flujo de salida', 'Outlet flow'],
  ['Flujo descarga AP', 'HP discharge flow'],
  ['MW brutos de generación total gas', 'Gross MW, total gas generation'],
  ['Posición válvula recirculación', 'Recirculation valve position'],
  ['Presión agua alimentación economizador AP', 'HP economizer feed-water pressure'],
  ['Presión agua alimentación economizador MP', 'IP economizer feed-water pressure'],
  ['Presión agua alimentación AP', 'HP feed-water pressure'],
  ['Presión succión', 'Suction pressure'],
  ['Salida de bomba de alta presión', 'High-pressure pump outlet'],
  ['Temperatura agua alimentación AP', 'HP feed-water temperature'],
  ['Temperatura agua alimentación', 'Feed-water temperature'],
  ['Temperatura ambiental', 'Ambient temperature'],
  ['Temperatura descanso interno empuje bomba', 'Pump inner thrust bearing temperature'],
  ['Temperatura descanso interno motor bomba', 'Pump motor inner bearing temperature'],
  ['Temperatura descanso interno bomba', 'Pump inner bearing temperature'],
  ['Temperatura estator motor bomba', 'Pump motor stator temperature'],
  ['Vibración X descanso externo bomba', 'Pump outer bearing vibration X'],
  ['Vibración Y descanso externo bomba', 'Pump outer bearing vibration Y'],
  ['Vibración X descanso interno bomba', 'Pump inner bearing vibration X'],
  ['Vibración Y descanso interno bomba', 'Pump inner bearing vibration Y'],
  ['Vibración axial descanso empuje bomba', 'Pump thrust bearing axial vibration'],
  ['Voltaje barra 6,6 kV', 'Busbar voltage 6.6 kV'],
];

/** The English notes some profile descriptions carry in brackets, with their Spanish. */
const NOTE_PHRASES = [
  [/table shared with pump (\w+)/g, 'tabla compartida con la bomba $1'],
  [/pump (\w+)'s table/g, 'tabla de la bomba $1'],
  [/, where it is (\w+)/g, ', donde es $1'],
  [/read from the table named (\w+)/g, 'leído de la tabla $1'],
  [/\bcompensated\b/g, 'compensado'],
];

/** A sensor's description in the current language (the definitions mix Spanish names and English notes). */
export function sensorText(description) {
  let text = String(description ?? '');
  if (current === 'en') {
    for (const [es, en] of SENSOR_PHRASES) {
      if (text.startsWith(es)) {
        text = en + text.slice(es.length);
        break;
      }
    }
    return text;
  }
  for (const [en, es] of NOTE_PHRASES) text = text.replace(en, es);
  return text;
}

/** The logbook classes of the reference classifier, in English; a class it does not know stays as sent. */
const CLASSES_EN = {
  'Falla de bomba': 'Pump failure',
  Alarma: 'Alarm',
  Mantenimiento: 'Maintenance',
  Rutina: 'Routine',
  'Sin clasificar': 'Not classified',
};

export function classText(clasificacion) {
  if (current === 'en') return CLASSES_EN[clasificacion] ?? clasificacion;
  return clasificacion;
}

/** Why a notification was refused (decode.ts's reasons), in Spanish; English keeps the service's own words. */
const REASONS_ES = {
  unknown_channel: 'ninguna bomba escucha ese canal',
  oversized: 'el mensaje es demasiado largo',
  not_json: 'el mensaje no es JSON',
  not_object: 'el mensaje no es un objeto JSON',
  bad_id_sensor: 'id_sensor no es un id de fila',
  bad_tiempo_sensor: 'tiempo_sensor no es una marca de tiempo',
  valor_null: 'valor nulo',
  valor_not_number: 'el valor no es un número',
  valor_not_finite: 'el valor no es finito',
  no_such_row: 'la tabla no tiene esa fila',
  payload_mismatch: 'valor o tiempo_sensor distintos de los de la fila (se usan los de la fila)',
};

/** An error of the service in the current language: its kind's sentence, or the service's message. */
export function errorText(e) {
  const a = e.args ?? {};
  switch (e.kind) {
    case 'invalid':
      return t('errInvalid', a.channel, current === 'es' ? (REASONS_ES[a.reason] ?? a.detail) : a.detail);
    case 'internal':
      return t('errInternal', a.channel, a.detail);
    case 'vectorDead':
      return t('errVectorDead', a.status, a.tiempo);
    case 'logbookDead':
      return t('errLogbookDead', a.logbook, a.id, a.table);
    case 'postFailed':
      return t('errPostFailed', a.endpoint, a.id, a.detail);
    case 'listenLost':
      return t('errListenLost', a.detail);
    default:
      return String(e.message ?? '');
  }
}
