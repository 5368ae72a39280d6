import { existsSync, rmSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { resolve } from 'node:path';
import type { FastifyInstance } from 'fastify';
import type pg from 'pg';
import { type Browser, chromium, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildServer } from '../../src/http/server.js';
import { createPool } from '../../src/store/db.js';
import { runSimulator, type SimulatorResult } from '../../src/tools/simulator.js';
import { type Harness, harness } from '../helpers/engine.js';
import { type Wiring, wiringWithShortSilence } from '../helpers/health-wiring.js';

const CHROMIUM = '/usr/bin/chromium';
const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];
const ARTIFACTS = resolve(import.meta.dirname, '../../test-artifacts');
const SCREENSHOT = resolve(ARTIFACTS, 'status-page.png');
// UPDATE_SCREENSHOT=1 refreshes the README's picture in docs/ (the health test's page: a verdict in alarm
// and a silent channel); otherwise it goes with the other artifacts.
const README_SCREENSHOT =
  process.env.UPDATE_SCREENSHOT === '1'
    ? resolve(import.meta.dirname, '../../docs/status-page.png')
    : resolve(ARTIFACTS, 'status-page-health.png');
const SCREENSHOT_EN = resolve(ARTIFACTS, 'status-page-en.png');
const SCREENSHOT_NARROW = resolve(ARTIFACTS, 'status-page-narrow.png');
// The machine running the tests has two loaded cores: wait generously, assert no timing.
const SLOW = 90_000;

/** The status page's basic-auth pair (STATUS_AUTH): the page is tested the way it is deployed. */
const CREDENTIALS = { username: 'operator', password: 'browser-Pa55' };

/** What public/assets/state.js exposes for tests. */
interface PageState {
  points: Record<string, number>;
  updates: number;
  source: string;
  lang: string;
}

let h: Harness | undefined;
let app: FastifyInstance | undefined;
let browser: Browser | undefined;
let simPool: pg.Pool | undefined;
let simulated: Promise<SimulatorResult> | undefined;
const simulation = new AbortController();
let baseUrl = '';

const CHROMIUM_MISSING =
  `Chromium is required for the status page test and was not found at ${CHROMIUM}; ` +
  'install Debian\'s package ("apt-get install -y chromium"). This test fails rather than skips.';

/** Each test fails (never skips) with a clear message when Chromium is not installed. */
function requireChromium(): Browser {
  if (!existsSync(CHROMIUM)) throw new Error(CHROMIUM_MISSING);
  if (!browser) throw new Error('the browser did not start; see the beforeAll error');
  return browser;
}

