// The attention view in a real browser: Debian's chromium driven by playwright-core. A page holding a
// static view (attentionViewHtml) and one built in the page (captionerAttention.build, as the serve page
// will from the JSON API): both must be the same markup; pointing at a word highlights it and darkens
// the photo away from where it looked; Tab / arrow keys / Escape do the same from the keyboard.
// Screenshots go to test-artifacts/attention-view*.png.
// Without chromium it skips, loudly, except where the env var CI is set: there it FAILS (as
// browser.e2e.test.ts). CAPTIONER_SKIP_BROWSER=1 skips it anywhere, loudly too.
import * as path from 'node:path';
import type { Browser, Page } from 'playwright-core';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ATTENTION_VIEW_CSS, ATTENTION_VIEW_SCRIPT, attentionViewHtml } from '../../src/view/attention-view.js';
import { artifacts, browserGate, launchChromium } from '../helpers/browser.js';

const gate = browserGate('attention view');

const H = 14;
const W = 14;
/** A Gaussian bump on the 14x14 grid, centred on cell (cy, cx). */
function bump(cy: number, cx: number, s = 1.6): number[] {
  return Array.from({ length: H * W }, (_, i) =>
    Math.exp(-((Math.floor(i / W) - cy) ** 2 + ((i % W) - cx) ** 2) / (2 * s * s)),
  );
}

