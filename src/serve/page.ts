// The web page served at `/`: one self-contained HTML document (inline CSS and JS, no CDN, no build
// step). Drop or pick an image, see it at once, then its caption and log-probability. Works at phone
// width (nothing in it is wider than a 390 px screen: the status badge is cut short with an ellipsis,
// its full text is in its tooltip). The server's limits are injected so the page can refuse oversized
// and empty files before uploading. The status badge polls /api/health for as long as the page is open
// (every 2 s until the model is ready, then every 10 s) and says "disconnected" when the server is gone.
// With an attention model the API answer carries `attention`; the page then shows the attention view
// (src/view/attention-view.ts, built in the page by captionerAttention.build) under the caption.
import { ATTENTION_VIEW_CSS, ATTENTION_VIEW_SCRIPT } from '../view/attention-view.js';
import { escapeHtml } from '../util/html.js';

export interface PageOptions {
  title: string;
  maxUploadBytes: number;
  maxBeam: number;
  /** Beam used when the visitor does not pick one (shown as the first option); undefined: the model's. */
  defaultBeam?: number;
  /** The image formats this server can decode, for messages ("JPEG, PNG or WebP"). */
  formats?: string;
}

/** JSON safe to place inside a <script> element. */
function scriptJson(v: unknown): string {
  return JSON.stringify(v)
    .replace(/</g, '\\u003c')
    .replace(/\u2028/g, '\\u2028')
    .replace(/\u2029/g, '\\u2029');
}

const FAVICON =
  "data:image/svg+xml,%3Csvg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 32 32'%3E%3Crect width='32' height='32' rx='8' fill='%234f46e5'/%3E%3Cpath d='M8 22l6-8 4 5 3-3 5 6z' fill='white'/%3E%3Ccircle cx='22' cy='11' r='3' fill='white'/%3E%3C/svg%3E";

