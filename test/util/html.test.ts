import { describe, expect, it } from 'vitest';
import { escapeHtml, escapeXml } from '../../src/util/html.js';

describe('escapeHtml', () => {
  it('escapes the five characters and nothing else', () => {
    expect(escapeHtml(`<a href="x">'&'</a>`)).toBe('&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;');
    expect(escapeHtml('plain words, é \u{1F3C2}')).toBe('plain words, é \u{1F3C2}');
    expect(escapeHtml('&amp;')).toBe('&amp;amp;'); // not idempotent on purpose: text is text
  });
});

describe('escapeXml', () => {
  it('escapes like escapeHtml and replaces what XML 1.0 cannot hold', () => {
    expect(escapeXml('<a & "b" \'c\'>')).toBe('&lt;a &amp; &quot;b&quot; &#39;c&#39;&gt;');
    expect(escapeXml('x\u0001y\uDC00')).toBe('x\uFFFDy\uFFFD');
    expect(escapeXml('\uD800lone')).toBe('\uFFFDlone');
    expect(escapeXml('tab\tnew\nline')).toBe('tab\tnew\nline');
    expect(escapeXml('snow \u{1F3C2}')).toBe('snow \u{1F3C2}'); // a valid surrogate pair stays
  });
});
