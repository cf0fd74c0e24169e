import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import sharp from 'sharp';
import { describe, expect, it } from 'vitest';
import { UsageError } from '../../src/errors.js';
import { demoTexts, imageName, makeScene } from '../../src/prep/demo-scene.js';
import { writeDemoDataset } from '../../src/prep/demo.js';
import { runCli } from '../helpers/cli.js';
import { nearestColour } from './demo-colours.js';

process.env.CAPTIONER_QUIET = '1';
const root = mkdtempSync(path.join(tmpdir(), 'demo-'));
const SEED = 11;
const N = 12;

describe('writeDemoDataset', () => {
  const out = path.join(root, 'a');

  it('writes images, Flickr8k captions, split files and demo.json', async () => {
    const res = await writeDemoDataset({ out, images: N, seed: SEED, size: 160 });
    expect(res.rendered).toBe(true);
    expect(res.manifest).toMatchObject({ seed: SEED, images: N, size: 160, split: { train: 10, val: 1, test: 1 } });
    expect(readdirSync(path.join(out, 'images')).sort()).toEqual(Array.from({ length: N }, (_, i) => imageName(i)));
    expect(readFileSync(path.join(out, 'captions.txt'), 'utf8').trimEnd().split('\n')).toHaveLength(N * 5);
    const listed = ['trainImages', 'valImages', 'testImages'].flatMap((f) =>
      readFileSync(path.join(out, `${f}.txt`), 'utf8')
        .trimEnd()
        .split('\n'),
    );
    expect(listed.sort()).toEqual(Array.from({ length: N }, (_, i) => imageName(i)));
    expect(JSON.parse(readFileSync(path.join(out, 'demo.json'), 'utf8')).seed).toBe(SEED);
    expect(readdirSync(path.join(out, 'images')).filter((f) => f.endsWith('.tmp'))).toEqual([]);
  });

  it('draws each shape in the colour its captions name', async () => {
    const captions = readFileSync(path.join(out, 'captions.txt'), 'utf8').trimEnd().split('\n');
    for (let i = 0; i < N; i++) {
      const { data, info } = await sharp(path.join(out, 'images', imageName(i)))
        .raw()
        .toBuffer({ resolveWithObject: true });
      expect([info.width, info.height, info.channels]).toEqual([160, 160, 3]);
      const px = (x: number, y: number) => {
        const o = (Math.round(y) * info.width + Math.round(x)) * info.channels;
        return [data[o], data[o + 1], data[o + 2]];
      };
      const mine = captions.filter((l) => l.startsWith(imageName(i) + '#')).map((l) => l.split('\t')[1]);
      expect(mine).toHaveLength(5);
      for (const sh of makeScene(SEED, i).shapes) {
        const colour = nearestColour(px(sh.cx * 160, sh.cy * 160));
        expect(colour).toBe(sh.colour);
        for (const c of mine) expect(c.split(' ')).toContain(colour);
      }
      // corners are background: light and unsaturated
      for (const [x, y] of [
        [1, 1],
        [158, 1],
        [1, 158],
        [158, 158],
      ]) {
        const p = px(x, y);
        expect(Math.min(...p)).toBeGreaterThan(170);
        expect(Math.max(...p) - Math.min(...p)).toBeLessThan(40);
      }
    }
  });

  it('reproduces byte-identical files from the same seed', async () => {
    const other = path.join(root, 'b');
    await writeDemoDataset({ out: other, images: N, seed: SEED, size: 160, concurrency: 1 });
    for (const f of ['captions.txt', 'trainImages.txt', 'valImages.txt', 'testImages.txt', 'demo.json']) {
      expect(readFileSync(path.join(other, f)), f).toEqual(readFileSync(path.join(out, f)));
    }
    for (let i = 0; i < N; i++) {
      expect(
        readFileSync(path.join(other, 'images', imageName(i))).equals(
          readFileSync(path.join(out, 'images', imageName(i))),
        ),
      ).toBe(true);
    }
  });

  it('skips a complete dataset with the same parameters and redoes a changed one', async () => {
    const img = path.join(out, 'images', imageName(0));
    const before = statSync(img).mtimeMs;
    const again = await writeDemoDataset({ out, images: N, seed: SEED, size: 160 });
    expect(again.rendered).toBe(false);
    expect(statSync(img).mtimeMs).toBe(before);

    const fewer = await writeDemoDataset({ out, images: 4, seed: SEED, size: 160 });
    expect(fewer.rendered).toBe(true);
    expect(readdirSync(path.join(out, 'images')).sort()).toEqual([0, 1, 2, 3].map(imageName));
    expect(readFileSync(path.join(out, 'captions.txt'), 'utf8').trimEnd().split('\n')).toHaveLength(20);
  });

  it('re-renders when an image is missing', async () => {
    const dir = path.join(root, 'c');
    await writeDemoDataset({ out: dir, images: 3, seed: 1, size: 64 });
    rmSync(path.join(dir, 'images', imageName(1)));
    expect((await writeDemoDataset({ out: dir, images: 3, seed: 1, size: 64 })).rendered).toBe(true);
    expect(existsSync(path.join(dir, 'images', imageName(1)))).toBe(true);
  });

  it('refuses to overwrite a folder that holds other captions unless forced', async () => {
    const dir = path.join(root, 'foreign');
    mkdirSync(dir);
    writeFileSync(path.join(dir, 'captions.txt'), 'x.jpg#0\ta dog\n');
    await expect(writeDemoDataset({ out: dir, images: 2, size: 64 })).rejects.toThrow(UsageError);
    expect(readFileSync(path.join(dir, 'captions.txt'), 'utf8')).toBe('x.jpg#0\ta dog\n');
    expect((await writeDemoDataset({ out: dir, images: 2, size: 64, force: true })).rendered).toBe(true);
  });

  it("refuses an --out that is a file or another stage's folder, untouched (it crashed with a stack trace on a file)", async () => {
    const file = path.join(root, 'a-file');
    writeFileSync(file, 'keep');
    await expect(writeDemoDataset({ out: file, images: 2, size: 64 })).rejects.toThrow(
      `${file}: is a file, not a folder; choose another folder with --out`,
    );
    expect(readFileSync(file, 'utf8')).toBe('keep');
    const prepared = path.join(root, 'prepared');
    mkdirSync(prepared);
    writeFileSync(path.join(prepared, 'manifest.json'), '{"kind":"captioner.prepared"}');
    await expect(writeDemoDataset({ out: prepared, images: 2, size: 64, force: true })).rejects.toThrow(
      /holds a prepared dataset, not a demo dataset/,
    );
    expect(readdirSync(prepared)).toEqual(['manifest.json']);
    const r = await runCli(['demo-data', '--out', file, '--images', '2']);
    expect(r.stderr).toBe(`error: ${file}: is a file, not a folder; choose another folder with --out\n`);
    expect(r.code).toBe(2);
  });

  it('rejects bad parameters', async () => {
    await expect(writeDemoDataset({ out: path.join(root, 'bad'), images: 0 })).rejects.toThrow(/--images/);
    await expect(writeDemoDataset({ out: path.join(root, 'bad'), size: 8 })).rejects.toThrow(/--size/);
    await expect(writeDemoDataset({ out: path.join(root, 'bad'), seed: -1 })).rejects.toThrow(/--seed/);
  });
});