beforeAll(async () => {
  if (!existsSync(CHROMIUM)) return; // reported by every test through requireChromium()
  h = await harness('page');
  const monitor = await h.startMonitor();
  app = await buildServer(monitor, { auth: { user: CREDENTIALS.username, password: CREDENTIALS.password } });
  await app.listen({ port: 0, host: '127.0.0.1' });
  baseUrl = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`;

  simPool = createPool(h.config.database, 'status-page-simulator', 2);
  simPool.on('error', () => {});
  simulated = runSimulator({
    pool: simPool,
    pumps: h.config.pumps,
    rate: 5,
    // Some readings missing, so groups wait open for their settle time and the grid has rows.
    missingProbability: 0.05,
    signal: simulation.signal,
    onError: () => {},
  });

  browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS, headless: true });
  await mkdir(ARTIFACTS, { recursive: true });
});

afterAll(async () => {
  await browser?.close().catch(() => {});
  simulation.abort();
  await simulated?.catch(() => undefined);
  await simPool?.end().catch(() => {});
  await app?.close().catch(() => {});
  await h?.close();
});

/** The page's own record of what it drew. */
function pageState(page: Page): Promise<PageState> {
  return page.evaluate(() => (globalThis as unknown as { __pumpMonitor: PageState }).__pumpMonitor);
}

describe('status page', () => {
  it('shows both pumps live, draws predictions as they arrive and switches language', async () => {
    const b = requireChromium();
    const context = await b.newContext({
      viewport: { width: 1440, height: 900 },
      deviceScaleFactor: 1,
      httpCredentials: CREDENTIALS,
    });
    const page = await context.newPage();
    const problems: string[] = [];
    page.on('console', (msg) => {
      if (msg.type() === 'error') problems.push(`console: ${msg.text()}`);
    });
    page.on('pageerror', (err) => problems.push(`pageerror: ${err.message}`));
    const external: string[] = [];
    page.on('request', (req) => {
      if (!req.url().startsWith(baseUrl) && !req.url().startsWith('data:')) external.push(req.url());
    });

    // The page works under its Content-Security-Policy: a blocked script, style or stream would be a
    // console error ("Refused to load …") and a securitypolicyviolation event.
    await page.addInitScript(() => {
      const doc = (globalThis as unknown as { document: EventTarget }).document;
      doc.addEventListener('securitypolicyviolation', (e) => {
        const v = e as unknown as { violatedDirective: string; blockedURI: string };
        console.error(`csp violation: ${v.violatedDirective} ${v.blockedURI}`);
      });
    });
    const res = await page.goto(`${baseUrl}/`, { waitUntil: 'load', timeout: SLOW });
    expect(res?.status()).toBe(200);
    expect((await res?.allHeaders())?.['content-security-policy']).toContain("script-src 'self'");
    expect(await page.evaluate(() => typeof (globalThis as unknown as { uPlot?: unknown }).uPlot)).toBe(
      'function',
    );

    // Both pumps, in the default language (Spanish).
    const cards = page.locator('article.pump');
    await expect.poll(() => cards.count(), { timeout: SLOW }).toBe(2);
    await page.getByRole('heading', { name: 'Bomba A' }).waitFor({ timeout: SLOW });
    await page.getByRole('heading', { name: 'Bomba B' }).waitFor({ timeout: SLOW });
    expect(await page.locator('html').getAttribute('lang')).toBe('es');
    await expect
      .poll(() => page.locator('article.pump h3', { hasText: 'Probabilidad de falla' }).count(), {
        timeout: SLOW,
      })
      .toBe(2);

    // The chart gains points while the simulator runs.
    await page.waitForFunction(
      () => {
        const s = (globalThis as unknown as { __pumpMonitor?: PageState }).__pumpMonitor;
        return (s?.points.A ?? 0) > 0 && (s?.points.B ?? 0) > 0;
      },
      undefined,
      { timeout: SLOW },
    );
    const first = await pageState(page);
    await page.waitForFunction(
      (before) => {
        const s = (globalThis as unknown as { __pumpMonitor?: PageState }).__pumpMonitor;
        return (s?.points.A ?? 0) > (before.A ?? 0) && (s?.points.B ?? 0) > (before.B ?? 0);
      },
      first.points,
      { timeout: SLOW },
    );
    const later = await pageState(page);
    expect(later.source).toBe('sse');
    expect(later.updates).toBeGreaterThan(first.updates);
    expect(await page.locator('article.pump .uplot canvas').count()).toBe(2);
    expect(await page.locator('article.pump table.channels tbody tr').count()).toBe(
      h?.config.pumps.reduce((n, p) => n + p.sensors.length, 0),
    );

    // A malformed notification shows up in pump A's error list, in the page's language.
    await h?.admin.query(`SELECT pg_notify($1, 'this is not json')`, [h.pumps.A.sensors[0]?.channel]);
    await page
      .locator('article.pump[data-pump="A"] .errors li', { hasText: 'Notificación inválida' })
      .first()
      .waitFor({ timeout: SLOW });

    // Open timestamps appear in the completeness grid, one cell per sensor.
    await page.locator('article.pump table.grid tbody tr').first().waitFor({ timeout: SLOW });

    await page.screenshot({ path: SCREENSHOT, fullPage: true });

    // Narrow screens stack the pumps; wide tables scroll inside their box, never the page.
    await page.setViewportSize({ width: 400, height: 860 });
    await expect
      .poll(
        () =>
          page.evaluate(() => {
            const d = (
              globalThis as unknown as {
                document: { documentElement: { scrollWidth: number; clientWidth: number } };
              }
            ).document.documentElement;
            return d.scrollWidth <= d.clientWidth;
          }),
        { timeout: SLOW },
      )
      .toBe(true);
    await page.screenshot({ path: SCREENSHOT_NARROW });
    await page.setViewportSize({ width: 1440, height: 900 });

    // The language toggle switches the labels and is remembered.
    await page.getByRole('button', { name: 'EN', exact: true }).click();
    await expect
      .poll(() => page.locator('article.pump h3', { hasText: 'Failure probability' }).count(), {
        timeout: SLOW,
      })
      .toBe(2);
    expect(await page.locator('article.pump h3', { hasText: 'Probabilidad de falla' }).count()).toBe(0);
    expect(await page.locator('html').getAttribute('lang')).toBe('en');
    expect((await pageState(page)).lang).toBe('en');
    await page.reload({ waitUntil: 'load', timeout: SLOW });
    await page
      .locator('article.pump h3', { hasText: 'Failure probability' })
      .first()
      .waitFor({ timeout: SLOW });
    await page.waitForFunction(
      () => ((globalThis as unknown as { __pumpMonitor?: PageState }).__pumpMonitor?.points.A ?? 0) > 0,
      undefined,
      { timeout: SLOW },
    );
    await page.evaluate(() =>
      (globalThis as unknown as { scrollTo(x: number, y: number): void }).scrollTo(0, 0),
    );
    await page.screenshot({ path: SCREENSHOT_EN, fullPage: true });
    await page.getByRole('button', { name: 'ES', exact: true }).click();
    await page
      .locator('article.pump h3', { hasText: 'Probabilidad de falla' })
      .first()
      .waitFor({ timeout: SLOW });

    await context.close();
    expect(problems).toEqual([]);
    expect(external).toEqual([]);
  }, 240_000);

  it("names a refused route on the pump's card, with its status and target, and clears it when it answers again", async () => {
    const b = requireChromium();
    const context = await b.newContext({ httpCredentials: CREDENTIALS });
    const page = await context.newPage();
    const target = 'https://prediction.example.net/sensores_b';
    const backend = (h as Harness).backend;
    backend.behaviour = (r) =>
      r.path.startsWith('/sensores_b/') ? { status: 308, headers: { location: target } } : undefined;
    try {
      await page.goto(`${baseUrl}/`, { waitUntil: 'load', timeout: SLOW });
      const fault = (pump: string) => page.locator(`article.pump[data-pump="${pump}"] .route-fault`);
      await fault('B').waitFor({ state: 'visible', timeout: SLOW });
      const text = (await fault('B').textContent()) ?? '';
      expect(text).toContain('308');
      expect(text).toContain(target);
      expect(text).toContain('BASE_URL');
      expect(await fault('A').isVisible()).toBe(false);
    } finally {
      backend.behaviour = () => undefined;
    }
    await page
      .locator('article.pump[data-pump="B"] .route-fault')
      .waitFor({ state: 'hidden', timeout: SLOW });
    await context.close();
  }, 120_000);

  it('asks for credentials: without them the page and its modules answer 401 with a Basic challenge', async () => {
    const context = await requireChromium().newContext({ viewport: { width: 800, height: 600 } });
    const page = await context.newPage();
    // Headless Chromium has nobody to ask for a password: the challenge ends the navigation.
    await expect(page.goto(`${baseUrl}/`, { waitUntil: 'load', timeout: SLOW })).rejects.toThrow(
      /ERR_INVALID_AUTH_CREDENTIALS/,
    );
    for (const path of ['/', '/assets/main.js', '/assets/app.css', '/events', '/api/view']) {
      const r = await context.request.get(`${baseUrl}${path}`);
      expect(r.status(), path).toBe(401);
      expect(r.headers()['www-authenticate'], path).toMatch(/^Basic realm="pump-monitor"/);
    }
    await context.close();
  }, 120_000);

  it('falls back to polling /api/view when the event stream fails', async () => {
    const context = await requireChromium().newContext({
      viewport: { width: 1280, height: 800 },
      httpCredentials: CREDENTIALS,
    });
    const page = await context.newPage();
    const pageErrors: string[] = [];
    page.on('pageerror', (err) => pageErrors.push(err.message));
    // The blocked stream itself is reported on the console; only script errors count here.
    await page.route('**/events', (route) => route.abort());
    await page.goto(`${baseUrl}/`, { waitUntil: 'load', timeout: SLOW });
    await page.waitForFunction(
      () => {
        const s = (globalThis as unknown as { __pumpMonitor?: PageState }).__pumpMonitor;
        return s?.source === 'poll' && s.updates >= 2 && (s.points.A ?? 0) > 0;
      },
      undefined,
      { timeout: SLOW },
    );
    await page.getByRole('heading', { name: 'Bomba B' }).waitFor({ timeout: SLOW });
    await context.close();
    expect(pageErrors).toEqual([]);
  }, 180_000);
});

/**
 * Pump health on the page (issue 23), on both wirings: the card leads with the verdict, coloured, with since
 * when, as the backend's answers climb through warning into alarm; the channel whose table stops
 * (simulate's silent-sensor scenario) is marked silent, on both pumps when its table is shared.
 */
for (const wiring of ['default', 'plant-2026-03'] as Wiring[]) {
  describe(`status page: pump health (${wiring})`, () => {
    let hh: Harness | undefined;
    let server: FastifyInstance | undefined;
    let pool: pg.Pool | undefined;
    let run: Promise<SimulatorResult> | undefined;
    const stop = new AbortController();
    let url = '';
    let table = '';
    let dir = '';

    beforeAll(async () => {
      if (!existsSync(CHROMIUM)) return;
      ({ dir, table } = wiringWithShortSilence(wiring, 3));
      hh = await harness(`page_health_${wiring.replace(/-/g, '_')}`, { PUMPS_DIR: dir, PUMPS: 'A,B' });
      hh.backend.prediction = 30;
      const monitor = await hh.startMonitor();
      server = await buildServer(monitor, {
        auth: { user: CREDENTIALS.username, password: CREDENTIALS.password },
      });
      await server.listen({ port: 0, host: '127.0.0.1' });
      url = `http://127.0.0.1:${(server.server.address() as AddressInfo).port}`;
      pool = createPool(hh.config.database, 'status-page-health-simulator', 2);
      pool.on('error', () => {});
      run = runSimulator({
        pool,
        pumps: hh.config.pumps,
        rate: 4,
        scenario: 'silent-sensor',
        silentAfterSeconds: 6,
        signal: stop.signal,
        onError: () => {},
      });
    });

    afterAll(async () => {
      stop.abort();
      await run?.catch(() => undefined);
      await pool?.end().catch(() => {});
      await server?.close().catch(() => {});
      await hh?.close();
      if (dir) rmSync(dir, { recursive: true, force: true });
    });

    it('leads each card with the verdict and its time, draws the levels, and marks the silent channel', async () => {
      const b = requireChromium();
      const harnessed = hh as Harness;
      const context = await b.newContext({
        viewport: { width: 1440, height: 900 },
        deviceScaleFactor: 1,
        httpCredentials: CREDENTIALS,
      });
      const page = await context.newPage();
      const problems: string[] = [];
      page.on('pageerror', (err) => problems.push(`pageerror: ${err.message}`));
      await page.goto(`${url}/`, { waitUntil: 'load', timeout: SLOW });
      const verdict = (pump: string) => page.locator(`article.pump[data-pump="${pump}"] .verdict`);
      // The verdict is the card's first element.
      expect(
        await page.locator('article.pump[data-pump="A"] > :first-child').evaluate((e) => e.className),
      ).toContain('verdict');
      await expect.poll(() => verdict('A').getAttribute('data-state'), { timeout: SLOW }).toBe('normal');
      expect(await verdict('A').locator('.verdict-state').textContent()).toBe('Normal');
      // The chart draws the two levels.
      await page.waitForFunction(
        () => {
          const s = (globalThis as unknown as { __pumpMonitor?: { levels?: Record<string, number[]> } })
            .__pumpMonitor;
          return s?.levels?.A?.join() === '50,80' && s?.levels?.B?.join() === '50,80';
        },
        undefined,
        { timeout: SLOW },
      );

      // The backend's answers climb: warning, then alarm, each after its on-delay.
      harnessed.backend.prediction = 65;
      await expect.poll(() => verdict('A').getAttribute('data-state'), { timeout: SLOW }).toBe('warning');
      expect(await verdict('A').locator('.verdict-state').textContent()).toBe('Advertencia');
      // Pump B's answers go back down: its verdict leaves warning after its off-delay.
      harnessed.backend.prediction = (path) => (path.startsWith('/sensores_b/') ? 22 : 93);
      await expect.poll(() => verdict('A').getAttribute('data-state'), { timeout: SLOW }).toBe('alarm');
      await expect.poll(() => verdict('B').getAttribute('data-state'), { timeout: SLOW }).toBe('normal');
      expect(await verdict('A').locator('.verdict-state').textContent()).toBe('Alarma');
      expect(await verdict('A').locator('.verdict-since').textContent()).toMatch(
        /^desde \d{1,2}:\d{2}:\d{2}/,
      );
      const colour = await verdict('A').evaluate(
        (e) =>
          (
            globalThis as unknown as { getComputedStyle(x: unknown): { backgroundColor: string } }
          ).getComputedStyle(e).backgroundColor,
      );
      expect(colour).toBe('rgb(185, 28, 28)');

      // The silent table's channel is marked on every pump that reads it (both, for a shared table).
      const readers = harnessed.config.pumps.filter((p) => p.sensors.some((s) => s.table === table));
      expect(readers.length).toBe(wiring === 'default' ? 1 : 2);
      for (const p of readers) {
        const channel = p.sensors.find((s) => s.table === table)?.channel as string;
        const mark = page.locator(
          `article.pump[data-pump="${p.id}"] tr[data-channel="${channel}"] .channel-mark-silent`,
        );
        await mark.waitFor({ timeout: SLOW });
        expect(await mark.textContent()).toMatch(/^silencioso · desde /);
        expect(await page.locator(`article.pump[data-pump="${p.id}"] tr.row-silent`).count()).toBe(1);
      }
      // And in the metric the alert is written on.
      const metrics = await context.request.get(`${url}/metrics`);
      const text = await metrics.text();
      for (const p of readers) {
        const channel = p.sensors.find((s) => s.table === table)?.channel as string;
        expect(text).toContain(`pump_monitor_channel_silent{pump="${p.id}",channel="${channel}"} 1`);
      }
      await page.waitForSelector('article.pump[data-pump="A"] .health-history li', { timeout: SLOW });
      if (wiring === 'default') {
        await page.evaluate(() =>
          (globalThis as unknown as { scrollTo(x: number, y: number): void }).scrollTo(0, 0),
        );
        await page.screenshot({ path: README_SCREENSHOT, fullPage: true });
      }

      // In English too.
      await page.getByRole('button', { name: 'EN', exact: true }).click();
      await expect
        .poll(() => verdict('A').locator('.verdict-state').textContent(), { timeout: SLOW })
        .toBe('Alarm');
      expect(await verdict('A').locator('.verdict-since').textContent()).toMatch(/^since /);
      const first = readers[0];
      const ch = first?.sensors.find((s) => s.table === table)?.channel as string;
      expect(
        await page
          .locator(`article.pump[data-pump="${first?.id}"] tr[data-channel="${ch}"] .channel-mark-silent`)
          .textContent(),
      ).toMatch(/^silent · since /);
      await page.getByRole('button', { name: 'ES', exact: true }).click();
      await context.close();
      expect(problems).toEqual([]);
    }, 240_000);
  });
}
