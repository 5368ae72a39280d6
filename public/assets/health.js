// Pump health on the page: each card's verdict with since when, the chart's two levels, the
// channel marks (silent, flat) and the last transitions. Reads `summary.health` of /api/view and /events.
// Its labels live here, in both languages, so this block stays apart from the page's other parts.
import { h } from './dom.js';
import { ago, clock, num, percent } from './format.js';
import { language, locale } from './i18n.js';
import { exposed } from './state.js';

const WORDS = {
  es: {
    normal: 'Normal',
    warning: 'Advertencia',
    alarm: 'Alarma',
    unknown: 'Sin veredicto',
    since: 'desde {0}',
    sinceDay: 'desde el {0} a las {1}',
    value: 'última probabilidad {0}',
    noValue: 'sin predicción reciente',
    levels: 'niveles: advertencia {0}, alarma {1}',
    standby: 'otra réplica juzga esta bomba',
    silent: 'silencioso',
    flat: 'plano',
    silentTitle: 'Sin lecturas desde {0}: {1}',
    flatTitle: 'El mismo valor en {0} lecturas seguidas',
    history: 'Cambios recientes',
    pumpSubject: 'bomba',
    warningLine: 'advertencia',
    alarmLine: 'alarma',
    never: 'nunca',
  },
  en: {
    normal: 'Normal',
    warning: 'Warning',
    alarm: 'Alarm',
    unknown: 'No verdict',
    since: 'since {0}',
    sinceDay: 'since {0} at {1}',
    value: 'last probability {0}',
    noValue: 'no recent prediction',
    levels: 'levels: warning {0}, alarm {1}',
    standby: 'another replica judges this pump',
    silent: 'silent',
    flat: 'flat',
    silentTitle: 'No reading since {0}: {1}',
    flatTitle: 'The same value for {0} readings in a row',
    history: 'Recent changes',
    pumpSubject: 'pump',
    warningLine: 'warning',
    alarmLine: 'alarm',
    never: 'never',
  },
};

const STATES = ['normal', 'warning', 'alarm', 'unknown'];

function hw(key, ...args) {
  const text = WORDS[language()]?.[key] ?? WORDS.es[key] ?? key;
  return text.replace(/\{(\d)\}/g, (_m, i) => String(args[Number(i)] ?? ''));
}

function stateOf(health) {
  return STATES.includes(health?.state) ? health.state : 'unknown';
}

/** "since 04:12:33", with the day when it is not today's. */
function since(iso, now) {
  const at = Date.parse(iso);
  if (!Number.isFinite(at)) return '';
  const sameDay = new Date(at).toDateString() === new Date(now).toDateString();
  return sameDay
    ? hw('since', clock(at))
    : hw(
        'sinceDay',
        new Date(at).toLocaleDateString(locale(), { day: 'numeric', month: 'short' }),
        clock(at),
      );
}

/** The verdict's banner, the first thing in a pump's card; renderVerdict() fills it. */
export function createVerdict() {
  return h('div', { class: 'verdict verdict-unknown', 'data-state': 'unknown', role: 'status' });
}

/** Fills the banner: the state, coloured, since when, the last probability and the levels. */
export function renderVerdict(el, health, now) {
  const state = stateOf(health);
  el.className = `verdict verdict-${state}`;
  el.dataset.state = state;
  if (!health) {
    el.replaceChildren(h('strong', { class: 'verdict-state', text: hw('unknown') }));
    return;
  }
  const value = typeof health.value === 'number' ? hw('value', percent(health.value)) : hw('noValue');
  const levels = health.levels
    ? hw('levels', percent(health.levels.warning), percent(health.levels.alarm))
    : '';
  el.replaceChildren(
    h('strong', { class: 'verdict-state', text: hw(state) }),
    h('span', { class: 'verdict-since', title: health.since, text: since(health.since, now) }),
    h('span', { class: 'verdict-detail', text: health.judged === false ? hw('standby') : value }),
    h('span', { class: 'verdict-levels', text: levels }),
  );
  exposed.verdicts = { ...(exposed.verdicts ?? {}), [el.closest('[data-pump]')?.dataset.pump ?? '?']: state };
}

