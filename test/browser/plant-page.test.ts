import { existsSync } from 'node:fs';
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
import { LOGBOOK_PATH } from '../helpers/spec-oracle.js';

/**
 * The status page on both wirings (issue 22): completeness counts the vector's fields only, shared
 * sensors are marked and posted-only ones listed apart, a dropped vector names the field it lacked, the
 * logbook card lists its latest entries, both languages say everything in their own words, and nothing
 * is clipped from a phone to 1920 px.
 */

const CHROMIUM = '/usr/bin/chromium';
const CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run'];
const ARTIFACTS = resolve(import.meta.dirname, '../../test-artifacts');
// UPDATE_SCREENSHOT=1 refreshes the pictures in docs/; otherwise they go with the other artifacts.
const SHOTS = process.env.UPDATE_SCREENSHOT === '1' ? resolve(import.meta.dirname, '../../docs') : ARTIFACTS;
const SLOW = 90_000;
const PHONE = { width: 390, height: 844 };

const wirings = [
  { name: 'plant-2026-03', env: { PUMPS_PROFILE: 'plant-2026-03' }, shot: 'plant' },
  { name: 'the default wiring', env: {}, shot: 'default' },
] as const;

/** The parts of an element the overflow check reads. */
interface Box {
  offsetParent: unknown;
  offsetWidth: number;
  scrollWidth: number;
  clientWidth: number;
  className: string;
  closest(s: string): { getAttribute(a: string): string | null } | null;
  querySelector(s: string): { className: string } | null;
  querySelectorAll(s: string): ArrayLike<unknown>;
}

/** What overflows sideways: the page itself, or a box whose content is wider than the box. */
function overflows(page: Page): Promise<string[]> {
  return page.evaluate(() => {
    const doc = (
      globalThis as unknown as {
        document: { documentElement: Box; querySelectorAll(s: string): ArrayLike<unknown> };
      }
    ).document;
    const out: string[] = [];
    const root = doc.documentElement;
    if (root.scrollWidth > root.clientWidth) out.push(`page ${root.scrollWidth} > ${root.clientWidth}`);
    for (const el of Array.from(doc.querySelectorAll('.table-wrap, .card, .block'))) {
      const e = el as unknown as Box;
      if (e.offsetParent === null) continue; // hidden
      if (e.scrollWidth > e.clientWidth + 1) {
        const where = e.closest('[data-pump]')?.getAttribute('data-pump') ?? '';
        const table = e.querySelector('table')?.className ?? e.className;
        const cols = Array.from(e.querySelectorAll('thead th')).map((th) =>
          Math.round((th as unknown as Box).offsetWidth),
        );
        out.push(`${where} ${table}: ${e.scrollWidth} > ${e.clientWidth} [${cols.join(' ')}]`);
      }
    }
    return out;
  });
}

