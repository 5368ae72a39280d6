// One pump's card: connection, chart, backlog, counters, channels, completeness, sent vectors, errors.
import { destroyChart, renderChart } from './chart.js';
import { empty, h, table } from './dom.js';
import { ago, clock, duration, num, percent, riskClass, shortTiempo } from './format.js';
import { channelMark, channelRowClass, createVerdict, renderHealthHistory, renderVerdict } from './health.js';
import { t } from './i18n.js';

const MAX_ERRORS = 8;
const MAX_SENT = 8;

/** A pump's card, with empty slots that renderCard() fills. */
export function createCard(pump) {
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

  // The verdict leads the card (health.js).
  slots.verdict = createVerdict();
  const root = h(
    'article',
    { class: 'card pump', 'data-pump': pump.id },
    slots.verdict,
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
      slot('healthHistory', 'div', 'health-history'),
    ),
    section('backlog', null, slot('route', 'p', 'route-fault status-bad'), slot('backlog', 'div', 'tiles')),
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

/** Removes a card and its chart. */
export function destroyCard(card) {
  destroyChart(card);
  card.root.remove();
}

/** Fills a pump's card from its part of the model. */
export function renderCard(card, pump, model) {
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

  renderVerdict(slots.verdict, s.health, model.now);
  card.levels = s.health?.levels;
  renderHealthHistory(slots.healthHistory, s.health, model.now);
  renderConnection(slots.connection, s, model);
  renderChart(card, preds);
  renderRouteFault(slots.route, s.route_fault);
  renderBacklog(slots.backlog, s);
  renderCounters(slots.counters, s);
  renderChannels(slots.channels, pump.channels ?? [], s.health, model.now);
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

function tile(label, value, cls) {
  return h(
    'div',
    { class: `tile ${cls ?? ''}` },
    h('span', { class: 'tile-value', text: value }),
    h('span', { class: 'tile-label', text: label }),
  );
}

/**
 * A backend that refuses the pump's route (a redirect, 401, 403): its deliveries hold until the
 * configuration is fixed. Says the status, a redirect's target, and what to check.
 */
function renderRouteFault(el, fault) {
  el.hidden = !fault;
  if (!fault) {
    el.replaceChildren();
    return;
  }
  const redirect = fault.status >= 300 && fault.status < 400;
  const what = redirect
    ? t('routeRedirect', fault.status, fault.location ?? t('routeNoLocation'))
    : fault.status === 401
      ? t('routeUnauthorized')
      : t('routeForbidden', fault.status);
  el.replaceChildren(
    h('strong', { text: t('routeFault') }),
    ' ',
    what,
    ' ',
    t(redirect ? 'routeFixUrl' : 'routeFixKey'),
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

function renderChannels(el, channels, health, now) {
  const rows = channels.map((c, i) => {
    const stale = typeof c.last_seen_ms_ago === 'number' && c.last_seen_ms_ago > 60_000;
    const value =
      typeof c.last_value === 'number' ? `${num(c.last_value, 2)}${c.unit ? ` ${c.unit}` : ''}` : '—';
    return h(
      'tr',
      {
        class:
          [c.last_class === -1 ? 'row-anomaly' : '', channelRowClass(health, c.channel)].join(' ').trim() ||
          undefined,
        'data-channel': c.channel,
      },
      h('td', { class: 'num muted', text: i + 1 }),
      h(
        'td',
        { class: 'field' },
        h('code', { text: c.field }),
        channelMark(health, c.channel, now),
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

export function renderErrors(el, errors, withPump) {
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
