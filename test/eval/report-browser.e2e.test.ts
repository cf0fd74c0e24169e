// report.html in a real browser (Debian's chromium driven by playwright-core), at phone (390 px) and
// desktop (1280 px) width: nothing wider than the screen, the scores stacked under the caption on the
// phone and beside it on the desktop, sorting by a header, an attention view opened, and a report
// without thumbnails that says so once. Screenshots go to test-artifacts/ (report-*.png).
// Without chromium it skips, loudly, except where the env var CI is set: there it FAILS (see
// test/helpers/browser.ts). CAPTIONER_SKIP_BROWSER=1 skips it anywhere, loudly too.
import { promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { pathToFileURL } from 'node:url';
import type { Browser, Page } from 'playwright-core';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DecodeSchema } from '../../src/config/schema.js';
import { buildReport, type Prediction } from '../../src/eval/report.js';
import { renderReportHtml } from '../../src/eval/report-html.js';
import { scoreCaptions } from '../../src/eval/score.js';
import { artifacts, browserGate, launchChromium } from '../helpers/browser.js';

const gate = browserGate('eval report');

const COLOURS = ['#c0392b', '#2980b9', '#27ae60', '#f1c40f', '#8e44ad', '#7f8c8d'];
const CAPTIONS = [
  'a red square on a plain background',
  'a blue square',
  'a green square sitting in the middle of a very large and otherwise completely empty field of colour',
  'a yellow square',
  'a purple square with nothing around it at all',
  '',
];