for (const w of wirings) {
  describe(`status page on ${w.name}`, () => {
    let h: Harness | undefined;
    let app: FastifyInstance | undefined;
    let browser: Browser | undefined;
    let simPool: pg.Pool | undefined;
    let simulated: Promise<SimulatorResult> | undefined;
    const simulation = new AbortController();
    let baseUrl = '';

    beforeAll(async () => {
      if (!existsSync(CHROMIUM)) return;
      h = await harness('pagewiring', { ...w.env });
      const monitor = await h.startMonitor();
      app = await buildServer(monitor, {});
      await app.listen({ port: 0, host: '127.0.0.1' });
      baseUrl = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`;
      simPool = createPool(h.config.database, 'page-wiring-simulator', 2);
      simPool.on('error', () => {});
      simulated = runSimulator({
        pool: simPool,
        pumps: h.config.pumps,
        rate: 4,
        // Gaps, so groups stay open and some are dropped (GROUP_EXPIRY_MS is short in tests).
        missingProbability: 0.08,
        logbooks: h.config.logbooks,
        logbookEverySeconds: 1,
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

    // Only plant-2026-03 has a logbook stream.
    if (w.shot === 'plant') {
      it("names a refused classifier route on the logbook's card, and clears it when it answers again", async () => {
        if (!existsSync(CHROMIUM))
          throw new Error(`Chromium is required at ${CHROMIUM} (apt-get install chromium)`);
        const context = await (browser as Browser).newContext({ viewport: { width: 1400, height: 900 } });
        const page = await context.newPage();
        const backend = (h as Harness).backend;
        backend.behaviour = (r) => (r.path === LOGBOOK_PATH ? { status: 401 } : undefined);
        const fault = page.locator('#logbooks .route-fault');
        try {
          await page.goto(`${baseUrl}/`, { waitUntil: 'load', timeout: SLOW });
          await fault.waitFor({ state: 'visible', timeout: SLOW });
          const text = (await fault.textContent()) ?? '';
          expect(text).toContain('401');
          expect(text).toContain('API_KEY');
          // A pump's card says nothing of it: the pumps' routes answer.
          expect(await page.locator('article.pump .route-fault').filter({ visible: true }).count()).toBe(0);
        } finally {
          backend.behaviour = () => undefined;
        }
        await fault.waitFor({ state: 'hidden', timeout: SLOW });
        await context.close();
      }, 120_000);
    }

    it('fits the wiring, in both languages, from a phone to 1920 px', async () => {
      if (!existsSync(CHROMIUM))
        throw new Error(`Chromium is required at ${CHROMIUM} (apt-get install chromium)`);
      const config = (h as Harness).config;
      const context = await (browser as Browser).newContext({
        viewport: { width: 1400, height: 900 },
        deviceScaleFactor: 1,
      });
      const page = await context.newPage();
      const problems: string[] = [];
      page.on('pageerror', (err) => problems.push(err.message));
      page.on('console', (msg) => {
        if (msg.type() === 'error') problems.push(msg.text());
      });
      await page.addInitScript(() =>
        (
          globalThis as unknown as { localStorage: { setItem(k: string, v: string): void } }
        ).localStorage.setItem('pump-monitor.lang', 'es'),
      );
      await page.goto(`${baseUrl}/`, { waitUntil: 'load', timeout: SLOW });
      await expect.poll(() => page.locator('article.pump').count(), { timeout: SLOW }).toBe(2);

      for (const p of config.pumps) {
        const card = page.locator(`article.pump[data-pump="${p.id}"]`);
        const vectorFields = [...new Set(p.sensors.filter((s) => s.inVector).map((s) => s.field))];
        const postedOnly = p.sensors.filter((s) => !s.inVector);
        // The channel table lists the vector's sensors; the posted-only ones are listed apart.
        await expect
          .poll(() => card.locator('.block-channels table.channels tbody tr').count(), { timeout: SLOW })
          .toBe(p.sensors.length - postedOnly.length);
        expect(await card.locator('.block-postedOnly').isVisible()).toBe(postedOnly.length > 0);
        if (postedOnly.length > 0) {
          expect(await card.locator('.block-postedOnly table.channels tbody tr').count()).toBe(
            postedOnly.length,
          );
        }
        // Shared tables are marked, naming the other pump.
        const other = config.pumps.find((o) => o.id !== p.id);
        const shared = p.sensors.filter((s) => other?.sensors.some((x) => x.table === s.table));
        expect(await card.locator('.badge-shared').count()).toBe(shared.length);
        if (shared.length > 0) {
          expect(await card.locator('.badge-shared').first().textContent()).toBe(
            `compartida con ${other?.id}`,
          );
        }
        // Completeness has one column per vector field, and a row with all of them is never red.
        await card.locator('table.grid tbody tr').first().waitFor({ timeout: SLOW });
        expect(await card.locator('table.grid thead th.cell-head').count()).toBe(vectorFields.length);
        const counts = await card
          .locator('table.grid tbody tr td.num')
          .evaluateAll((tds) => tds.map((td) => [td.textContent ?? '', td.className]));
        for (const [text, cls] of counts) {
          const [n, total] = String(text).split('/').map(Number);
          expect(total).toBe(vectorFields.length);
          if (n === total) expect(cls).toContain('status-ok');
        }
      }

      // A dropped vector names the field it lacked, in the recent vectors and under the counters.
      const dropped = page.locator('article.pump table.sent tr.row-dropped').first();
      await dropped.waitFor({ timeout: SLOW });
      expect(await dropped.textContent()).toMatch(/descartado · faltaba \w+/);
      expect(await page.locator('article.pump .drop-why:visible').first().textContent()).toMatch(
        /^Descartados recientes, por campo que faltaba: \w+ ×\d+/,
      );

      // The logbook card lists its latest entries: table, time, first words, classification, state.
      if (config.logbooks.length > 0) {
        const entry = page.locator('#logbooks .logbook-entries li', { hasText: 'enviada' }).first();
        await entry.waitFor({ timeout: SLOW });
        const text = (await entry.textContent()) ?? '';
        expect(text).toMatch(/gm_bitacoras_[ab]/);
        expect(await entry.locator('.badge-class').textContent()).toBe('Rutina');
        expect((await entry.locator('.entry-words').textContent())?.length).toBeGreaterThan(5);
        const pad = await page
          .locator('#logbook-list')
          .evaluate(
            (el) =>
              (
                globalThis as unknown as { getComputedStyle(e: unknown): { paddingLeft: string } }
              ).getComputedStyle(el).paddingLeft,
          );
        expect(pad).toBe('18px');
      } else {
        expect(await page.locator('#logbooks').isVisible()).toBe(false);
      }

      // An error says itself in Spanish on the Spanish page.
      await h?.admin.query(`SELECT pg_notify($1, 'this is not json')`, [
        config.pumps[0]?.sensors[0]?.channel,
      ]);
      await page
        .locator('article.pump .errors li', { hasText: 'Notificación inválida en' })
        .first()
        .waitFor({ timeout: SLOW });
      expect(
        await page.locator('article.pump .errors li', { hasText: 'el mensaje no es JSON' }).count(),
      ).toBe(1);

      // Nothing clipped, nothing scrolls sideways, at three desktop widths and on a phone.
      for (const width of [1280, 1400, 1920]) {
        await page.setViewportSize({ width, height: 900 });
        await expect.poll(() => overflows(page), { timeout: 10_000 }).toEqual([]);
      }
      await page.setViewportSize({ width: 1400, height: 900 });
      // The charts follow the width through a ResizeObserver: wait for the page to fit again.
      await expect.poll(() => overflows(page), { timeout: 10_000 }).toEqual([]);
      await page.screenshot({ path: resolve(SHOTS, `status-page-${w.shot}-1400.png`), fullPage: true });
      await page.setViewportSize(PHONE);
      await expect.poll(() => overflows(page), { timeout: 10_000 }).toEqual([]);
      // The first screens of the phone page: the pump's head, counters, drops and channels.
      await page.screenshot({
        path: resolve(SHOTS, `status-page-${w.shot}-phone.png`),
        fullPage: true,
        clip: { x: 0, y: 0, width: PHONE.width, height: 2400 },
      });
      await page.setViewportSize({ width: 1400, height: 900 });

      // English: the sensors' descriptions, the classifications and the errors too.
      await page.getByRole('button', { name: 'EN', exact: true }).click();
      await page
        .locator('article.pump h3', { hasText: 'Failure probability' })
        .first()
        .waitFor({ timeout: SLOW });
      const descs = await page.locator('article.pump td.field .desc').allTextContents();
      expect(descs.length).toBeGreaterThan(0);
      for (const d of descs) {
        expect(d, 'an English description').not.toMatch(
          /Temperatura|Presión|Flujo|Vibración|Corriente|Voltaje|tabla/,
        );
      }
      expect(
        await page.locator('article.pump .errors li', { hasText: 'Invalid notification on' }).count(),
      ).toBe(1);
      if (config.logbooks.length > 0) {
        expect(await page.locator('#logbooks .badge-class', { hasText: 'Routine' }).count()).toBeGreaterThan(
          0,
        );
        expect(await page.locator('#logbooks .badge-class', { hasText: 'Rutina' }).count()).toBe(0);
      }
      expect(await page.locator('article.pump table.sent tr.row-dropped').first().textContent()).toMatch(
        /dropped · \w+(, \w+)* missing/,
      );
      for (const width of [1280, 1400, 1920]) {
        await page.setViewportSize({ width, height: 900 });
        await expect.poll(() => overflows(page), { timeout: 10_000 }).toEqual([]);
      }
      await page.setViewportSize(PHONE);
      await expect.poll(() => overflows(page), { timeout: 10_000 }).toEqual([]);
      await context.close();
      expect(problems).toEqual([]);
    }, 240_000);
  });
}
