// loss.svg: training and validation loss per epoch as a small, self-contained SVG line chart (pure).

import { escapeXml } from '../util/html.js';

export interface ChartSeries {
  label: string;
  color: string;
  points: { x: number; y: number }[];
}

/** "Nice" tick values covering [lo, hi]. */
export function ticks(lo: number, hi: number, count = 5): number[] {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / count;
  const mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw) ?? raw;
  const out: number[] = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(Number(v.toFixed(10)));
  return out;
}

export function lossChart(
  series: ChartSeries[],
  title = 'Loss per epoch',
  xLabel = 'epoch',
  yLabel = 'cross-entropy',
): string {
  const W = 640,
    H = 380,
    L = 70,
    R = 150,
    T = 40,
    B = 50;
  const pts = series.flatMap((s) => s.points).filter((p) => Number.isFinite(p.y));
  const xs = pts.map((p) => p.x);
  const ys = pts.map((p) => p.y);
  let x0 = xs.length ? Math.min(...xs) : 0,
    x1 = xs.length ? Math.max(...xs) : 1;
  let y0 = ys.length ? Math.min(...ys) : 0,
    y1 = ys.length ? Math.max(...ys) : 1;
  if (x1 === x0) x1 = x0 + 1;
  if (y1 === y0) {
    y0 -= 0.5;
    y1 += 0.5;
  }
  const pad = (y1 - y0) * 0.05;
  y0 = Math.max(0, y0 - pad);
  y1 += pad;
  const sx = (x: number) => L + ((x - x0) / (x1 - x0)) * (W - L - R);
  const sy = (y: number) => H - B - ((y - y0) / (y1 - y0)) * (H - T - B);
  const f = (v: number) => v.toFixed(1);
  const parts: string[] = [];
  parts.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`,
  );
  parts.push(`<rect width="${W}" height="${H}" fill="white"/>`);
  parts.push(
    `<text x="${W / 2 - R / 2 + L / 2}" y="22" text-anchor="middle" font-size="15">${escapeXml(title)}</text>`,
  );
  for (const v of ticks(y0, y1)) {
    parts.push(`<line x1="${L}" x2="${W - R}" y1="${f(sy(v))}" y2="${f(sy(v))}" stroke="#e4e4e4"/>`);
    parts.push(`<text x="${L - 6}" y="${f(sy(v) + 4)}" text-anchor="end">${v}</text>`);
  }
  const xt = ticks(x0, x1, Math.min(10, Math.max(1, Math.round(x1 - x0)))).filter((v) => Number.isInteger(v));
  for (const v of xt) parts.push(`<text x="${f(sx(v))}" y="${H - B + 18}" text-anchor="middle">${v}</text>`);
  parts.push(`<line x1="${L}" x2="${W - R}" y1="${H - B}" y2="${H - B}" stroke="#333"/>`);
  parts.push(`<line x1="${L}" x2="${L}" y1="${T}" y2="${H - B}" stroke="#333"/>`);
  parts.push(`<text x="${(L + W - R) / 2}" y="${H - 12}" text-anchor="middle">${escapeXml(xLabel)}</text>`);
  parts.push(
    `<text transform="translate(18 ${(T + H - B) / 2}) rotate(-90)" text-anchor="middle">${escapeXml(yLabel)}</text>`,
  );
  series.forEach((s, i) => {
    const p = s.points.filter((q) => Number.isFinite(q.y));
    if (p.length) {
      parts.push(
        `<polyline fill="none" stroke="${s.color}" stroke-width="2" points="${p.map((q) => `${f(sx(q.x))},${f(sy(q.y))}`).join(' ')}"/>`,
      );
      for (const q of p)
        parts.push(
          `<circle cx="${f(sx(q.x))}" cy="${f(sy(q.y))}" r="3" fill="${s.color}"><title>${escapeXml(s.label)} ${q.x}: ${q.y.toFixed(4)}</title></circle>`,
        );
    }
    const ly = T + 10 + i * 20;
    parts.push(
      `<line x1="${W - R + 15}" x2="${W - R + 40}" y1="${ly}" y2="${ly}" stroke="${s.color}" stroke-width="2"/>`,
    );
    parts.push(`<text x="${W - R + 46}" y="${ly + 4}">${escapeXml(s.label)}</text>`);
  });
  parts.push('</svg>');
  return parts.join('\n') + '\n';
}
