// The page's data: Server-Sent Events from /events, polling /api/view when they fail, and the link pill.
import { t } from './i18n.js';

const POLL_MS = 2_000;
const STALE_MS = 6_000;
const SSE_RETRY_POLLS = 15;

const live = {
  link: 'connecting',
  lastUpdate: 0,
  stream: null,
  pollTimer: null,
  polls: 0,
  /** Called with (model, 'sse' | 'poll') for every model received. */
  onModel: () => {},
};

/** A model arrived: the link is live (or polling) and fresh again. */
export function received(source) {
  live.lastUpdate = Date.now();
  setLink(source === 'sse' ? 'live' : 'polling');
}

function setLink(link) {
  if (live.link === link) return;
  live.link = link;
  renderLink();
}

/** Draws the link pill in the current language. */
export function renderLink() {
  const meta = {
    live: ['linkLive', 'pill-ok'],
    polling: ['linkPolling', 'pill-warn'],
    connecting: ['linkConnecting', 'pill-muted'],
    stale: ['linkStale', 'pill-warn'],
    down: ['linkDown', 'pill-bad'],
  }[live.link];
  const pill = document.getElementById('link');
  pill.className = `pill ${meta[1]}`;
  document.getElementById('link-text').textContent = t(meta[0]);
}

function openStream() {
  if (typeof window.EventSource !== 'function') {
    startPolling();
    return;
  }
  const es = new EventSource('/events');
  live.stream = es;
  es.onmessage = (ev) => {
    let model;
    try {
      model = JSON.parse(ev.data);
    } catch {
      return;
    }
    stopPolling();
    live.onModel(model, 'sse');
  };
  es.onerror = () => {
    es.close();
    if (live.stream === es) live.stream = null;
    startPolling();
  };
}

function startPolling() {
  if (live.pollTimer !== null) return;
  setLink('polling');
  live.polls = 0;
  const poll = async () => {
    try {
      const res = await fetch('/api/view', { cache: 'no-store', headers: { accept: 'application/json' } });
      if (!res.ok) throw new Error(`HTTP ${res.status}`);
      live.onModel(await res.json(), 'poll');
    } catch {
      setLink('down');
    }
    live.polls += 1;
    // Every so often, try the live stream again; its first message stops the polling.
    if (live.polls % SSE_RETRY_POLLS === 0 && live.stream === null) openStream();
  };
  live.pollTimer = window.setInterval(poll, POLL_MS);
  void poll();
}

function stopPolling() {
  if (live.pollTimer === null) return;
  window.clearInterval(live.pollTimer);
  live.pollTimer = null;
}

function watchStaleness() {
  window.setInterval(() => {
    if (live.lastUpdate === 0 || live.link === 'down') return;
    if (Date.now() - live.lastUpdate > STALE_MS) setLink('stale');
  }, 1_000);
}

/** Starts receiving models: `onModel(model, source)` is called for each one. */
export function connect(onModel) {
  live.onModel = onModel;
  watchStaleness();
  openStream();
}
