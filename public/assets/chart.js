// The failure-probability chart of one pump, drawn by uPlot (loaded before the modules as window.uPlot).
import { clock, num, percent } from './format.js';
import { levelsPlugin } from './health.js';
import { t } from './i18n.js';
import { exposed } from './state.js';

const CHART_HEIGHT = 220;
/** Whole-second steps for the chart's time axis (labels are times of day). */
const X_STEPS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400, 43200, 86400];

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
    // The pump's warning and alarm levels (health.js).
    plugins: [levelsPlugin(() => card.levels, card.id)],
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

/** Draws a pump's predictions; the chart is made on first use and redrawn only when its data changed. */
export function renderChart(card, preds) {
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

export function destroyChart(card) {
  card.observer?.disconnect();
  card.chart?.destroy();
  card.chart = null;
}
