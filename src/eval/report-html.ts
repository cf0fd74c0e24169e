// report.html: one self-contained page for an eval report. The summary (metrics beside the image-blind
// baseline, settings) on top, then one row per image: a thumbnail (a small JPEG data URI made with sharp,
// or a grey placeholder when the image cannot be read), the predicted caption, the references and the
// per-image scores. Rows start sorted by CIDEr-D (best first); clicking a column header re-sorts.
// For an attention model each row also gets its attention view (src/view/attention-view.ts), closed under
// an "attention" summary: the photo at about 360 px (a JPEG data URI) with the caption's words; pointing at a
// word shows where the model looked for it.
// No external resources and no local absolute paths (folders are shown relative to the report, or by
// name): the page works offline and can be mailed around. On a phone (narrow screens) each image's
// scores stack under its caption instead of running off the screen, and the column headers become a row
// of sort buttons.
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import sharp from 'sharp';
import { ATTENTION_VIEW_CSS, ATTENTION_VIEW_SCRIPT, attentionViewHtml } from '../view/attention-view.js';
import { metricKeys } from './score.js';
import { metricLabel, type EvalReport, type PerImage } from './report.js';
import { escapeHtml } from '../util/html.js';

export interface HtmlOptions {
  /** Folder the images' `file` paths are under (null: no thumbnails). */
  imagesDir: string | null;
  /** Folder the page is written to: folders are shown relative to it (default: by name only). */
  reportDir?: string;
  /** Make thumbnails (default true). */
  thumbnails?: boolean;
  /** Thumbnail side in pixels (default 96). */
  size?: number;
  /** Thumbnails made at once (default 4). */
  concurrency?: number;
  /** An attention model's grid [H, W] and each image's words and attention rows: rows get attention views. */
  attention?: { grid: readonly [number, number]; byImage: ReadonlyMap<string, ImageAttention> };
}

/** One image's caption words and one row of H * W attention weights per word. */
export interface ImageAttention {
  words: readonly string[];
  rows: readonly ArrayLike<number>[];
}

/** Side of the photo in an attention view, in pixels. */
const VIEW_SIZE = 360;

/** A JPEG data URI of the image scaled to fit `size` x `size`, or null when it cannot be read. */
export async function thumbnail(file: string, size = 96): Promise<string | null> {
  try {
    const buf = await sharp(file, { failOn: 'none', pages: 1, limitInputPixels: 100_000_000 })
      .rotate()
      .flatten({ background: '#ffffff' })
      .resize(size, size, { fit: 'inside' })
      .jpeg({ quality: 70 })
      .toBuffer();
    return `data:image/jpeg;base64,${buf.toString('base64')}`;
  } catch {
    return null;
  }
}

/** A row's thumbnail: a data URI, or why there is none. */
type Thumb = string | { missing: 'not found' | 'unreadable' };

async function thumbnails(
  rows: readonly PerImage[],
  o: HtmlOptions,
  size: number,
  only?: (p: PerImage) => boolean,
): Promise<(Thumb | null)[]> {
  const out: (Thumb | null)[] = new Array(rows.length).fill(null);
  if (!o.imagesDir || o.thumbnails === false) return out;
  let next = 0;
  const worker = async () => {
    while (next < rows.length) {
      const i = next++;
      if (only && !only(rows[i])) continue;
      const file = path.resolve(o.imagesDir!, rows[i].file);
      out[i] = (await thumbnail(file, size)) ?? {
        missing: await fs.access(file).then(
          () => 'unreadable' as const,
          () => 'not found' as const,
        ),
      };
    }
  };
  await Promise.all(Array.from({ length: Math.min(o.concurrency ?? 4, rows.length) }, worker));
  return out;
}

/** A folder as the page shows it: relative to the report's folder when known, else by name; never absolute. */
function shownDir(dir: string, reportDir: string | undefined): string {
  if (reportDir) {
    const rel = path.relative(reportDir, dir);
    if (!path.isAbsolute(rel)) return rel === '' ? './' : `${rel.split(path.sep).join('/')}/`;
  }
  return `${path.basename(dir)}/`;
}

