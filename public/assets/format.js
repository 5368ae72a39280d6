// How numbers, durations and times are written on the page, in the current language.
import { locale, t } from './i18n.js';

export function num(v, digits = 0) {
  if (typeof v !== 'number' || !Number.isFinite(v)) return '—';
  return new Intl.NumberFormat(locale(), {
    maximumFractionDigits: digits,
    minimumFractionDigits: 0,
  }).format(v);
}

export function percent(v) {
  if (typeof v !== 'number' || !Number.isFinite(v)) return '—';
  return `${new Intl.NumberFormat(locale(), { minimumFractionDigits: 1, maximumFractionDigits: 1 }).format(v)} %`;
}

export function duration(seconds) {
  if (typeof seconds !== 'number' || !Number.isFinite(seconds)) return '—';
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${s % 60} s`;
  const h = Math.floor(m / 60);
  if (h < 24) return `${h} h ${m % 60} min`;
  return `${Math.floor(h / 24)} d ${h % 24} h`;
}

export function ago(ms) {
  if (typeof ms !== 'number' || !Number.isFinite(ms)) return t('never');
  return t('ago', duration(ms / 1000));
}

export function clock(ms) {
  if (typeof ms !== 'number' || !Number.isFinite(ms)) return '—';
  return new Date(ms).toLocaleTimeString(locale(), { hour12: false });
}

/** The time of day of a `tiempo_sensor` text, the whole text when it has none. */
export function shortTiempo(tiempo) {
  const m = /(\d{2}:\d{2}:\d{2}(?:\.\d+)?)/.exec(String(tiempo));
  return m ? m[1] : String(tiempo);
}

export function riskClass(p) {
  if (typeof p !== 'number' || !Number.isFinite(p)) return 'risk-none';
  if (p >= 70) return 'risk-high';
  if (p >= 30) return 'risk-medium';
  return 'risk-low';
}
