// One pump's card: connection, chart, backlog, counters, channels, completeness, sent vectors, errors.
import { destroyChart, renderChart } from './chart.js';
import { empty, h, table } from './dom.js';
import { ago, clock, duration, num, percent, riskClass, shortTiempo } from './format.js';
import { channelMark, channelRowClass, createVerdict, renderHealthHistory, renderVerdict } from './health.js';
import { errorText, sensorText, t } from './i18n.js';

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
    section('counters', null, slot('counters', 'div', 'counters'), slot('dropWhy', 'p', 'drop-why')),
    section('channels', h('span', { class: 'hint', text: t('channelsHint') }), slot('channels')),
    section('postedOnly', h('span', { class: 'hint', text: t('postedOnlyHint') }), slot('postedOnly')),
    section(
      'completeness',
      slot('completenessHint', 'span', 'hint'),
      slot('completeness'),
      h('h4', { text: t('recentVectors') }),
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
  const channels = pump.channels ?? [];
  const fields = vectorFields(pump);
  renderChannels(
    slots.channels,
    channels.filter((c) => c.in_vector !== false),
    fields,
    s.health,
    model.now,
  );
  renderPostedOnly(slots, channels, s.health, model.now);
  renderCompleteness(slots, pump, s);
  renderRecentVectors(slots.sent, preds, pump.dropped ?? [], model.now);
  renderDropWhy(slots.dropWhy, pump.dropped ?? [], s);
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
 * A backend that refuses a pump's or a logbook's route (a redirect, 401, 403): its deliveries hold until
 * the configuration is fixed. Says the status, a redirect's target, and what to check; `keys` names the
 * texts for a logbook.
 */
export function renderRouteFault(el, fault, keys = { head: 'routeFault', fixUrl: 'routeFixUrl' }) {
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
    h('strong', { text: t(keys.head) }),
    ' ',
    what,
    ' ',
    t(redirect ? keys.fixUrl : 'routeFixKey'),
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

/** The vector's fields, in the order of a group's `present` (older services: the channels' fields). */
function vectorFields(pump) {
  if (Array.isArray(pump.fields)) return pump.fields;
  return [...new Set((pump.channels ?? []).filter((c) => c.in_vector !== false).map((c) => c.field))];
}

/** A mark on a sensor whose table another pump reads too. */
function sharedMark(c) {
  if (!Array.isArray(c.shared_with) || c.shared_with.length === 0) return null;
  const who = c.shared_with.join(', ');
  return h('span', {
    class: 'badge badge-shared',
    title: t('sharedWithTitle', who),
    text: t('sharedWith', who),
  });
}

function renderChannels(el, channels, fields, health, now) {
  const rows = channels.map((c, i) => {
    const column = fields ? fields.indexOf(c.field) + 1 : i + 1;
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
      h('td', { class: 'num muted col-index', text: column > 0 ? column : '·' }),
      h(
        'td',
        { class: 'field' },
        h('code', { text: c.field }),
        sharedMark(c),
        channelMark(health, c.channel, now),
        h('span', {
          class: 'desc',
          text: sensorText(c.description),
          title: `${c.channel} · ${c.description}`,
        }),
      ),
      h('td', {
        class: `nowrap ${c.last_seen_ms_ago === null ? 'muted' : stale ? 'status-warn' : ''}`,
        'data-label': t('colSeen'),
        text: c.last_seen_ms_ago === null ? t('never') : ago(c.last_seen_ms_ago),
      }),
      h('td', { class: 'num', 'data-label': t('colRate'), text: num(c.rate_per_min) }),
      h('td', { class: 'num nowrap', 'data-label': t('colValue'), text: value }),
      h(
        'td',
        { class: 'class-cell', 'data-label': t('colClass') },
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
  // The vector's fields only: a posted-only sensor never joins a vector, so it is no column here.
  const fields = vectorFields(pump);
  const total = fields.length;
  slots.completenessHint.textContent = t('completenessFields', num(s.min_fields), num(total));
  const groups = Array.isArray(pump.groups) ? pump.groups : [];
  if (groups.length === 0) {
    slots.completeness.replaceChildren(empty(t('noOpenGroups')));
    return;
  }
  const headers = [
    { text: t('colTiempo') },
    ...fields.map((f, i) => ({ text: String(i + 1), class: 'cell-head', title: f })),
    { text: t('colCount'), class: 'num' },
    { text: t('missing'), class: 'grid-missing' },
  ];
  const rows = groups.map((g) => {
    const present = Array.isArray(g.present) ? g.present : [];
    const n = present.filter(Boolean).length;
    const countCls = n === total ? 'status-ok' : n >= s.min_fields ? 'status-warn' : 'status-bad';
    return h(
      'tr',
      null,
      h('td', { class: 'nowrap mono', title: g.tiempo, text: shortTiempo(g.tiempo) }),
      fields.map((f, i) =>
        h(
          'td',
          { class: 'cell-td' },
          h('span', {
            class: `cell ${present[i] ? 'cell-present' : 'cell-missing'}`,
            title: `${f}: ${t(present[i] ? 'present' : 'missing')}`,
            'aria-label': `${f}: ${t(present[i] ? 'present' : 'missing')}`,
          }),
        ),
      ),
      h('td', { class: `num nowrap ${countCls}`, text: `${n}/${total}` }),
      // On a phone the cells give way to the names of the missing fields.
      h('td', { class: 'grid-missing', text: fields.filter((_f, i) => !present[i]).join(', ') || '—' }),
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

/** Why a group was dropped: the fields it lacked, or its reason when it lacked none. */
function dropText(d) {
  const missing = Array.isArray(d.missing) ? d.missing : [];
  if (missing.length > 0) return t('droppedMissing', missing.join(', '));
  return t(d.reason === 'evicted' ? 'droppedEvicted' : 'droppedExpired');
}

/** The latest vectors: sent ones with their probability, dropped ones with the field they lacked. */
function renderRecentVectors(el, preds, dropped, now) {
  const recent = [
    ...preds.slice(-MAX_SENT).map((p) => ({ sent: true, tiempo: p.tiempo_sensor, at: p.at, p })),
    ...dropped.slice(-MAX_SENT).map((d) => ({ sent: false, tiempo: d.tiempo_sensor, at: d.at, d })),
  ]
    .sort((a, b) => b.at - a.at)
    .slice(0, MAX_SENT);
  if (recent.length === 0) {
    el.replaceChildren(empty(t('noSentVectors')));
    return;
  }
  el.replaceChildren(
    table(
      'sent',
      [{ text: t('colTiempo') }, { text: t('colOutcome') }, { text: t('colAnswered') }],
      recent.map((v) =>
        h(
          'tr',
          { class: v.sent ? undefined : 'row-dropped' },
          h('td', { class: 'mono nowrap', title: v.tiempo, text: shortTiempo(v.tiempo) }),
          v.sent
            ? h('td', { class: riskClass(v.p.prediccion) }, `${t('vectorSent')} · ${percent(v.p.prediccion)}`)
            : h(
                'td',
                { class: 'drop-cell' },
                h('span', { class: 'status-bad', text: t('vectorDropped') }),
                ` · ${dropText(v.d)}`,
              ),
          h('td', { class: 'nowrap muted', text: ago(now - v.at) }),
        ),
      ),
    ),
  );
}

/** Under the counters: what the recently dropped groups lacked, most frequent first. */
function renderDropWhy(el, dropped, s) {
  const counts = new Map();
  for (const d of dropped) for (const f of d.missing ?? []) counts.set(f, (counts.get(f) ?? 0) + 1);
  el.hidden = !(s.vectors_dropped > 0 && dropped.length > 0);
  if (el.hidden) {
    el.replaceChildren();
    return;
  }
  const list = [...counts.entries()]
    .sort((a, b) => b[1] - a[1])
    .map(([f, n]) => `${f} ×${n}`)
    .join(', ');
  el.title = t('droppedTitle');
  el.replaceChildren(t('droppedWhy', list || dropText(dropped[dropped.length - 1])));
}

/** The sensors outside the vector, listed apart: their readings are posted one by one. */
function renderPostedOnly(slots, channels, health, now) {
  const posted = channels.filter((c) => c.in_vector === false);
  const block = slots.postedOnly.closest('section');
  if (block) block.hidden = posted.length === 0;
  if (posted.length === 0) {
    slots.postedOnly.replaceChildren();
    return;
  }
  renderChannels(slots.postedOnly, posted, [], health, now);
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
          h('span', { class: 'error-text', title: e.message, text: errorText(e) }),
        ),
      ),
    ),
  );
}
