// The attention view's markup (serve page and report.html): structure, escaping, the quantised rows and
// the checks. Its behaviour in a real browser is in attention-browser.e2e.test.ts.
import { describe, expect, it } from 'vitest';
import { ModelError } from '../../src/errors.js';
import {
  ATTENTION_VIEW_CSS,
  ATTENTION_VIEW_SCRIPT,
  attentionViewHtml,
  quantiseRow,
} from '../../src/view/attention-view.js';

const data = {
  image: 'data:image/png;base64,AAAA',
  words: ['a', 'dog'],
  attention: [new Float32Array([0, 1, 2, 4]), new Float32Array([1, 1, 1, 1])],
  grid: [2, 2] as [number, number],
};

describe('quantiseRow', () => {
  it('normalises to the row max and rounds to 0..255', () => {
    expect(Array.from(quantiseRow([0, 1, 2, 4]))).toEqual([0, 64, 128, 255]);
    expect(Array.from(quantiseRow([-3, NaN, Infinity, 0.5]))).toEqual([0, 0, 0, 255]);
    expect(Array.from(quantiseRow([0, 0, 0]))).toEqual([0, 0, 0]);
  });
});

describe('attentionViewHtml', () => {
  it('is a figure: image, overlay canvas, one focusable span per word carrying its row', () => {
    const html = attentionViewHtml(data);
    expect(html).toBe(
      '<figure class="attn-view" data-grid="2 2">' +
        '<div class="attn-stage"><img class="attn-img" src="data:image/png;base64,AAAA" alt="a dog"><canvas class="attn-overlay" aria-hidden="true"></canvas></div>' +
        `<figcaption class="attn-words"><span class="attn-word" tabindex="0" data-attn="${Buffer.from([0, 64, 128, 255]).toString('base64')}">a</span> ` +
        `<span class="attn-word" tabindex="0" data-attn="${Buffer.from([255, 255, 255, 255]).toString('base64')}">dog</span></figcaption></figure>`,
    );
  });

  it('escapes words, alt text and the image URL; no external resources', () => {
    const html = attentionViewHtml({
      ...data,
      image: 'x.png?a=1&b="2"',
      words: ['<unk>', `"it's"&`],
      alt: '<b>photo</b>',
    });
    expect(html).toContain('>&lt;unk&gt;</span>');
    expect(html).toContain('>&quot;it&#39;s&quot;&amp;</span>');
    expect(html).toContain('alt="&lt;b&gt;photo&lt;/b&gt;"');
    expect(html).toContain('src="x.png?a=1&amp;b=&quot;2&quot;"');
    expect(html).not.toMatch(/<unk>|<b>/);
    for (const s of [html, ATTENTION_VIEW_CSS, ATTENTION_VIEW_SCRIPT])
      expect(s).not.toMatch(/https?:\/\/|@import|url\(/);
  });

  it('wraps in <details> when given a summary (report.html: click to open)', () => {
    const html = attentionViewHtml(data, { summary: 'attention <map>' });
    expect(
      html.startsWith(
        '<details class="attn-details"><summary>attention &lt;map&gt;</summary><figure class="attn-view"',
      ),
    ).toBe(true);
    expect(html.endsWith('</figure></details>')).toBe(true);
  });

  it('a 14x14 grid keeps each row small (196 weights -> 264 base64 characters)', () => {
    const row = Float32Array.from({ length: 196 }, (_, i) => i);
    const html = attentionViewHtml({ image: 'i.png', words: ['w'], attention: [row], grid: [14, 14] });
    const b64 = /data-attn="([^"]+)"/.exec(html)![1];
    expect(b64.length).toBe(264);
    expect(Array.from(Buffer.from(b64, 'base64'))).toEqual(Array.from(quantiseRow(row)));
  });

  it('refuses rows that do not match the words or the grid', () => {
    expect(() => attentionViewHtml({ ...data, words: ['a'] })).toThrow(ModelError);
    expect(() =>
      attentionViewHtml({
        ...data,
        attention: [
          [1, 2, 3],
          [1, 2, 3],
        ],
      }),
    ).toThrow(/row 0 has 3 weights, grid 2x2 needs 4/);
    expect(() => attentionViewHtml({ ...data, grid: [2.5, 2] })).toThrow(ModelError);
  });

  it('the page script parses and installs itself once', () => {
    expect(() => new Function(ATTENTION_VIEW_SCRIPT)).not.toThrow();
    expect(ATTENTION_VIEW_SCRIPT).toContain('if (window.captionerAttention) return;');
  });
});
