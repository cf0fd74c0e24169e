// Makes docs/attention-map.png, the README's picture of an attention map. The photo is real: COCO val2017
// 000000126107.jpg (from ../shared/data/images/coco_val2017; Flickr photo 100911501, CC BY 2.0 per COCO's
// captions.json). The caption and the attention are ILLUSTRATIVE, written by hand below (Gaussian bumps
// placed on the gull, its wings, the sea and the beach), not the output of a trained model. Replace the picture with a real map once a
// trained attention model exists: `captioner caption photo.jpg --attention-maps DIR`.
// Run after `npm run build`: node scripts/attention-example.mjs
import { readFileSync, writeFileSync } from 'node:fs';
import sharp from 'sharp';
import { renderAttentionMap } from '../dist/view/attention-map.js';

const photo = new URL('../../shared/data/images/coco_val2017/000000126107.jpg', import.meta.url);
const [H, W] = [14, 14];
/** Sum of Gaussian bumps [row, col, sigma, weight] on the 14x14 grid, plus a little fixed noise, summing to 1. */
function attention(bumps, seed) {
  let s = seed;
  const noise = () => ((s = (s * 1103515245 + 12345) % 2147483648) / 2147483648) * 0.04;
  const row = Array.from({ length: H * W }, (_, i) => {
    const [y, x] = [Math.floor(i / W), i % W];
    return bumps.reduce((a, [cy, cx, sg, w]) => a + w * Math.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * sg * sg)), 0) + noise();
  });
  const sum = row.reduce((a, b) => a + b, 0);
  return Float32Array.from(row, (v) => v / sum);
}
const words = ['a', 'white', 'bird', 'flying', 'over', 'a', 'beach'];
const rows = [
  [[6, 7, 4.5, 1]],
  [[6, 9, 1.4, 1], [3, 8, 1.5, 0.4]],
  [[6, 9.5, 1.3, 1], [6.3, 10.3, 1, 0.6], [2.5, 7, 1.5, 0.5], [2.5, 12, 1.5, 0.4]],
  [[1.5, 6, 1.5, 1], [3, 12.5, 1.5, 0.9], [5, 9, 1.5, 0.5]],
  [[8.5, 8, 2.5, 1], [6, 9, 1.5, 0.4]],
  [[10, 7, 4, 1]],
  [[12.5, 4, 2, 1], [12.5, 10, 2, 1], [10.5, 7, 1.5, 0.4]],
].map((b, i) => attention(b, i + 1));
const png = await renderAttentionMap({ image: readFileSync(photo), words, attention: rows, grid: [H, W], cell: 200, columns: 4 });
// palette PNG: a fraction of the size, good enough for a README picture
const small = await sharp(png).png({ palette: true, colours: 192, quality: 90, compressionLevel: 9 }).toBuffer();
writeFileSync(new URL('../docs/attention-map.png', import.meta.url), small);
console.log(`docs/attention-map.png: ${small.length} bytes`);
