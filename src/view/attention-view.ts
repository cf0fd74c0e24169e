// The interactive attention view (src/view/: presentation shared by eval and serve) for the serve page and report.html: the photo with the
// caption's words under it as focusable spans; pointing at a word (or focusing it with Tab, or tapping
// it) highlights it and darkens the photo where the decoder did not look for that word. Everything is
// inline (no external resources), and it works under the serve page's CSP (inline script and style).
//
// Pieces, all pure (strings in, strings out):
//  - attentionViewHtml(data): static markup of one view (report.html; `summary` wraps it in <details>
//    so a row opens its map on click);
//  - ATTENTION_VIEW_CSS and ATTENTION_VIEW_SCRIPT: put once in the page (<style>, <script>). The script
//    handles every view in the document by event delegation, including views added later, and defines
//    window.captionerAttention.build(data) -> HTMLElement, which makes the SAME markup in the browser
//    (for the serve page, which gets the caption and attention from the JSON API). A browser test checks
//    that both give identical markup.
// Data: each word's row (P = H * W weights, row-major, as the encoder grid) is normalised (max -> 1;
// negative and non-finite weights count as 0), quantised to bytes 0..255 and stored base64 in the word's
// data-attn attribute (196 weights: 264 characters); the grid is the view's data-grid="H W". The grid is
// stretched over the whole photo, because the encoder saw the whole photo stretched to a square.
import { ModelError } from '../errors.js';
import { escapeHtml } from '../util/html.js';

export interface AttentionViewData {
  /** Image URL: a data: URL (report.html) or a blob:/same-origin URL (serve page). */
  image: string;
  /** Alternative text of the image (default: the words joined by spaces). */
  alt?: string;
  words: readonly string[];
  /** One row of H * W weights per word. */
  attention: readonly ArrayLike<number>[];
  grid: readonly [number, number];
}

export interface AttentionViewOptions {
  /** Wrap the view in <details> with this summary text (closed until clicked). */
  summary?: string;
}

/** Normalise a row (max -> 1; negative/non-finite -> 0) and quantise it to 0..255. Mirrored by the page script. */
export function quantiseRow(row: ArrayLike<number>): Uint8Array {
  let max = 0;
  for (let i = 0; i < row.length; i++) if (Number.isFinite(row[i]) && row[i] > max) max = row[i];
  const out = new Uint8Array(row.length);
  if (max > 0)
    for (let i = 0; i < row.length; i++)
      out[i] = Number.isFinite(row[i]) && row[i] > 0 ? Math.round((row[i] / max) * 255) : 0;
  return out;
}

function check(d: AttentionViewData): void {
  const [h, w] = d.grid;
  if (!(Number.isInteger(h) && Number.isInteger(w) && h > 0 && w > 0))
    throw new ModelError(`attention view: grid must be two positive integers, got ${JSON.stringify(d.grid)}`);
  if (d.attention.length !== d.words.length)
    throw new ModelError(`attention view: ${d.words.length} words but ${d.attention.length} attention rows`);
  d.attention.forEach((row, i) => {
    if (row.length !== h * w)
      throw new ModelError(`attention view: row ${i} has ${row.length} weights, grid ${h}x${w} needs ${h * w}`);
  });
}

/** Markup of one view. Needs ATTENTION_VIEW_CSS and ATTENTION_VIEW_SCRIPT once in the page. */
export function attentionViewHtml(d: AttentionViewData, o: AttentionViewOptions = {}): string {
  check(d);
  const alt = d.alt ?? d.words.join(' ');
  const words = d.words
    .map(
      (w, i) =>
        `<span class="attn-word" tabindex="0" data-attn="${Buffer.from(quantiseRow(d.attention[i])).toString('base64')}">${escapeHtml(w)}</span>`,
    )
    .join(' ');
  const view =
    `<figure class="attn-view" data-grid="${d.grid[0]} ${d.grid[1]}">` +
    `<div class="attn-stage"><img class="attn-img" src="${escapeHtml(d.image)}" alt="${escapeHtml(alt)}"><canvas class="attn-overlay" aria-hidden="true"></canvas></div>` +
    `<figcaption class="attn-words">${words}</figcaption></figure>`;
  return o.summary === undefined
    ? view
    : `<details class="attn-details"><summary>${escapeHtml(o.summary)}</summary>${view}</details>`;
}

