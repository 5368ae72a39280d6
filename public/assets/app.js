// Live status page of pump-monitor. Reads only what GET /api/view and GET /events return.
(() => {
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
    },
  };

  const LANGS = ['es', 'en'];
  const LOCALES = { es: 'es-ES', en: 'en-GB' };
  const STORAGE_KEY = 'pump-monitor.lang';
  const POLL_MS = 2_000;
  const STALE_MS = 6_000;
  const SSE_RETRY_POLLS = 15;
  const CHART_HEIGHT = 220;
  const MAX_ERRORS = 8;
  const MAX_SENT = 8;
  /** Whole-second steps for the chart's time axis (labels are times of day). */
  const X_STEPS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400, 43200, 86400];

  const app = {
    lang: readLanguage(),
    model: null,
    link: 'connecting',
    lastUpdate: 0,
    /** id -> { root, slots, chart, resize } */
    cards: new Map(),
    stream: null,
    pollTimer: null,
    polls: 0,
  };

  /** For tests and debugging: what the page has drawn so far. */
  const exposed = { points: {}, updates: 0, source: 'connecting', lang: app.lang };
  window.__pumpMonitor = exposed;

  // ---- language ----

  function readLanguage() {
    try {
      const stored = window.localStorage.getItem(STORAGE_KEY);
      if (LANGS.includes(stored)) return stored;
    } catch {
      // Storage can be unavailable (private mode); the default applies.
    }
    return 'es';
  }

  function t(key, ...args) {
    const text = DICT[app.lang][key] ?? DICT.es[key] ?? key;
    return text.replace(/\{(\d)\}/g, (_m, i) => String(args[Number(i)] ?? ''));
  }

  function setLanguage(lang) {
    if (!LANGS.includes(lang)) return;
    app.lang = lang;
    exposed.lang = lang;
    try {
      window.localStorage.setItem(STORAGE_KEY, lang);
    } catch {
      // Not remembered, still applied.
    }
    applyStaticLabels();
    for (const card of app.cards.values()) destroyCard(card);
    app.cards.clear();
    document.getElementById('pumps').replaceChildren();
    renderLink();
    if (app.model) render(app.model);
    else renderWaiting();
  }

  function applyStaticLabels() {
    document.documentElement.lang = app.lang;
    document.title = t('documentTitle');
    for (const el of document.querySelectorAll('[data-i18n]')) el.textContent = t(el.dataset.i18n);
    for (const b of document.querySelectorAll('.lang button')) {
      b.setAttribute('aria-pressed', String(b.dataset.lang === app.lang));
    }
  }

  // ---- formatting ----

  function locale() {
    return LOCALES[app.lang];
  }

  function num(v, digits = 0) {
    if (typeof v !== 'number' || !Number.isFinite(v)) return '—';
    return new Intl.NumberFormat(locale(), {
      maximumFractionDigits: digits,
      minimumFractionDigits: 0,
    }).format(v);
  }

  function percent(v) {
    if (typeof v !== 'number' || !Number.isFinite(v)) return '—';
    return `${new Intl.NumberFormat(locale(), { minimumFractionDigits: 1, maximumFractionDigits: 1 }).format(v)} %`;
  }

  function duration(seconds) {
    if (typeof seconds !== 'number' || !Number.isFinite(seconds)) return '—';
    const s = Math.max(0, Math.round(seconds));
    if (s < 60) return `${s} s`;
    const m = Math.floor(s / 60);
    if (m < 60) return `${m} min ${s % 60} s`;
    const h = Math.floor(m / 60);
    if (h < 24) return `${h} h ${m % 60} min`;
    return `${Math.floor(h / 24)} d ${h % 24} h`;
  }

  function ago(ms) {
    if (typeof ms !== 'number' || !Number.isFinite(ms)) return t('never');
    return t('ago', duration(ms / 1000));
  }

  function clock(ms) {
    if (typeof ms !== 'number' || !Number.isFinite(ms)) return '—';
    return new Date(ms).toLocaleTimeString(locale(), { hour12: false });
  }

  /** The time of day of a `tiempo_sensor` text, the whole text when it has none. */
  function shortTiempo(tiempo) {
    const m = /(\d{2}:\d{2}:\d{2}(?:\.\d+)?)/.exec(String(tiempo));
    return m ? m[1] : String(tiempo);
  }

  function riskClass(p) {
    if (typeof p !== 'number' || !Number.isFinite(p)) return 'risk-none';
    if (p >= 70) return 'risk-high';
    if (p >= 30) return 'risk-medium';
    return 'risk-low';
  }

  // ---- DOM helpers ----

  function h(tag, props, ...children) {
    const el = document.createElement(tag);
    if (props) {
      for (const [k, v] of Object.entries(props)) {
        if (v === undefined || v === null || v === false) continue;
        if (k === 'class') el.className = v;
        else if (k === 'text') el.textContent = String(v);
        else el.setAttribute(k, String(v));
      }
    }
    for (const c of children.flat()) {
      if (c === undefined || c === null || c === false) continue;
      el.append(c instanceof Node ? c : String(c));
    }
    return el;
  }

  function table(cls, headers, rows) {
    return h(
      'div',
      { class: 'table-wrap' },
      h(
        'table',
        { class: cls },
        h(
          'thead',
          null,
          h(
            'tr',
            null,
            headers.map((x) => h('th', { scope: 'col', class: x.class, title: x.title, text: x.text })),
          ),
        ),
        h('tbody', null, rows),
      ),
    );
  }

  function empty(text) {
    return h('p', { class: 'empty', text });
  }

  // ---- one pump ----

  function createCard(pump) {
    const slots = {};
    const slot = (name, tag = 'div', cls) => {
      const el = h(tag, { class: cls, 'data-slot': name });
      slots[name] = el;
      return el;
    };
    const section = (titleKey, hint, ...body) =>
      h(
        'section',
        { class: `block block-${titleKey}` },
        h('div', { class: 'block-head' }, h('h3', { text: t(titleKey) }), hint),
        body,
      );

    const root = h(
      'article',
      { class: 'card pump', 'data-pump': pump.id },
      h(
        'header',
        { class: 'pump-head' },
        h(
          'div',
          { class: 'pump-title' },
          h('h2', { text: pump.summary.name ?? pump.id }),
          slot('listening', 'span', 'pill'),
        ),
        h(
          'div',
          { class: 'risk' },
          slot('risk', 'span', 'risk-value'),
          h('span', { class: 'risk-label', text: t('lastPrediction') }),
        ),
      ),
      section('connection', null, slot('connection', 'dl', 'kv')),
      section(
        'probability',
        slot('points', 'span', 'hint'),
        h('p', { class: 'hint block-sub', text: t('probabilityHint') }),
        slot('chart', 'div', 'chart'),
        slot('chartEmpty', 'p', 'chart-empty'),
      ),
      section('backlog', null, slot('backlog', 'div', 'tiles')),
      section('counters', null, slot('counters', 'div', 'counters')),
      section('channels', h('span', { class: 'hint', text: t('channelsHint') }), slot('channels')),
      section(
        'completeness',
        slot('completenessHint', 'span', 'hint'),
        slot('completeness'),
        h('h4', { text: t('sentVectors') }),
        slot('sent'),
      ),
      section('errors', null, slot('errors')),
    );
    slots.chartEmpty.textContent = t('chartEmpty');
    return { id: pump.id, root, slots, chart: null, observer: null, count: -1 };
  }

  function createChart(card) {
    const el = card.slots.chart;
    const width = Math.max(240, el.clientWidth);
    const axisColor = '#52606d';
    const gridColor = '#e8ecf0';
    const opts = {
      width,
      height: CHART_HEIGHT,
      scales: { x: { time: true }, y: { auto: false, range: [0, 100] } },
      legend: { show: true, live: true },
      cursor: { drag: { x: false, y: false, setScale: false } },
      series: [
        { label: t('colAt'), value: (_u, v) => (v == null ? '—' : clock(v * 1000)) },
        {
          label: t('probabilitySeries'),
          stroke: '#2563eb',
          width: 2,
          fill: 'rgba(37, 99, 235, 0.10)',
          points: { size: 5, fill: '#2563eb' },
          value: (_u, v) => (v == null ? '—' : percent(v)),
        },
      ],
      axes: [
        {
          stroke: axisColor,
          grid: { stroke: gridColor, width: 1 },
          ticks: { stroke: gridColor, width: 1 },
          font: '11px system-ui, sans-serif',
          space: 70,
          incrs: X_STEPS,
          values: (_u, splits) => splits.map((v) => clock(v * 1000)),
        },
        {
          stroke: axisColor,
          grid: { stroke: gridColor, width: 1 },
          ticks: { stroke: gridColor, width: 1 },
          font: '11px system-ui, sans-serif',
          size: 48,
          splits: () => [0, 25, 50, 75, 100],
          values: (_u, splits) => splits.map((v) => `${v} %`),
        },
      ],
    };
    card.chart = new window.uPlot(opts, [[], []], el);
    card.observer = new ResizeObserver(() => {
      const w = Math.max(240, el.clientWidth);
      if (card.chart && Math.abs(card.chart.width - w) > 1)
        card.chart.setSize({ width: w, height: CHART_HEIGHT });
    });
    card.observer.observe(el);
  }

  function destroyCard(card) {
    card.observer?.disconnect();
    card.chart?.destroy();
    card.chart = null;
    card.root.remove();
  }

  function renderCard(card, pump, model) {
    const s = pump.summary;
    const { slots } = card;

    slots.listening.className = `pill ${s.connected ? 'pill-ok' : 'pill-bad'}`;
    slots.listening.replaceChildren(
      h('span', { class: 'dot', 'aria-hidden': 'true' }),
      t(s.connected ? 'pumpConnected' : 'pumpDisconnected'),
    );

    const preds = Array.isArray(pump.predictions) ? pump.predictions : [];
    const latest = s.last_prediction?.prediccion ?? preds[preds.length - 1]?.prediccion;
    slots.risk.className = `risk-value ${riskClass(latest)}`;
    slots.risk.textContent = typeof latest === 'number' ? percent(latest) : t('noPredictionYet');

    renderConnection(slots.connection, s, model);
    renderChart(card, preds);
    renderBacklog(slots.backlog, s);
    renderCounters(slots.counters, s);
    renderChannels(slots.channels, pump.channels ?? []);
    renderCompleteness(slots, pump, s);
    renderSent(slots.sent, preds, model.now);
    renderErrors(
      slots.errors,
      (model.errors ?? []).filter((e) => e.pump === pump.id),
      false,
    );
  }

  function renderConnection(dl, s, model) {
    const stateKey = {
      listening: 'stateListening',
      connecting: 'stateConnecting',
      backoff: 'stateBackoff',
      closed: 'stateClosed',
      failed: 'stateFailed',
      idle: 'stateIdle',
    }[model.state];
    const stateCls = model.state === 'listening' ? 'ok' : model.state === 'failed' ? 'bad' : 'warn';
    const heartbeat =
      typeof model.last_heartbeat_at === 'number' ? ago(model.now - model.last_heartbeat_at) : t('never');
    const item = (label, value, cls) =>
      h('div', { class: 'kv-item' }, h('dt', { text: label }), h('dd', { class: cls, text: value }));
    dl.replaceChildren(
      item(t('connState'), stateKey ? t(stateKey) : String(model.state), `status-${stateCls}`),
      item(t('connUptime'), duration(model.uptime_s)),
      item(t('connReconnects'), num(model.reconnects), model.reconnects > 0 ? 'status-warn' : undefined),
      item(t('connHeartbeat'), heartbeat),
      item(t('connChannels'), num(s.channels)),
    );
  }

  function renderChart(card, preds) {
    if (!card.chart) createChart(card);
    const xs = [];
    const ys = [];
    for (const p of preds) {
      if (typeof p.at !== 'number' || typeof p.prediccion !== 'number') continue;
      xs.push(p.at / 1000);
      ys.push(p.prediccion);
    }
    if (xs.length !== card.count || xs[xs.length - 1] !== card.lastX) {
      card.chart.setData([xs, ys]);
      card.count = xs.length;
      card.lastX = xs[xs.length - 1];
    }
    exposed.points[card.id] = xs.length;
    card.slots.points.textContent = t('points', num(xs.length));
    card.slots.chartEmpty.hidden = xs.length > 0;
  }

  function tile(label, value, cls) {
    return h(
      'div',
      { class: `tile ${cls ?? ''}` },
      h('span', { class: 'tile-value', text: value }),
      h('span', { class: 'tile-label', text: label }),
    );
  }

  function renderBacklog(el, s) {
    const breakerKey = { closed: 'breakerClosed', open: 'breakerOpen', 'half-open': 'breakerHalfOpen' }[
      s.breaker
    ];
    const breakerCls = s.breaker === 'closed' ? 'tile-ok' : s.breaker === 'open' ? 'tile-bad' : 'tile-warn';
    el.replaceChildren(
      tile(t('outbox'), num(s.outbox_pending), s.outbox_pending > 0 ? 'tile-warn' : undefined),
      tile(t('breaker'), breakerKey ? t(breakerKey) : String(s.breaker), breakerCls),
      tile(t('openGroups'), num(s.open_groups)),
    );
  }

  function renderCounters(el, s) {
    const group = (titleKey, items) =>
      h(
        'div',
        { class: 'counter-group' },
        h('span', { class: 'counter-title', text: t(titleKey) }),
        h(
          'ul',
          null,
          items.map(([key, v, bad]) =>
            h(
              'li',
              { class: bad && v > 0 ? 'counter-bad' : undefined },
              h('span', { class: 'counter-value', text: num(v) }),
              h('span', { class: 'counter-label', text: t(key) }),
            ),
          ),
        ),
      );
    el.replaceChildren(
      group('readings', [
        ['received', s.readings_received],
        ['invalid', s.readings_invalid, true],
      ]),
      group('vectors', [
        ['sent', s.vectors_sent],
        ['filled', s.vectors_filled],
        ['dropped', s.vectors_dropped, true],
      ]),
      group('sensorPosts', [
        ['ok', s.sensor_posts_ok],
        ['failed', s.sensor_posts_failed, true],
      ]),
    );
  }

  function classBadge(c) {
    if (c === -1) return h('span', { class: 'badge badge-bad', text: t('classAnomaly') });
    if (c === 1) return h('span', { class: 'badge badge-ok', text: t('classNormal') });
    return h('span', { class: 'badge badge-muted', text: t('classNone') });
  }

  function renderChannels(el, channels) {
    const rows = channels.map((c, i) => {
      const stale = typeof c.last_seen_ms_ago === 'number' && c.last_seen_ms_ago > 60_000;
      const value =
        typeof c.last_value === 'number' ? `${num(c.last_value, 2)}${c.unit ? ` ${c.unit}` : ''}` : '—';
      return h(
        'tr',
        { class: c.last_class === -1 ? 'row-anomaly' : undefined },
        h('td', { class: 'num muted', text: i + 1 }),
        h(
          'td',
          { class: 'field' },
          h('code', { text: c.field }),
          h('span', { class: 'desc', text: c.description, title: c.channel }),
        ),
        h('td', {
          class: `nowrap ${c.last_seen_ms_ago === null ? 'muted' : stale ? 'status-warn' : ''}`,
          text: c.last_seen_ms_ago === null ? t('never') : ago(c.last_seen_ms_ago),
        }),
        h('td', { class: 'num', text: num(c.rate_per_min) }),
        h('td', { class: 'num nowrap', text: value }),
        h(
          'td',
          { class: 'nowrap' },
          classBadge(c.last_class),
          typeof c.anomalies === 'number'
            ? h('span', {
                class: `anom-count ${c.anomalies > 0 ? 'status-bad' : 'muted'}`,
                title: t('colAnomalies'),
                text: t('anomalyCount', num(c.anomalies)),
              })
            : null,
        ),
      );
    });
    el.replaceChildren(
      table(
        'channels',
        [
          { text: '#', class: 'num' },
          { text: t('colField') },
          { text: t('colSeen') },
          { text: t('colRate'), class: 'num' },
          { text: t('colValue'), class: 'num' },
          { text: t('colClass'), title: t('colAnomalies') },
        ],
        rows,
      ),
    );
  }

  function renderCompleteness(slots, pump, s) {
    const channels = pump.channels ?? [];
    const total = channels.length;
    slots.completenessHint.textContent = t('completenessHint', num(s.min_fields), num(total));
    const groups = Array.isArray(pump.groups) ? pump.groups : [];
    if (groups.length === 0) {
      slots.completeness.replaceChildren(empty(t('noOpenGroups')));
      return;
    }
    const headers = [
      { text: t('colTiempo') },
      ...channels.map((c, i) => ({ text: String(i + 1), class: 'cell-head', title: c.field })),
      { text: t('colCount'), class: 'num' },
    ];
    const rows = groups.map((g) => {
      const present = Array.isArray(g.present) ? g.present : [];
      const n = present.filter(Boolean).length;
      const countCls = n === total ? 'status-ok' : n >= s.min_fields ? 'status-warn' : 'status-bad';
      return h(
        'tr',
        null,
        h('td', { class: 'nowrap mono', title: g.tiempo, text: shortTiempo(g.tiempo) }),
        channels.map((c, i) =>
          h(
            'td',
            { class: 'cell-td' },
            h('span', {
              class: `cell ${present[i] ? 'cell-present' : 'cell-missing'}`,
              title: `${c.field}: ${t(present[i] ? 'present' : 'missing')}`,
              'aria-label': `${c.field}: ${t(present[i] ? 'present' : 'missing')}`,
            }),
          ),
        ),
        h('td', { class: `num nowrap ${countCls}`, text: `${n}/${total}` }),
      );
    });
    slots.completeness.replaceChildren(
      table('grid', headers, rows),
      h(
        'div',
        { class: 'legend' },
        h('span', null, h('span', { class: 'cell cell-present' }), t('present')),
        h('span', null, h('span', { class: 'cell cell-missing' }), t('missing')),
      ),
    );
  }

  function renderSent(el, preds, now) {
    const recent = preds.slice(-MAX_SENT).reverse();
    if (recent.length === 0) {
      el.replaceChildren(empty(t('noSentVectors')));
      return;
    }
    el.replaceChildren(
      table(
        'sent',
        [{ text: t('colTiempo') }, { text: t('colPrediction'), class: 'num' }, { text: t('colAnswered') }],
        recent.map((p) =>
          h(
            'tr',
            null,
            h('td', { class: 'mono nowrap', title: p.tiempo_sensor, text: shortTiempo(p.tiempo_sensor) }),
            h('td', { class: `num ${riskClass(p.prediccion)}`, text: percent(p.prediccion) }),
            h('td', { class: 'nowrap muted', text: ago(now - p.at) }),
          ),
        ),
      ),
    );
  }

  function renderErrors(el, errors, withPump) {
    const list = errors.slice(0, MAX_ERRORS);
    if (list.length === 0) {
      el.replaceChildren(empty(t('noErrors')));
      return;
    }
    el.replaceChildren(
      h(
        'ul',
        { class: 'errors' },
        list.map((e) =>
          h(
            'li',
            null,
            h('time', { class: 'mono', datetime: new Date(e.at).toISOString(), text: clock(e.at) }),
            withPump ? h('span', { class: 'badge badge-muted', text: e.pump ?? t('systemPump') }) : null,
            h('span', { class: 'error-text', text: e.message }),
          ),
        ),
      ),
    );
  }

  // ---- the whole page ----

  function renderWaiting() {
    const host = document.getElementById('pumps');
    if (host.childElementCount === 0) host.append(h('p', { class: 'card waiting', text: t('waiting') }));
  }

  function render(model) {
    const host = document.getElementById('pumps');
    const pumps = Array.isArray(model.pumps) ? model.pumps : [];
    const ids = pumps.map((p) => p.id).join(',');
    if (ids !== [...app.cards.keys()].join(',')) {
      for (const card of app.cards.values()) destroyCard(card);
      app.cards.clear();
      host.replaceChildren();
      for (const p of pumps) {
        const card = createCard(p);
        host.append(card.root);
        app.cards.set(p.id, card);
      }
    }
    for (const p of pumps) renderCard(app.cards.get(p.id), p, model);

    const ids2 = new Set(pumps.map((p) => p.id));
    renderErrors(
      document.getElementById('system-errors'),
      (model.errors ?? []).filter((e) => !ids2.has(e.pump)),
      true,
    );
    document.getElementById('updated').textContent = clock(model.now);
  }

  function accept(model, source) {
    if (!model || typeof model !== 'object') return;
    app.model = model;
    app.lastUpdate = Date.now();
    exposed.updates += 1;
    exposed.source = source;
    setLink(source === 'sse' ? 'live' : 'polling');
    render(model);
  }

  function setLink(link) {
    if (app.link === link) return;
    app.link = link;
    renderLink();
  }

  function renderLink() {
    const meta = {
      live: ['linkLive', 'pill-ok'],
      polling: ['linkPolling', 'pill-warn'],
      connecting: ['linkConnecting', 'pill-muted'],
      stale: ['linkStale', 'pill-warn'],
      down: ['linkDown', 'pill-bad'],
    }[app.link];
    const pill = document.getElementById('link');
    pill.className = `pill ${meta[1]}`;
    document.getElementById('link-text').textContent = t(meta[0]);
  }

  // ---- data: Server-Sent Events, polling when they fail ----

  function openStream() {
    if (typeof window.EventSource !== 'function') {
      startPolling();
      return;
    }
    const es = new EventSource('/events');
    app.stream = es;
    es.onmessage = (ev) => {
      let model;
      try {
        model = JSON.parse(ev.data);
      } catch {
        return;
      }
      stopPolling();
      accept(model, 'sse');
    };
    es.onerror = () => {
      es.close();
      if (app.stream === es) app.stream = null;
      startPolling();
    };
  }

  function startPolling() {
    if (app.pollTimer !== null) return;
    setLink('polling');
    app.polls = 0;
    const poll = async () => {
      try {
        const res = await fetch('/api/view', { cache: 'no-store', headers: { accept: 'application/json' } });
        if (!res.ok) throw new Error(`HTTP ${res.status}`);
        accept(await res.json(), 'poll');
      } catch {
        setLink('down');
      }
      app.polls += 1;
      // Every so often, try the live stream again; its first message stops the polling.
      if (app.polls % SSE_RETRY_POLLS === 0 && app.stream === null) openStream();
    };
    app.pollTimer = window.setInterval(poll, POLL_MS);
    void poll();
  }

  function stopPolling() {
    if (app.pollTimer === null) return;
    window.clearInterval(app.pollTimer);
    app.pollTimer = null;
  }

  function watchStaleness() {
    window.setInterval(() => {
      if (app.lastUpdate === 0 || app.link === 'down') return;
      if (Date.now() - app.lastUpdate > STALE_MS) setLink('stale');
    }, 1_000);
  }

  function init() {
    for (const b of document.querySelectorAll('.lang button')) {
      b.addEventListener('click', () => setLanguage(b.dataset.lang));
    }
    applyStaticLabels();
    renderLink();
    renderWaiting();
    watchStaleness();
    openStream();
  }

  init();
})();