describe('writeDemoDataset with multi scenes', () => {
  const out = path.join(root, 'multi');

  it('writes a Flickr8k-format dataset whose pictures hold the shapes the scenes say, and records the kind', async () => {
    const res = await writeDemoDataset({ out, images: N, seed: SEED, size: 160, scenes: 'multi' });
    expect(res.rendered).toBe(true);
    expect(res.manifest).toMatchObject({
      scenes: 'multi',
      seed: SEED,
      images: N,
      split: { train: 10, val: 1, test: 1 },
    });
    const captions = readFileSync(path.join(out, 'captions.txt'), 'utf8').trimEnd().split('\n');
    expect(captions).toHaveLength(N * 5);
    for (const l of captions) expect(l).toMatch(/^demo_\d{5}\.jpg#[0-4]\t[a-z ]+$/);
    expect(captions.join('\n')).toBe(demoTexts(SEED, N, 'multi').captions.trimEnd());
    for (let i = 0; i < N; i++) {
      const { data, info } = await sharp(path.join(out, 'images', imageName(i)))
        .raw()
        .toBuffer({ resolveWithObject: true });
      const scene = makeScene(SEED, i, 'multi');
      expect(scene.shapes.length).toBeGreaterThanOrEqual(2);
      for (const sh of scene.shapes) {
        const o = (Math.round(sh.cy * 160) * info.width + Math.round(sh.cx * 160)) * info.channels;
        expect(nearestColour([data[o], data[o + 1], data[o + 2]])).toBe(sh.colour);
      }
    }
  });

  it('reproduces byte-identical files from the same seed', async () => {
    const other = path.join(root, 'multi2');
    await writeDemoDataset({ out: other, images: N, seed: SEED, size: 160, scenes: 'multi', concurrency: 1 });
    for (const f of ['captions.txt', 'trainImages.txt', 'valImages.txt', 'testImages.txt', 'demo.json'])
      expect(readFileSync(path.join(other, f)), f).toEqual(readFileSync(path.join(out, f)));
    for (let i = 0; i < N; i++)
      expect(
        readFileSync(path.join(other, 'images', imageName(i))).equals(
          readFileSync(path.join(out, 'images', imageName(i))),
        ),
      ).toBe(true);
  });

  it('never reuses a dataset of the other kind: switching kinds re-renders every image', async () => {
    const dir = path.join(root, 'switch');
    await writeDemoDataset({ out: dir, images: 4, seed: 2, size: 64 });
    const single = readFileSync(path.join(dir, 'images', imageName(0)));
    const multi = await writeDemoDataset({ out: dir, images: 4, seed: 2, size: 64, scenes: 'multi' });
    expect(multi.rendered).toBe(true);
    expect(readFileSync(path.join(dir, 'images', imageName(0))).equals(single)).toBe(false);
    expect(readFileSync(path.join(dir, 'captions.txt'), 'utf8')).toBe(demoTexts(2, 4, 'multi').captions);
    expect((await writeDemoDataset({ out: dir, images: 4, seed: 2, size: 64, scenes: 'multi' })).rendered).toBe(false);
    expect((await writeDemoDataset({ out: dir, images: 4, seed: 2, size: 64 })).rendered).toBe(true);
    expect(readFileSync(path.join(dir, 'images', imageName(0))).equals(single)).toBe(true);
  });

  it('reads a demo.json written before scene kinds as single', async () => {
    const dir = path.join(root, 'old');
    await writeDemoDataset({ out: dir, images: 3, seed: 2, size: 64 });
    const file = path.join(dir, 'demo.json');
    const { scenes, ...old } = JSON.parse(readFileSync(file, 'utf8'));
    expect(scenes).toBe('single');
    writeFileSync(file, JSON.stringify(old));
    expect((await writeDemoDataset({ out: dir, images: 3, seed: 2, size: 64 })).rendered).toBe(false);
    expect((await writeDemoDataset({ out: dir, images: 3, seed: 2, size: 64, scenes: 'multi' })).rendered).toBe(true);
  });

  it('rejects an unknown kind', async () => {
    await expect(writeDemoDataset({ out: path.join(root, 'bad'), scenes: 'many' as never })).rejects.toThrow(
      /--scenes must be one of single, multi/,
    );
  });
});

describe('captioner demo-data', () => {
  it('renders a dataset and prints a JSON summary', async () => {
    const dir = path.join(root, 'cli');
    const r = await runCli(['demo-data', '--out', dir, '--images', '5', '--seed', '3', '--size', '96', '--json']);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({
      images: 5,
      seed: 3,
      size: 96,
      rendered: true,
      captionsFile: path.join(dir, 'captions.txt'),
    });
    expect(readdirSync(path.join(dir, 'images'))).toHaveLength(5);
  });

  it('--scenes multi writes a multi-shape dataset', async () => {
    const dir = path.join(root, 'cli-multi');
    const r = await runCli([
      'demo-data',
      '--out',
      dir,
      '--images',
      '5',
      '--seed',
      '3',
      '--size',
      '96',
      '--scenes',
      'multi',
      '--json',
    ]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ images: 5, scenes: 'multi', rendered: true });
    expect(readFileSync(path.join(dir, 'captions.txt'), 'utf8')).toBe(demoTexts(3, 5, 'multi').captions);
    expect(readdirSync(path.join(dir, 'images'))).toHaveLength(5);
    // back to single in the same folder: same names, other pictures, so it warns about feature caches
    const back = await runCli(['demo-data', '--out', dir, '--images', '5', '--seed', '3', '--size', '96']);
    expect(back.code).toBe(0);
    expect(back.stderr).toMatch(
      /^warning: .*held multi images .* replaced by single images .*recompute any feature cache/,
    );
    expect(readFileSync(path.join(dir, 'captions.txt'), 'utf8')).toBe(demoTexts(3, 5).captions);
  });

  it('--scenes bogus is a usage error that names the choices', async () => {
    const dir = path.join(root, 'cli-bogus');
    const r = await runCli(['demo-data', '--out', dir, '--images', '2', '--scenes', 'bogus']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/--scenes.*'bogus' is invalid.*single, multi/);
    expect(r.stderr).not.toMatch(/\bat .*\.js:\d+/);
    expect(existsSync(dir)).toBe(false);
  });

  it('exits 2 on bad flags', async () => {
    expect((await runCli(['demo-data', '--out', path.join(root, 'x'), '--images', 'many'])).code).toBe(2);
    expect((await runCli(['demo-data', '--out', path.join(root, 'x'), '--images', '0'])).code).toBe(2);
  });
});