/** The channel's mark for the channel table: silent or flat, with since when; null when it is fine. */
export function channelMark(health, channel, now) {
  const c = health?.channels?.[channel];
  if (!c || (c.state !== 'silent' && c.state !== 'flat')) return null;
  const last = c.last_reading_at ? Date.parse(c.last_reading_at) : Number.NaN;
  const title =
    c.state === 'silent'
      ? hw('silentTitle', Number.isFinite(last) ? clock(last) : hw('never'), since(c.since, now))
      : hw('flatTitle', c.flat_after ?? '?');
  return h('span', {
    class: `badge channel-mark channel-mark-${c.state}`,
    'data-channel-state': c.state,
    title,
    text: `${hw(c.state)} · ${since(c.since, now)}`,
  });
}

/** The row class of a channel in the table ('' when fine). */
export function channelRowClass(health, channel) {
  const s = health?.channels?.[channel]?.state;
  return s === 'silent' ? 'row-silent' : s === 'flat' ? 'row-flat' : '';
}

/** The last transitions of the pump and its channels, newest first (a few). */
export function renderHealthHistory(el, health, now, max = 5) {
  const list = Array.isArray(health?.transitions) ? health.transitions.slice(0, max) : [];
  el.hidden = list.length === 0;
  if (list.length === 0) {
    el.replaceChildren();
    return;
  }
  el.replaceChildren(
    h('span', { class: 'health-history-title', text: hw('history') }),
    h(
      'ul',
      null,
      list.map((t) => {
        const at = Date.parse(t.at);
        const who = t.subject === 'pump' ? hw('pumpSubject') : t.subject;
        const word = (s) => (WORDS.es[s] ? hw(s) : s);
        const value =
          typeof t.value === 'number'
            ? ` (${t.subject === 'pump' ? percent(t.value) : num(t.value, 2)})`
            : '';
        return h(
          'li',
          null,
          h('time', { class: 'mono', datetime: t.at, title: ago(now - at), text: clock(at) }),
          ` ${who}: ${word(t.from)} → ${word(t.to)}${value}`,
        );
      }),
    ),
  );
}

/**
 * A uPlot plugin drawing the pump's warning and alarm levels across the chart, dashed, in their colours;
 * `levels()` gives { warning, alarm } (percent) or nothing.
 */
export function levelsPlugin(levels, pumpId) {
  return {
    hooks: {
      draw: [
        (u) => {
          const l = levels();
          if (!l) return;
          const { ctx, bbox } = u;
          const lines = [
            [l.warning, '#b45309', hw('warningLine')],
            [l.alarm, '#b91c1c', hw('alarmLine')],
          ];
          ctx.save();
          ctx.setLineDash([6, 4]);
          ctx.lineWidth = 1.5 * (window.devicePixelRatio || 1);
          ctx.font = `${11 * (window.devicePixelRatio || 1)}px system-ui, sans-serif`;
          for (const [value, colour, label] of lines) {
            if (typeof value !== 'number') continue;
            const y = Math.round(u.valToPos(value, 'y', true));
            ctx.strokeStyle = colour;
            ctx.fillStyle = colour;
            ctx.beginPath();
            ctx.moveTo(bbox.left, y);
            ctx.lineTo(bbox.left + bbox.width, y);
            ctx.stroke();
            ctx.textAlign = 'right';
            ctx.fillText(`${label} ${value} %`, bbox.left + bbox.width - 4, y - 4);
          }
          ctx.restore();
          exposed.levels = { ...(exposed.levels ?? {}), [pumpId]: [l.warning, l.alarm] };
        },
      ],
    },
  };
}
