// For tests and debugging: what the page has drawn so far, as window.__pumpMonitor.
import { language } from './i18n.js';

export const exposed = { points: {}, updates: 0, source: 'connecting', lang: language() };
window.__pumpMonitor = exposed;