export const ATTENTION_VIEW_CSS = `
.attn-view{margin:0;max-width:var(--attn-size,360px)}
.attn-stage{position:relative;line-height:0}
.attn-img{display:block;width:100%;height:auto;border-radius:6px}
.attn-overlay{position:absolute;left:0;top:0;width:100%;height:100%;pointer-events:none;border-radius:6px}
.attn-words{margin-top:.4em;line-height:1.9}
.attn-word{padding:.1em .25em;border-radius:4px;cursor:default;outline:none}
.attn-word:hover,.attn-word:focus-visible{box-shadow:0 0 0 2px var(--accent,#4f46e5)}
.attn-word.attn-on{background:var(--accent,#4f46e5);color:#fff}
.attn-details>summary{cursor:pointer}
`;

/** The page script (no dependencies). Safe to include more than once: only the first installs itself. */
export const ATTENTION_VIEW_SCRIPT = `
(function(){
  if (window.captionerAttention) return;
  var FLOOR = 0.25, SMOOTH = 0.5, PAD = 2;
  function grid(v){ var g = (v.getAttribute('data-grid') || '').split(' ').map(Number); return g.length === 2 && g[0] > 0 && g[1] > 0 ? g : null; }
  function bytes(b64){ var s = atob(b64 || ''), a = new Uint8Array(s.length); for (var i = 0; i < s.length; i++) a[i] = s.charCodeAt(i); return a; }
  function wordOf(t){ return t && t.closest ? t.closest('.attn-word') : null; }
  function clear(v){
    var on = v.querySelectorAll('.attn-word.attn-on');
    for (var i = 0; i < on.length; i++) on[i].classList.remove('attn-on');
    var c = v.querySelector('.attn-overlay'); if (c) c.getContext('2d').clearRect(0, 0, c.width, c.height);
  }
  function show(word){
    var v = word.closest('.attn-view'); if (!v) return;
    clear(v); word.classList.add('attn-on');
    var g = grid(v), q = bytes(word.getAttribute('data-attn')), img = v.querySelector('.attn-img'), c = v.querySelector('.attn-overlay');
    if (!g || !img || !c || q.length !== g[0] * g[1]) return;
    var H = g[0], W = g[1], r = img.getBoundingClientRect(), dpr = window.devicePixelRatio || 1;
    c.width = Math.max(1, Math.round(r.width * dpr)); c.height = Math.max(1, Math.round(r.height * dpr));
    // the grid, padded by PAD cells that repeat its border (so the blur does not lighten the edges),
    // as black with alpha = (1 - FLOOR) * (1 - a): attended cells clear, the rest darkened
    var s = document.createElement('canvas'); s.width = W + 2 * PAD; s.height = H + 2 * PAD;
    var sc = s.getContext('2d'), id = sc.createImageData(s.width, s.height);
    for (var y = 0; y < s.height; y++) for (var x = 0; x < s.width; x++) {
      var gy = Math.min(Math.max(y - PAD, 0), H - 1), gx = Math.min(Math.max(x - PAD, 0), W - 1);
      id.data[4 * (y * s.width + x) + 3] = Math.round(255 * (1 - FLOOR) * (1 - q[gy * W + gx] / 255));
    }
    sc.putImageData(id, 0, 0);
    var ctx = c.getContext('2d'), cw = c.width / W, ch = c.height / H;
    ctx.clearRect(0, 0, c.width, c.height);
    ctx.imageSmoothingEnabled = true; ctx.imageSmoothingQuality = 'high';
    ctx.filter = 'blur(' + (SMOOTH * (cw + ch) / 2).toFixed(1) + 'px)';
    ctx.drawImage(s, -PAD * cw, -PAD * ch, c.width + 2 * PAD * cw, c.height + 2 * PAD * ch);
    ctx.filter = 'none';
  }
  function settle(v){ var f = wordOf(document.activeElement); if (f && f.closest('.attn-view') === v) show(f); else clear(v); }
  document.addEventListener('pointerover', function(e){ var w = wordOf(e.target); if (w) show(w); });
  document.addEventListener('pointerout', function(e){
    var w = wordOf(e.target); if (!w || wordOf(e.relatedTarget) === w) return;
    if (!wordOf(e.relatedTarget)) settle(w.closest('.attn-view'));
  });
  document.addEventListener('focusin', function(e){ var w = wordOf(e.target); if (w) show(w); });
  document.addEventListener('focusout', function(e){
    var w = wordOf(e.target); if (!w || wordOf(e.relatedTarget)) return;
    var v = w.closest('.attn-view'); if (v) clear(v);
  });
  document.addEventListener('keydown', function(e){
    var w = wordOf(e.target); if (!w) return;
    var n = e.key === 'ArrowRight' ? w.nextElementSibling : e.key === 'ArrowLeft' ? w.previousElementSibling : null;
    if (n && n.classList.contains('attn-word')) { n.focus(); e.preventDefault(); }
    else if (e.key === 'Escape') w.blur();
  });
  // a word chosen before its photo finished loading is drawn again once it has
  document.addEventListener('load', function(e){
    var t = e.target, v = t && t.classList && t.classList.contains('attn-img') ? t.closest('.attn-view') : null;
    var on = v && v.querySelector('.attn-word.attn-on'); if (on) show(on);
  }, true);
  window.addEventListener('resize', function(){
    var on = document.querySelectorAll('.attn-word.attn-on');
    for (var i = 0; i < on.length; i++) show(on[i]);
  });
  function quantise(row){
    var max = 0, i, out = new Uint8Array(row.length);
    for (i = 0; i < row.length; i++) if (isFinite(row[i]) && row[i] > max) max = row[i];
    if (max > 0) for (i = 0; i < row.length; i++) out[i] = isFinite(row[i]) && row[i] > 0 ? Math.round((row[i] / max) * 255) : 0;
    return out;
  }
  function b64(a){ var s = ''; for (var i = 0; i < a.length; i++) s += String.fromCharCode(a[i]); return btoa(s); }
  function el(tag, cls){ var e = document.createElement(tag); if (cls) e.className = cls; return e; }
  // the same markup as attentionViewHtml, from {image, alt?, words, attention, grid}
  function build(d){
    var h = d.grid[0], w = d.grid[1];
    if (!(h > 0 && w > 0) || d.attention.length !== d.words.length) throw new Error('attention view: words, rows and grid do not match');
    var fig = el('figure', 'attn-view'); fig.setAttribute('data-grid', h + ' ' + w);
    var stage = el('div', 'attn-stage'), img = el('img', 'attn-img'), c = el('canvas', 'attn-overlay');
    img.setAttribute('src', d.image); img.setAttribute('alt', d.alt != null ? d.alt : d.words.join(' '));
    c.setAttribute('aria-hidden', 'true');
    stage.appendChild(img); stage.appendChild(c); fig.appendChild(stage);
    var cap = el('figcaption', 'attn-words');
    d.words.forEach(function(word, i){
      if (d.attention[i].length !== h * w) throw new Error('attention view: row ' + i + ' does not match the grid');
      if (i > 0) cap.appendChild(document.createTextNode(' '));
      var s = el('span', 'attn-word'); s.setAttribute('tabindex', '0'); s.setAttribute('data-attn', b64(quantise(d.attention[i])));
      s.textContent = word; cap.appendChild(s);
    });
    fig.appendChild(cap);
    return fig;
  }
  window.captionerAttention = { build: build, show: show, clear: clear };
})();
`;