const f4 = (v: number) => v.toFixed(4);

const STYLE = `
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}
h1{font-size:1.4em;margin:0 0 .3em;overflow-wrap:anywhere}
table{border-collapse:collapse}
.summary td,.summary th{padding:.2em .8em;text-align:right;border-bottom:1px solid #ddd}
.summary td:first-child,.summary th:first-child{text-align:left}
.meta{color:#555;font-size:.9em;margin:.8em 0 1.2em;overflow-wrap:anywhere}
.images th{position:sticky;top:0;background:#f4f4f4;cursor:pointer;padding:.4em;border-bottom:2px solid #ccc;text-align:left;user-select:none}
.images th.num{text-align:right}
.images td{padding:.4em;border-bottom:1px solid #eee;vertical-align:top}
.images td.num{text-align:right;font-variant-numeric:tabular-nums}
.thumb{width:96px;height:96px;object-fit:contain;background:#eee;display:block}
.ph{width:96px;height:96px;background:#ddd;color:#777;display:flex;align-items:center;justify-content:center;font-size:11px;text-align:center}
.pred{font-weight:600}
.refs{margin:.2em 0 0;padding-left:1.2em;color:#555}
.name{color:#777;font-size:.85em;word-break:break-all}
@media (max-width:700px){
body{margin:.8em}
.summary td,.summary th{padding:.2em .5em}
.images,.images thead,.images tbody{display:block}
.images thead tr{display:flex;flex-wrap:wrap;gap:.3em;margin-bottom:.4em}
.images th{position:static;border:1px solid #ccc;border-radius:4px;padding:.2em .5em}
.images th:not([data-key]){display:none}
.images th.lead::after{content:"caption"}
.images th.lead span{display:none}
.images tbody tr{display:grid;grid-template-columns:repeat(4,minmax(0,1fr));border-bottom:1px solid #ddd;padding:.3em 0}
.images td{border:0;padding:.25em}
.images td.main{grid-column:2/-1;min-width:0}
.images.nothumbs td.main{grid-column:1/-1}
.images td.num{text-align:left}
.images td.num::before{content:attr(data-label);display:block;color:#777;font-size:.8em}
.thumb,.ph{width:100%;max-width:96px;height:auto;aspect-ratio:1}
}
`;

const SCRIPT = `
(function(){
  var table=document.getElementById('images'), body=table.tBodies[0], dir={};
  table.tHead.addEventListener('click',function(e){
    var th=e.target.closest('th'); if(!th||!th.dataset.key) return;
    var k=th.dataset.key, num=th.classList.contains('num');
    dir[k]=dir[k]===undefined?(num?-1:1):-dir[k];
    var rows=Array.prototype.slice.call(body.rows);
    rows.sort(function(a,b){var x=a.dataset[k],y=b.dataset[k]; if(num){x=+x;y=+y;} return (x<y?-1:x>y?1:0)*dir[k];});
    rows.forEach(function(r){body.appendChild(r);});
  });
})();
`;