/** A grassy scene: a brown "dog" at the upper left, a red ball at the lower right (400 x 300). */
async function scene(): Promise<string> {
  const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="400" height="300">
    <rect width="400" height="300" fill="#8fc1e3"/><rect y="150" width="400" height="150" fill="#5a9e4b"/>
    <ellipse cx="100" cy="95" rx="60" ry="38" fill="#7a4a25"/><circle cx="150" cy="65" r="24" fill="#7a4a25"/>
    <circle cx="310" cy="235" r="30" fill="#d62d2d"/></svg>`;
  const jpeg = await sharp(Buffer.from(svg)).jpeg({ quality: 85 }).toBuffer();
  return `data:image/jpeg;base64,${jpeg.toString('base64')}`;
}

describe.skipIf(gate.skip)('attention view in chromium', () => {
  let browser: Browser;
  let page: Page;
  let html: string;
  const errors: string[] = [];
  const words = ['a', 'dog', '<unk>', 'with', 'a', 'red', 'ball'];
  // "dog" looks at the dog (rows 3-5 of 14, columns 2-5), "ball"/"red" at the ball, the rest diffusely
  const attention = [
    bump(7, 7, 5),
    bump(4, 4),
    bump(8, 8, 4),
    bump(9, 7, 5),
    bump(7, 7, 5),
    bump(11, 11),
    bump(11, 11, 1.2),
  ];

  beforeAll(async () => {
    const image = await scene();
    html = `<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><title>attention</title>
      <style>body{font:16px/1.5 system-ui,sans-serif;margin:20px} ${ATTENTION_VIEW_CSS}</style></head>
      <body><div id="static">${attentionViewHtml({ image, words, attention, grid: [H, W] })}</div><div id="dynamic"></div>
      <script>${ATTENTION_VIEW_SCRIPT}</script><script>${ATTENTION_VIEW_SCRIPT}</script></body></html>`;
    browser = await launchChromium(gate);
    const context = await browser.newContext({ viewport: { width: 800, height: 700 }, deviceScaleFactor: 1 });
    page = await context.newPage();
    page.on('pageerror', (e) => errors.push(e.message));
    page.on('console', (m) => m.type() === 'error' && errors.push(m.text()));
    await page.setContent(html);
    await page.waitForFunction(() => (document.querySelector('#static .attn-img') as HTMLImageElement).complete);
    // the serve page's path: build the same view in the page from plain JSON
    await page.evaluate(
      ([image, words, attention]) => {
        const w = window as unknown as { captionerAttention: { build(d: unknown): HTMLElement } };
        document
          .getElementById('dynamic')!
          .appendChild(w.captionerAttention.build({ image, words, attention, grid: [14, 14] }));
      },
      [image, words, attention] as const,
    );
  });
  afterAll(async () => {
    await browser?.close();
  });

  /** Overlay darkness (alpha 0..255) at a fraction (fx, fy) of the photo, in view `root`. */
  function alphaAt(root: string, fx: number, fy: number): Promise<number> {
    return page.evaluate(
      ([root, fx, fy]) => {
        const c = document.querySelector(`${root} .attn-overlay`) as HTMLCanvasElement;
        return c.getContext('2d')!.getImageData(Math.floor(fx * c.width), Math.floor(fy * c.height), 1, 1).data[3];
      },
      [root, fx, fy] as const,
    );
  }
  const highlighted = (root: string) =>
    page.$$eval(`${root} .attn-word.attn-on`, (els) => els.map((e) => e.textContent));

  it('builds the same markup in the page as attentionViewHtml does on the server', async () => {
    const [a, b] = await page.evaluate(() => [
      document.querySelector('#static figure')!.outerHTML,
      document.querySelector('#dynamic figure')!.outerHTML,
    ]);
    expect(b).toBe(a);
    expect(await page.$$eval('#static .attn-word', (els) => els.map((e) => e.textContent))).toEqual(words); // escaped, shown as text
  });

  it('pointing at a word highlights it and shows where it looked', async () => {
    expect(await highlighted('#static')).toEqual([]);
    expect(await alphaAt('#static', 0.3, 0.3)).toBe(0); // nothing drawn yet
    await page.hover('#static .attn-word:nth-child(2)'); // "dog"
    expect(await highlighted('#static')).toEqual(['dog']);
    const onDog = await alphaAt('#static', 4.5 / 14, 4.5 / 14);
    const onBall = await alphaAt('#static', 11.5 / 14, 11.5 / 14);
    expect(onDog).toBeLessThan(40); // clear where it looked
    expect(onBall).toBeGreaterThan(150); // darkened (at most 0.75 * 255) elsewhere
    await page.screenshot({ path: path.join(artifacts, 'attention-view-dog.png') });
    await page.hover('#static .attn-word:nth-child(7)'); // "ball"
    expect(await highlighted('#static')).toEqual(['ball']);
    expect(await alphaAt('#static', 11.5 / 14, 11.5 / 14)).toBeLessThan(40);
    expect(await alphaAt('#static', 4.5 / 14, 4.5 / 14)).toBeGreaterThan(150);
    await page.screenshot({ path: path.join(artifacts, 'attention-view-ball.png') });
    // leaving the words clears the view; the other view was never touched
    await page.mouse.move(790, 690);
    expect(await highlighted('#static')).toEqual([]);
    expect(await alphaAt('#static', 0.8, 0.8)).toBe(0);
    expect(await highlighted('#dynamic')).toEqual([]);
  });

  it('works from the keyboard: Tab to a word, arrows to move, Escape to leave', async () => {
    await page.mouse.move(790, 690);
    await page.focus('#dynamic .attn-word:nth-child(1)');
    expect(await highlighted('#dynamic')).toEqual(['a']);
    await page.keyboard.press('ArrowRight');
    expect(await highlighted('#dynamic')).toEqual(['dog']);
    expect(await alphaAt('#dynamic', 4.5 / 14, 4.5 / 14)).toBeLessThan(40);
    await page.keyboard.press('Tab'); // the next word, by the ordinary tab order
    expect(await highlighted('#dynamic')).toEqual(['<unk>']);
    await page.screenshot({ path: path.join(artifacts, 'attention-view-keyboard.png') });
    await page.keyboard.press('Escape');
    expect(await highlighted('#dynamic')).toEqual([]);
    expect(await alphaAt('#dynamic', 0.5, 0.5)).toBe(0);
    expect(errors).toEqual([]);
  });

  it('works by touch at phone width: tapping a word shows it', async () => {
    const context = await browser.newContext({
      viewport: { width: 390, height: 844 },
      deviceScaleFactor: 2,
      isMobile: true,
      hasTouch: true,
    });
    try {
      const phone = await context.newPage();
      await phone.setContent(html);
      await phone.waitForFunction(() => (document.querySelector('.attn-img') as HTMLImageElement).complete);
      await phone.tap('.attn-word:nth-child(7)'); // "ball"
      expect(await phone.$$eval('.attn-word.attn-on', (els) => els.map((e) => e.textContent))).toEqual(['ball']);
      expect(await phone.evaluate(() => document.documentElement.scrollWidth)).toBeLessThanOrEqual(390);
      await phone.screenshot({ path: path.join(artifacts, 'attention-view-phone.png') });
    } finally {
      await context.close();
    }
  });
});