describe.skipIf(gate.skip)('eval report.html in chromium', () => {
  let browser: Browser;
  let tmp: string;
  let withThumbs: string;
  let without: string;

  beforeAll(async () => {
    tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'report-browser-'));
    const images = path.join(tmp, 'images');
    await fs.mkdir(images);
    const preds: Prediction[] = [];
    for (let i = 0; i < COLOURS.length; i++) {
      // long file names, as real datasets have
      const image = `${1000268201 + i}_693b08cb0e_flickr8k_${'x'.repeat(i * 8)}.jpg`;
      await sharp({ create: { width: 200 + i * 40, height: 150, channels: 3, background: COLOURS[i] } })
        .jpeg()
        .toFile(path.join(images, image));
      preds.push({
        image,
        file: image,
        caption: CAPTIONS[i],
        logprob: -2 - i / 3,
        references: [
          `a ${['red', 'blue', 'green', 'yellow', 'purple', 'grey'][i]} square`,
          'a square of one colour on a plain background, seen from straight above',
        ],
      });
    }
    const scores = scoreCaptions(preds.map((p) => ({ id: p.image, candidate: p.caption, references: p.references })));
    const report = buildReport({
      createdAt: '2026-01-01T00:00:00.000Z',
      model: { dir: path.join(tmp, 'runs', 'flickr8k-attention-512'), name: 'flickr8k-attention-512', which: 'best' },
      dataset: { dir: path.join(tmp, 'prepared'), fingerprint: 'f'.repeat(64), imagesDir: images },
      features: {
        dir: path.join(tmp, 'features'),
        fingerprint: 'sha256:x',
        weights: path.join(tmp, 'vgg16_weights.h5'),
        layer: 'fc2',
      },
      split: 'test',
      decode: DecodeSchema.parse({}),
      tokenize: 'basic',
      scores,
      predictions: preds,
      seconds: 1,
    });
    // an attention view for two of them
    const grid = [2, 2] as const;
    const byImage = new Map(
      preds.slice(0, 2).map((p) => [
        p.image,
        {
          words: p.caption.split(' '),
          rows: p.caption
            .split(' ')
            .map((_, w) => [w % 4 === 0 ? 1 : 0, w % 4 === 1 ? 1 : 0, w % 4 === 2 ? 1 : 0, w % 4 === 3 ? 1 : 0]),
        },
      ]),
    );
    const reportDir = path.join(tmp, 'runs', 'flickr8k-attention-512', 'eval-test');
    await fs.mkdir(reportDir, { recursive: true });
    withThumbs = path.join(reportDir, 'report.html');
    await fs.writeFile(
      withThumbs,
      await renderReportHtml(report, { imagesDir: images, reportDir, attention: { grid, byImage } }),
    );
    without = path.join(reportDir, 'report-no-thumbnails.html');
    await fs.writeFile(without, await renderReportHtml(report, { imagesDir: images, reportDir, thumbnails: false }));
    browser = await launchChromium(gate);
  });
  afterAll(async () => {
    await browser?.close();
    if (tmp) await fs.rm(tmp, { recursive: true, force: true });
  });

  async function open(file: string, width: number): Promise<Page> {
    const phone = width < 500;
    const context = await browser.newContext({
      viewport: { width, height: phone ? 844 : 900 },
      deviceScaleFactor: phone ? 2 : 1,
      isMobile: phone,
      hasTouch: phone,
    });
    const page = await context.newPage();
    const errors: string[] = [];
    page.on('pageerror', (e) => errors.push(e.message));
    (page as Page & { jsErrors: string[] }).jsErrors = errors;
    await page.goto(pathToFileURL(file).href);
    return page;
  }

  /** Boxes of every row's caption cell and its first and last score cells. */
  function rowBoxes(page: Page) {
    return page.evaluate(() =>
      [...document.querySelectorAll('#images tbody tr')].map((tr) => {
        const box = (el: Element) => {
          const r = el.getBoundingClientRect();
          return { left: r.left, right: r.right, top: r.top, bottom: r.bottom, width: r.width };
        };
        const nums = tr.querySelectorAll('td.num');
        return { main: box(tr.querySelector('td.main')!), first: box(nums[0]), last: box(nums[nums.length - 1]) };
      }),
    );
  }

  const docWidth = (page: Page) => page.evaluate(() => document.documentElement.scrollWidth);

  it('fits a 390 px phone: scores stacked under the caption, sortable, attention view inside', async () => {
    const page = await open(withThumbs, 390);
    expect(await docWidth(page)).toBeLessThanOrEqual(390);
    for (const r of await rowBoxes(page)) {
      expect(r.main.width).toBeGreaterThan(200); // the caption is not squeezed (it was ~70 px)
      expect(r.first.top).toBeGreaterThanOrEqual(r.main.bottom - 1); // the scores come under it
      expect(r.last.right).toBeLessThanOrEqual(390);
    }
    // each score says what it is
    expect(await page.evaluate(() => getComputedStyle(document.querySelector('td.num')!, '::before').content)).toBe(
      '"BLEU-4"',
    );
    await page.screenshot({ path: path.join(artifacts, 'report-phone.png'), fullPage: true });
    // the headers are sort buttons: BLEU-4, highest first
    await page.click('th[data-key="bleu4"]');
    const bleu = await page.evaluate(() =>
      [...document.querySelectorAll<HTMLElement>('#images tbody tr')].map((tr) => Number(tr.dataset.bleu4)),
    );
    expect(bleu).toEqual([...bleu].sort((a, b) => b - a));
    // an attention view opens within the screen
    await page.click('.attn-details summary');
    expect(await page.evaluate(() => (document.querySelector('.attn-details') as HTMLDetailsElement).open)).toBe(true);
    expect(await docWidth(page)).toBeLessThanOrEqual(390);
    const view = await page.locator('.attn-view').first().boundingBox();
    expect(view!.x + view!.width).toBeLessThanOrEqual(390);
    await page.screenshot({ path: path.join(artifacts, 'report-phone-attention.png'), fullPage: true });
    expect((page as Page & { jsErrors: string[] }).jsErrors).toEqual([]);
    await page.context().close();
  });

  it('at 1280 px keeps the table: scores beside the caption', async () => {
    const page = await open(withThumbs, 1280);
    expect(await docWidth(page)).toBeLessThanOrEqual(1280);
    for (const r of await rowBoxes(page)) {
      expect(r.first.left).toBeGreaterThanOrEqual(r.main.right - 1);
      expect(r.first.top).toBeLessThan(r.main.bottom);
    }
    await page.screenshot({ path: path.join(artifacts, 'report-desktop.png'), fullPage: true });
    await page.context().close();
  });

  it('without thumbnails says so once, at both widths, and fits', async () => {
    for (const width of [390, 1280]) {
      const page = await open(without, width);
      expect(await docWidth(page)).toBeLessThanOrEqual(width);
      const text = await page.evaluate(() => document.body.textContent);
      expect(text).not.toMatch(/image not found/);
      expect(text.match(/thumbnails off/g)).toHaveLength(1);
      // and no absolute local path anywhere on the page
      expect(await page.content()).not.toContain(tmp);
      if (width === 390)
        await page.screenshot({ path: path.join(artifacts, 'report-phone-no-thumbnails.png'), fullPage: true });
      await page.context().close();
    }
  });
});
