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
