// Live status page of pump-monitor. Reads only what GET /api/view and GET /events return.
import { h } from './dom.js';
import { clock } from './format.js';
import { chooseLanguage, language, t } from './i18n.js';
import { connect, received, renderLink } from './live.js';
import { createCard, destroyCard, renderCard, renderErrors } from './pump-card.js';
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