/** Render the report as a standalone HTML page (thumbnails read from `o.imagesDir`). */
export async function renderReportHtml(r: EvalReport, o: HtmlOptions): Promise<string> {
  const order = r.perImage.map((_, i) => i).sort((a, b) => r.perImage[b].CIDEr - r.perImage[a].CIDEr || a - b);
  const rows = order.map((i) => r.perImage[i]);
  const thumbs = await thumbnails(rows, o, o.size ?? 96);
  const att = o.attention;
  const large = att ? await thumbnails(rows, o, VIEW_SIZE, (p) => att.byImage.has(p.image)) : [];
  const views = rows.map((p, i) => {
    const a = att?.byImage.get(p.image);
    const image = large[i];
    return a && typeof image === 'string'
      ? attentionViewHtml(
          { image, alt: p.image, words: a.words, attention: a.rows, grid: att!.grid },
          { summary: 'attention' },
        )
      : '';
  });
  const anyView = views.some(Boolean);
  const b = r.baseline;
  const summary = [
    `<tr><th>metric</th><th>model</th>${b ? '<th>image-blind baseline</th>' : ''}</tr>`,
    `<tr><td>images</td><td>${r.metrics.images}</td>${b ? `<td>${b.metrics.images}</td>` : ''}</tr>`,
    ...metricKeys.map(
      (k) =>
        `<tr><td>${metricLabel(k)}</td><td>${f4(r.metrics[k])}</td>${b ? `<td>${f4(b.metrics[k])}</td>` : ''}</tr>`,
    ),
  ].join('\n');
  const baselineNote = b ? `<p class="meta">Image-blind baseline: ${escapeHtml(b.explanation)}.</p>` : '';
  const thumbsShown = Boolean(o.imagesDir) && o.thumbnails !== false;
  const meta = [
    `model <code>${escapeHtml(shownDir(r.model.dir, o.reportDir))}</code> (${r.model.which})`,
    `split ${escapeHtml(r.split)} of <code>${escapeHtml(shownDir(r.dataset.dir, o.reportDir))}</code>`,
    `features ${escapeHtml(r.features.layer)}, weights ${escapeHtml(r.features.weights === 'random' ? 'RANDOM (untrained VGG16)' : path.basename(r.features.weights))}`,
    `beam ${r.decode.beam}, length penalty ${r.decode.lengthPenalty}, max ${r.decode.maxLength} words`,
    `metric tokenization ${escapeHtml(r.tokenize)}; per-image BLEU-4 is sentence BLEU without smoothing (often 0 for short captions)`,
    ...(thumbsShown ? [] : [o.imagesDir ? 'thumbnails off' : 'no thumbnails: the prepared set has no images folder']),
    `${escapeHtml(r.createdAt)}`,
  ].join(' &middot; ');
  const body = rows
    .map((p, i) => {
      const t = thumbs[i];
      const img = !thumbsShown
        ? ''
        : typeof t === 'string'
          ? `<td><img class="thumb" alt="${escapeHtml(p.image)}" src="${t}"></td>`
          : `<td><div class="ph">image ${t?.missing ?? 'not found'}</div></td>`;
      const refs = p.references.map((c) => `<li>${escapeHtml(c)}</li>`).join('');
      return (
        `<tr data-image="${escapeHtml(p.image)}" data-caption="${escapeHtml(p.caption)}" data-bleu4="${p.Bleu_4}" data-cider="${p.CIDEr}" data-rouge="${p.ROUGE_L}" data-logprob="${p.logprob}">` +
        `${img}<td class="main"><div class="pred">${escapeHtml(p.caption) || '<em>(empty)</em>'}</div><ul class="refs">${refs}</ul><div class="name">${escapeHtml(p.image)}</div>${views[i]}</td>` +
        `<td class="num" data-label="BLEU-4">${f4(p.Bleu_4)}</td><td class="num" data-label="CIDEr-D">${f4(p.CIDEr)}</td><td class="num" data-label="ROUGE-L">${f4(p.ROUGE_L)}</td><td class="num" data-label="log-prob">${p.logprob.toFixed(3)}</td></tr>`
      );
    })
    .join('\n');
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>captioner eval: ${escapeHtml(r.model.name)} (${escapeHtml(r.split)})</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><style>${STYLE}${anyView ? ATTENTION_VIEW_CSS : ''}</style></head>
<body>
<h1>captioner eval: ${escapeHtml(r.model.name)}, ${escapeHtml(r.split)} split</h1>
<table class="summary">
${summary}
</table>
${baselineNote}
<p class="meta">${meta}</p>
<table class="images${thumbsShown ? '' : ' nothumbs'}" id="images">
<thead><tr>${thumbsShown ? '<th>image</th>' : ''}<th class="lead" data-key="caption"><span>predicted caption / references (click a header to sort)</span></th><th class="num" data-key="bleu4">BLEU-4</th><th class="num" data-key="cider">CIDEr-D</th><th class="num" data-key="rouge">ROUGE-L</th><th class="num" data-key="logprob">log-prob</th></tr></thead>
<tbody>
${body}
</tbody>
</table>
<script>${SCRIPT}</script>${anyView ? `\n<script>${ATTENTION_VIEW_SCRIPT}</script>` : ''}
</body></html>
`;
}
