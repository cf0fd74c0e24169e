// The serve page with an attention model, in a real browser (Debian's chromium via playwright-core; skips
// loudly without it, see test/helpers/browser.ts): after an upload the page builds the attention view from
// the JSON answer under the caption, and pointing at a word darkens the photo away from where it "looked".
// The captioner is the colour fake (fake.ts) with attention added: word k looks at grid cell k of a 4 x 4
// grid. A merge-style answer (no attention) leaves no view. Screenshot: test-artifacts/serve-page-attention.png.
import * as path from 'node:path';
import type { Browser, Page } from 'playwright-core';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { CaptionOptions, CaptionOutcome, Captioner, ImageInput } from '../../src/caption/types.js';
import { startServer, type RunningServer } from '../../src/serve/server.js';
import { artifacts, browserGate, launchChromium } from '../helpers/browser.js';
import { createFakeCaptioner } from './fake.js';
import { serveConfig } from './fixtures.js';

const gate = browserGate('serve page attention');

/** The colour fake, answering like an attention model: word k attends to cell k (row-major) of a 4 x 4 grid. */
function attentionFake(): Captioner {
  const fake = createFakeCaptioner();
  return {
    info: fake.info,
    dispose: () => fake.dispose(),
    async captionBatch(inputs: ImageInput[], options?: CaptionOptions): Promise<CaptionOutcome[]> {
      return (await fake.captionBatch(inputs, options)).map((o) =>
        o.ok
          ? {
              ...o,
              attention: {
                grid: [4, 4],
                words: o.tokens,
                rows: o.tokens.map((_, k) => Array.from({ length: 16 }, (_, p) => (p === k * 5 ? 0.9 : 0.1 / 15))),
              },
            }
          : o,
      );
    },
  };
}

describe.skipIf(gate.skip)('serve page attention view in chromium', () => {
  let browser: Browser;
  let server: RunningServer;
  let plain: RunningServer;
  let photo: Buffer;

  beforeAll(async () => {
    photo = await sharp({ create: { width: 320, height: 320, channels: 3, background: { r: 30, g: 60, b: 220 } } })
      .jpeg()
      .toBuffer();
    server = await startServer(attentionFake(), serveConfig(), { title: 'attention-demo' });
    plain = await startServer(createFakeCaptioner(), serveConfig(), { title: 'merge-demo' });
    browser = await launchChromium(gate);
  });
  afterAll(async () => {
    await browser?.close();
    await server?.close();
    await plain?.close();
  });

  async function upload(url: string): Promise<{ page: Page; errors: string[] }> {
    const page = await (await browser.newContext({ viewport: { width: 1000, height: 1000 } })).newPage();
    const errors: string[] = [];
    page.on('pageerror', (e) => errors.push(e.message));
    page.on('console', (m) => m.type() === 'error' && errors.push(m.text()));
    await page.goto(url + '/');
    await page.setInputFiles('#file', { name: 'blue.jpg', mimeType: 'image/jpeg', buffer: photo });
    await page.waitForSelector('.caption');
    return { page, errors };
  }

  /** Overlay darkness (alpha 0..255) at a fraction (fx, fy) of the photo. */
  const alphaAt = (page: Page, fx: number, fy: number) =>
    page.evaluate(
      ([fx, fy]) => {
        const c = document.querySelector('#attention .attn-overlay') as HTMLCanvasElement;
        return c.getContext('2d')!.getImageData(Math.floor(fx * c.width), Math.floor(fy * c.height), 1, 1).data[3];
      },
      [fx, fy] as const,
    );

  it('shows the view under the caption; pointing at a word shows where it looked', async () => {
    const { page, errors } = await upload(server.url);
    await page.waitForSelector('#attention .attn-view');
    expect(await page.textContent('.caption')).toBe('a blue image');
    expect(await page.$$eval('#attention .attn-word', (els) => els.map((e) => e.textContent))).toEqual([
      'a',
      'blue',
      'image',
    ]);
    expect(await page.getAttribute('#attention .attn-img', 'src')).toMatch(/^blob:/); // the upload's own preview URL
    await page.waitForFunction(() => (document.querySelector('#attention .attn-img') as HTMLImageElement).complete);
    await page.hover('#attention .attn-word:nth-child(2)'); // "blue": cell 5 = row 1, column 1
    expect(await page.$$eval('#attention .attn-word.attn-on', (els) => els.map((e) => e.textContent))).toEqual([
      'blue',
    ]);
    // clearer where "blue" looked (cell 5) than far from it (on a 4 x 4 grid the smoothing spreads the peak)
    const onBlue = await alphaAt(page, 1.5 / 4, 1.5 / 4);
    const far = await alphaAt(page, 3.5 / 4, 3.5 / 4);
    expect(far).toBeGreaterThan(150);
    expect(onBlue).toBeLessThan(far - 40);
    await page.hover('#attention .attn-word:nth-child(1)'); // "a": cell 0, the top left corner
    expect(await alphaAt(page, 0.5 / 4, 0.5 / 4)).toBeLessThan(await alphaAt(page, 1.5 / 4, 1.5 / 4));
    await page.screenshot({ path: path.join(artifacts, 'serve-page-attention.png'), fullPage: true });
    expect(errors).toEqual([]);
    await page.context().close();
  });

  it('an answer without attention (a merge model) shows the caption alone', async () => {
    const { page, errors } = await upload(plain.url);
    expect(await page.textContent('.caption')).toBe('a blue image');
    expect(await page.$$('#attention')).toHaveLength(0);
    expect(errors).toEqual([]);
    await page.context().close();
  });
});