export function renderPage(o: PageOptions): string {
  const title = escapeHtml(o.title);
  const settings = scriptJson({
    maxUploadBytes: o.maxUploadBytes,
    maxBeam: o.maxBeam,
    defaultBeam: o.defaultBeam ?? null,
    formats: o.formats ?? 'JPEG or PNG',
  });
  const beamOptions = ['<option value="">default</option>']
    .concat(
      Array.from(
        { length: Math.min(o.maxBeam, 10) },
        (_, i) => `<option value="${i + 1}">${i + 1}${i === 0 ? ' (greedy)' : ''}</option>`,
      ),
    )
    .join('');
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="color-scheme" content="light dark">
<title>${title} · image captioner</title>
<link rel="icon" href="${FAVICON}">
<style>
:root {
  --bg: #f5f6fb; --card: #ffffff; --text: #1d2033; --muted: #6b7085; --line: #dfe2ee;
  --accent: #4f46e5; --accent-soft: #eef0ff; --error: #b42318; --error-soft: #fef3f2;
  --radius: 16px; --shadow: 0 1px 2px rgba(16,24,40,.06), 0 8px 24px rgba(16,24,40,.08);
}
@media (prefers-color-scheme: dark) {
  :root { --bg: #11131c; --card: #1a1d2a; --text: #e8eaf3; --muted: #9aa0b8; --line: #2c3043;
    --accent: #8b85ff; --accent-soft: #23264a; --error: #ff8a80; --error-soft: #3a1f22; --shadow: none; }
}
* { box-sizing: border-box; }
html, body { margin: 0; }
body { font: 16px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
  background: var(--bg); color: var(--text); min-height: 100vh; display: flex; flex-direction: column; }
header, main, footer { width: 100%; max-width: 720px; margin: 0 auto; padding: 0 20px; }
header { padding-top: 32px; padding-bottom: 8px; display: flex; align-items: center; gap: 12px; }
header img { width: 36px; height: 36px; flex: none; }
header > div { min-width: 0; flex: 1 1 auto; }
h1 { font-size: 1.35rem; margin: 0; letter-spacing: -.01em; overflow-wrap: anywhere; }
.sub { margin: 0; color: var(--muted); font-size: .92rem; }
.badge { margin-left: auto; flex: 0 1 auto; min-width: 0; max-width: 45%; overflow: hidden; text-overflow: ellipsis;
  font-size: .78rem; padding: 4px 10px; border-radius: 999px; background: var(--accent-soft); color: var(--accent); white-space: nowrap; }
.badge.loading { background: #fff4e5; color: #9a5b00; }
.badge.offline { background: var(--error-soft); color: var(--error); }
@media (prefers-color-scheme: dark) { .badge.loading { background: #3a2e14; color: #f5c26b; } }
main { flex: 1; padding-top: 16px; padding-bottom: 24px; }
.card { background: var(--card); border-radius: var(--radius); box-shadow: var(--shadow); border: 1px solid var(--line); overflow: hidden; }
.drop { position: relative; display: flex; flex-direction: column; align-items: center; justify-content: center; gap: 8px;
  min-height: 260px; margin: 16px; border: 2px dashed var(--line); border-radius: 12px; cursor: pointer; text-align: center;
  padding: 24px; transition: border-color .15s, background .15s; }
.drop:hover, .drop.over, .drop:focus-within { border-color: var(--accent); background: var(--accent-soft); }
.drop input { position: absolute; width: 1px; height: 1px; opacity: 0; pointer-events: none; }
.drop .icon { width: 48px; height: 48px; color: var(--accent); }
.drop strong { font-size: 1.05rem; }
.drop .hint { color: var(--muted); font-size: .88rem; }
.drop.has-image { padding: 0; min-height: 0; border-style: solid; border-color: var(--line); background: #0000000a; overflow: hidden; }
.drop.has-image .prompt { display: none; }
#preview { display: none; max-width: 100%; max-height: 60vh; object-fit: contain; }
.drop.has-image #preview { display: block; }
.spinner { position: absolute; inset: 0; display: none; align-items: center; justify-content: center; background: rgba(255,255,255,.45); }
@media (prefers-color-scheme: dark) { .spinner { background: rgba(0,0,0,.4); } }
.busy .spinner { display: flex; }
.spinner::after { content: ""; width: 44px; height: 44px; border-radius: 50%; border: 4px solid var(--accent-soft);
  border-top-color: var(--accent); animation: spin .8s linear infinite; }
@keyframes spin { to { transform: rotate(360deg); } }
@media (prefers-reduced-motion: reduce) { .spinner::after { animation-duration: 2.5s; } }
.result { padding: 4px 20px 20px; min-height: 72px; }
.caption { font-size: 1.3rem; font-weight: 600; margin: 0; line-height: 1.35; }
.caption::first-letter { text-transform: uppercase; }
.meta { color: var(--muted); font-size: .86rem; margin-top: 6px; font-variant-numeric: tabular-nums; }
.placeholder { color: var(--muted); margin: 0; }
.error { background: var(--error-soft); color: var(--error); border-radius: 10px; padding: 12px 14px; margin: 0; }
.controls { display: flex; align-items: center; gap: 10px; padding: 0 20px 16px; color: var(--muted); font-size: .9rem; flex-wrap: wrap; }
.controls select { font: inherit; color: var(--text); background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: 4px 8px; }
.controls .again { margin-left: auto; font: inherit; color: var(--accent); background: none; border: 1px solid var(--line);
  border-radius: 8px; padding: 5px 12px; cursor: pointer; }
.controls .again:hover { border-color: var(--accent); }
.coarse { display: none; }
@media (hover: none) and (pointer: coarse) { .fine { display: none; } .coarse { display: inline; } div.coarse { display: block; } }
footer { padding-bottom: 24px; color: var(--muted); font-size: .8rem; text-align: center; }
footer code { font-size: .78rem; }
#attention { margin-top: 12px; }
#attention .hint { color: var(--muted); font-size: .86rem; margin: 0 0 6px; }
${ATTENTION_VIEW_CSS}
@media (max-width: 480px) {
  header { padding-top: 20px; }
  h1 { font-size: 1.15rem; }
  .sub { display: none; }
  header, main, footer { padding-left: 12px; padding-right: 12px; }
  .drop { margin: 12px; min-height: 200px; }
  .caption { font-size: 1.15rem; }
}
</style>
</head>
<body>
<header>
  <img src="${FAVICON}" alt="">
  <div>
    <h1>${title}</h1>
    <p class="sub">Describe a photo in a sentence</p>
  </div>
  <span id="status" class="badge" role="status">connecting…</span>
</header>
<main>
  <div class="card">
    <label class="drop" id="drop">
      <input id="file" type="file" accept="image/*" aria-label="Choose an image">
      <div class="prompt">
        <svg class="icon" viewBox="0 0 24 24" fill="none" stroke="currentColor" stroke-width="1.6" stroke-linecap="round" stroke-linejoin="round" aria-hidden="true"><rect x="3" y="3" width="18" height="18" rx="3"/><circle cx="8.5" cy="8.5" r="1.8"/><path d="M21 15l-5-5L5 21"/></svg>
        <div><strong class="fine">Drop an image here</strong><strong class="coarse">Tap to choose a photo</strong></div>
        <div class="hint fine">or click to choose one · you can also paste</div>
        <div class="hint coarse">from your camera or your gallery</div>
      </div>
      <img id="preview" alt="Your image">
      <div class="spinner" aria-hidden="true"></div>
    </label>
    <div class="result" id="result" aria-live="polite">
      <p class="placeholder">The caption will appear here.</p>
    </div>
    <div class="controls">
      <label for="beam">Beam size</label>
      <select id="beam">${beamOptions}</select>
      <button class="again" id="again" type="button" hidden>Try another image</button>
    </div>
  </div>
</main>
<footer>Runs on this machine · images are not stored · API: <code>POST /api/caption</code></footer>
<script>
"use strict";
const SETTINGS = ${settings};
const $ = (id) => document.getElementById(id);
const drop = $("drop"), input = $("file"), preview = $("preview"), result = $("result"), statusEl = $("status");
const beamSel = $("beam"), again = $("again");
if (SETTINGS.defaultBeam) beamSel.options[0].textContent = "default (" + SETTINGS.defaultBeam + ")";
let objectUrl = null, current = null, seq = 0;

const mb = (n) => (n / 1048576).toFixed(n < 1048576 ? 2 : 0) + " MB";
function show(node) { result.replaceChildren(node); }
function text(tag, cls, s) { const e = document.createElement(tag); e.className = cls; e.textContent = s; return e; }
function showError(msg) { show(text("p", "error", msg)); }

function friendly(status, file) {
  switch (status) {
    case 413:
      // the server also answers 413 for an image with too many pixels, whatever its size in bytes
      return file && file.size <= SETTINGS.maxUploadBytes
        ? "That image has too many pixels for this server to read. Please scale it down or pick another one."
        : "That image is too big. Please pick one under " + mb(SETTINGS.maxUploadBytes) + ".";
    case 415: return "That file isn't an image we can read. Try " + SETTINGS.formats + ".";
    case 422: return "That image seems to be damaged, so we couldn't read it. Try another one.";
    case 503: return "The captioner is busy or still warming up. Please try again in a moment.";
    case 429: return "You are sending several images at once. Please wait for one to finish, then try again.";
    case 408: return "That upload took too long to arrive. Please check your connection and try again.";
    case 403: return "This server only takes uploads from its own page. Please open it at its own address.";
    case 400: return "Something about that upload didn't look right. Please try another image.";
    default: return "Sorry, something went wrong on our side (error " + status + "). Please try again.";
  }
}

async function caption(file) {
  if (!file) return;
  const mine = ++seq;
  if (current) current.abort();
  current = new AbortController();
  if (objectUrl) URL.revokeObjectURL(objectUrl);
  objectUrl = URL.createObjectURL(file);
  drop.classList.add("has-image");
  preview.src = objectUrl;
  again.hidden = false;
  if (file.size > SETTINGS.maxUploadBytes) { drop.classList.remove("busy"); showError(friendly(413, file)); return; }
  if (file.size === 0) { drop.classList.remove("busy"); showError("That file is empty. Please pick another image."); return; }
  drop.classList.add("busy");
  show(text("p", "placeholder", "Looking at your image…"));
  const form = new FormData();
  form.append("image", file, file.name || "image");
  if (beamSel.value) form.append("beam", beamSel.value);
  try {
    const res = await fetch("/api/caption", { method: "POST", body: form, signal: current.signal });
    let body = null;
    try { body = await res.json(); } catch (e) { body = null; }
    if (mine !== seq) return;
    if (!res.ok || !body) {
      const err = text("p", "error", friendly(res.status, file));
      if (body && body.error) err.title = body.error; // the server's own words, for whoever looks
      show(err);
      return;
    }
    const frag = document.createDocumentFragment();
    frag.append(text("p", "caption", body.caption));
    frag.append(text("div", "meta", "log-probability " + Number(body.logprob).toFixed(2) + " · " + Math.round(body.ms) + " ms"));
    const a = body.attention;
    if (a && window.captionerAttention && a.words.length) {
      try {
        const box = document.createElement("div");
        box.id = "attention";
        box.append(text("p", "hint", "Point at a word (or tap it) to see where the model looked for it."));
        box.append(window.captionerAttention.build({ image: objectUrl, alt: body.caption, words: a.words, attention: a.rows, grid: a.grid }));
        frag.append(box);
      } catch (e) { /* a malformed attention answer: the caption alone */ }
    }
    result.replaceChildren(frag);
  } catch (e) {
    if (mine !== seq || (e && e.name === "AbortError")) return;
    showError("We couldn't reach the captioner. Is the server still running?");
  } finally {
    if (mine === seq) drop.classList.remove("busy");
  }
}

let lastFile = null;
const pick = (f) => { if (f) { lastFile = f; caption(f); } };
preview.addEventListener("error", () => drop.classList.remove("has-image"));
input.addEventListener("change", () => { pick(input.files[0]); input.value = ""; });
again.addEventListener("click", () => input.click());
beamSel.addEventListener("change", () => { if (lastFile) caption(lastFile); });
for (const ev of ["dragenter", "dragover"]) drop.addEventListener(ev, (e) => { e.preventDefault(); drop.classList.add("over"); });
for (const ev of ["dragleave", "dragend"]) drop.addEventListener(ev, () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault(); drop.classList.remove("over");
  pick(e.dataTransfer && e.dataTransfer.files[0]);
});
document.addEventListener("paste", (e) => {
  const item = [...(e.clipboardData ? e.clipboardData.items : [])].find((i) => i.kind === "file");
  if (item) pick(item.getAsFile());
});

// Poll for as long as the page is open: the server may stop (or come back) at any time.
function badge(cls, label, title) { statusEl.className = "badge" + (cls ? " " + cls : ""); statusEl.textContent = label; statusEl.title = title; }
async function health() {
  let next = 2000;
  try {
    const h = await (await fetch("/api/health", { cache: "no-store" })).json();
    if (h.status === "ok") {
      badge("", h.model + " · " + String(h.backend).split(" (")[0], "model " + h.model + ", encoder " + h.encoder + ", backend " + h.backend);
      next = 10000;
    } else if (h.status === "loading") {
      badge("loading", "loading model…", "the server is loading the model");
    } else if (h.status === "error") {
      badge("offline", "model failed", h.error || "the model failed to load");
    } else {
      badge("offline", "disconnected", h.error || "the server is not answering normally");
    }
  } catch (e) {
    badge("offline", "disconnected", "the server does not answer; is it still running?");
  }
  setTimeout(health, next);
}
health();
</script>
<script>${ATTENTION_VIEW_SCRIPT}</script>
</body>
</html>
`;
}
