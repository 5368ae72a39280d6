// Live status page of pump-monitor. Reads only what GET /api/view and GET /events return.
import { h } from './dom.js';
import { clock } from './format.js';
import { chooseLanguage, classText, language, t } from './i18n.js';
import { connect, received, renderLink } from './live.js';
import { createCard, destroyCard, renderCard, renderErrors, renderRouteFault } from './pump-card.js';
import { exposed } from './state.js';

const app = {
  model: null,
  /** id -> the pump's card (see createCard) */
  cards: new Map(),
};

// ---- language ----

function setLanguage(lang) {
  if (!chooseLanguage(lang)) return;
  exposed.lang = lang;
  applyStaticLabels();
  for (const card of app.cards.values()) destroyCard(card);
  app.cards.clear();
  document.getElementById('pumps').replaceChildren();
  renderLink();
  if (app.model) render(app.model);
  else renderWaiting();
}

function applyStaticLabels() {
  document.documentElement.lang = language();
  document.title = t('documentTitle');
  for (const el of document.querySelectorAll('[data-i18n]')) el.textContent = t(el.dataset.i18n);
  for (const b of document.querySelectorAll('.lang button')) {
    b.setAttribute('aria-pressed', String(b.dataset.lang === language()));
  }
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

  renderLogbooks(Array.isArray(model.logbooks) ? model.logbooks : []);

  const ids2 = new Set(pumps.map((p) => p.id));
  renderErrors(
    document.getElementById('system-errors'),
    (model.errors ?? []).filter((e) => !ids2.has(e.pump)),
    true,
  );
  document.getElementById('updated').textContent = clock(model.now);
}

/** The logbook streams' counters and last classification; the section is hidden without logbooks. */
function renderLogbooks(logbooks) {
  const section = document.getElementById('logbooks');
  section.hidden = logbooks.length === 0;
  const rows = logbooks.map((l) => {
    const last = l.last_classification;
    return h('div', { class: 'logbook' }, [
      h('strong', { text: `${l.name}${l.owned ? '' : ` — ${t('logbookStandby')}`}` }),
      h('p', { class: 'logbook-counts', text: t('logbookCounts', l.received, l.sent, l.failed, l.queued) }),
      routeFaultOf(l.route_fault),
      h('p', {
        class: 'logbook-last',
        text: last ? t('logbookLast', classText(last.clasificacion), last.tabla, last.id) : t('logbookNone'),
      }),
      renderLogbookEntries(Array.isArray(l.recent) ? l.recent : []),
    ]);
  });
  document.getElementById('logbook-list').replaceChildren(...rows);
}

/** A refused classifier route, said as on a pump's card (hidden while there is none). */
function routeFaultOf(fault) {
  const el = h('p', { class: 'route-fault status-bad' });
  renderRouteFault(el, fault ?? null, { head: 'logbookRouteFault', fixUrl: 'logbookRouteFixUrl' });
  return el;
}

const ENTRY_STATES = {
  received: ['entryReceived', 'badge-muted'],
  retrying: ['entryRetrying', 'badge-warn'],
  sent: ['entrySent', 'badge-ok'],
  failed: ['entryFailed', 'badge-bad'],
};

/** A logbook's latest entries, newest first: table, time, first words, classification, delivery state. */
function renderLogbookEntries(entries) {
  if (entries.length === 0) return h('p', { class: 'empty', text: t('logbookNoEntries') });
  return h('div', null, [
    h('h4', { class: 'logbook-recent-title', text: t('logbookRecent') }),
    h(
      'ul',
      { class: 'logbook-entries' },
      entries.map((e) => {
        const [stateKey, stateCls] = ENTRY_STATES[e.state] ?? ['entryReceived', 'badge-muted'];
        return h(
          'li',
          { 'aria-label': t('entryLabel', e.id, e.table) },
          h(
            'div',
            { class: 'entry-head' },
            h('code', { class: 'entry-table', text: e.table }),
            h('time', { class: 'mono muted', datetime: new Date(e.at).toISOString(), text: clock(e.at) }),
            e.clasificacion
              ? h('span', { class: 'badge badge-class', text: classText(e.clasificacion) })
              : null,
            h('span', { class: `badge ${stateCls}`, text: t(stateKey) }),
          ),
          h('p', { class: `entry-words${e.words ? '' : ' muted'}`, text: e.words ?? t('entryNoText') }),
        );
      }),
    ),
  ]);
}

function accept(model, source) {
  if (!model || typeof model !== 'object') return;
  app.model = model;
  exposed.updates += 1;
  exposed.source = source;
  received(source);
  render(model);
}

function init() {
  for (const b of document.querySelectorAll('.lang button')) {
    b.addEventListener('click', () => setLanguage(b.dataset.lang));
  }
  applyStaticLabels();
  renderLink();
  renderWaiting();
  connect(accept);
}

init();
