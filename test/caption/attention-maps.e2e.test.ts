// `captioner caption --attention-maps DIR` (issue #13), through the CLI: an untrained attention run over a
// tiny ONNX grid encoder writes one PNG per captioned image (unique names for same-named photos in
// different folders), names it in the JSON line, keeps working with --resume; a merge run is refused (exit 2)
// before any work.
import { promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { attentionMapLayout } from '../../src/view/attention-map.js';
import { attentionMapName } from '../../src/caption/run.js';
import { runCli } from '../helpers/cli.js';
import { imageFile, makeAttentionRun, makeRun } from './fixtures.js';

let dir: string;
let imgs: string;
let attention: string;
let merge: string;
const cpu = ['--set', 'backend=cpu', '--set', 'threads=1'];

interface Line {
  image: string;
  caption?: string;
  error?: string;
  attention?: string;
}
const lines = (text: string): Line[] =>
  text
    .trim()
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as Line);

beforeAll(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), 'captioner-attention-maps-'));
  imgs = path.join(dir, 'imgs');
  await imageFile(path.join(imgs, 'a', 'photo.jpg'), 1, 'jpeg', 40);
  await imageFile(path.join(imgs, 'b', 'photo.jpg'), 2, 'jpeg', 40);
  await imageFile(path.join(imgs, 'c.png'), 3, 'png', 40);
  await fs.writeFile(path.join(imgs, 'broken.jpg'), 'not an image');
  ({ run: attention } = await makeAttentionRun(path.join(dir, 'att')));
  ({ run: merge } = await makeRun(path.join(dir, 'merge')));
});

afterAll(async () => {
  await fs.rm(dir, { recursive: true, force: true });
});

async function checkMap(l: Line): Promise<void> {
  expect(l.caption, JSON.stringify(l)).toBeTypeOf('string');
  expect(l.attention).toBe(path.join(dir, 'maps', attentionMapName(l.image)));
  const png = await fs.readFile(l.attention!);
  expect(png.subarray(0, 8).equals(Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]))).toBe(true);
  const meta = await sharp(png).metadata();
  const words = l.caption!.split(' ').filter(Boolean).length;
  const layout = attentionMapLayout({ width: 40, height: 40 }, words); // the photo, then one panel per word
  expect(meta.format).toBe('png');
  expect([meta.width, meta.height]).toEqual([layout.width, layout.height]);
}

describe('caption --attention-maps', () => {
  it('writes one PNG per captioned image, named in the JSON line; same-named photos get different maps', async () => {
    const maps = path.join(dir, 'maps');
    const r = await runCli(['caption', imgs, '--model', attention, '--attention-maps', maps, ...cpu]);
    expect(r.code, r.stderr).toBe(3); // broken.jpg
    const out = lines(r.stdout);
    expect(out).toHaveLength(4);
    const ok = out.filter((l) => !l.error);
    expect(ok).toHaveLength(3);
    for (const l of ok) await checkMap(l);
    expect(new Set(ok.map((l) => l.attention)).size).toBe(3);
    const broken = out.find((l) => l.image.endsWith('broken.jpg'))!;
    expect(broken.error).toBeTypeOf('string');
    expect(broken.attention).toBeUndefined();
    const files = (await fs.readdir(maps)).sort();
    expect(files[0]).toBe('.captioner-output'); // marks the folder: scans pass over it
    files.shift();
    expect(files).toHaveLength(3); // no temp files left, nothing for the broken image
    expect(files.filter((f) => f.startsWith('photo-'))).toHaveLength(2);
  });

  it('--resume captions (and maps) only the images not done yet', async () => {
    const maps = path.join(dir, 'maps2');
    const output = path.join(dir, 'out.jsonl');
    const first = await runCli([
      'caption',
      path.join(imgs, 'a', 'photo.jpg'),
      '--model',
      attention,
      '--attention-maps',
      maps,
      '--output',
      output,
      ...cpu,
    ]);
    expect(first.code, first.stderr).toBe(0);
    const pngs = async () => (await fs.readdir(maps)).filter((f) => f.endsWith('.png'));
    expect(await pngs()).toHaveLength(1);
    const second = await runCli([
      'caption',
      path.join(imgs, 'a', 'photo.jpg'),
      path.join(imgs, 'b', 'photo.jpg'),
      path.join(imgs, 'c.png'),
      '--model',
      attention,
      '--attention-maps',
      maps,
      '--output',
      output,
      '--resume',
      ...cpu,
    ]);
    expect(second.code, second.stderr).toBe(0);
    const out = lines(await fs.readFile(output, 'utf8'));
    expect(out.map((l) => path.basename(l.image))).toEqual(['photo.jpg', 'photo.jpg', 'c.png']);
    for (const l of out) {
      expect(l.attention).toBe(path.join(maps, attentionMapName(l.image)));
      await fs.access(l.attention!);
    }
    expect(await pngs()).toHaveLength(3);
  });

  it('a merge model with --attention-maps: exit 2 before any work (no output, no folder)', async () => {
    const maps = path.join(dir, 'maps-merge');
    const output = path.join(dir, 'merge.jsonl');
    const r = await runCli(['caption', imgs, '--model', merge, '--attention-maps', maps, '--output', output, ...cpu]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/^error: --attention-maps: .* is a merge model, .*model\.type attention/);
    expect(r.stderr).not.toMatch(/\n\s+at /);
    expect(r.stdout).toBe('');
    await expect(fs.access(maps)).rejects.toThrow();
    await expect(fs.access(output)).rejects.toThrow();
  });

  it('--attention-maps naming a file: exit 2, the file untouched; with --format text the maps are still written', async () => {
    const file = path.join(dir, 'not-a-folder');
    await fs.writeFile(file, 'keep me');
    const r = await runCli([
      'caption',
      path.join(imgs, 'c.png'),
      '--model',
      attention,
      '--attention-maps',
      file,
      ...cpu,
    ]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/^error: --attention-maps .*not-a-folder: is not a folder/);
    expect(await fs.readFile(file, 'utf8')).toBe('keep me');
    const maps = path.join(dir, 'maps-text');
    const t = await runCli([
      'caption',
      path.join(imgs, 'c.png'),
      '--model',
      attention,
      '--attention-maps',
      maps,
      '--format',
      'text',
      ...cpu,
    ]);
    expect(t.code, t.stderr).toBe(0);
    expect(t.stdout).toMatch(/c\.png\t/);
    expect((await fs.readdir(maps)).sort()).toEqual(['.captioner-output', attentionMapName(path.join(imgs, 'c.png'))]);
  });

  it('map names: base name and a hash of the absolute path', () => {
    expect(attentionMapName('/x/a/photo.jpg')).toMatch(/^photo-[0-9a-f]{10}\.png$/);
    expect(attentionMapName('/x/a/photo.jpg')).not.toBe(attentionMapName('/x/b/photo.jpg'));
    expect(attentionMapName('/x/a/photo.jpg')).toBe(attentionMapName('/x/a/../a/photo.jpg'));
    expect(attentionMapName('/x/we ird/<a>?.jpg')).toMatch(/^_a_-[0-9a-f]{10}\.png$/);
  });
});
