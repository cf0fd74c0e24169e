// Real caption files from ../shared/data (skipped loudly when absent).
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config/load.js';
import { parseCaptionCsv, parseCoco, parseFlickr30kCsv, parseFlickr8k, parseKarpathy } from '../../src/prep/formats.js';
import { loadPrepared } from '../../src/prep/prepared.js';
import { runPrep } from '../../src/prep/run.js';
import { announceSkip, hasShared, sharedData } from '../helpers/shared.js';
import { quietly } from '../helpers/quiet.js';

announceSkip('prep real-data tests');
process.env.CAPTIONER_QUIET = '1';
const data = (...p: string[]) => path.join(sharedData, ...p);
const text = (...p: string[]) => readFileSync(data(...p), 'utf8');
const out = mkdtempSync(path.join(tmpdir(), 'prep-real-'));

describe.skipIf(!hasShared)('real caption files', () => {
  it('Flickr8k token file: 8,092 keys, 40,460 captions', () => {
    const p = parseFlickr8k(text('flickr8k', 'Flickr8k.token.txt'), 'Flickr8k.token.txt');
    expect(p.images.length).toBe(8092);
    expect(p.captions).toBe(40460);
    expect(p.images.some((i) => i.image === '2258277193_586949ec62.jpg.1')).toBe(true);
  });

  it('Flickr8k with its split files: 6,000 / 1,000 / 1,000; the quirk key is in no split', async () => {
    const f = (n: string) => data('flickr8k', n);
    const { config } = await loadConfig({
      overrides: {
        dataset: {
          format: 'flickr8k',
          captions: f('Flickr8k.token.txt'),
          split: {
            trainFile: f('Flickr_8k.trainImages.txt'),
            valFile: f('Flickr_8k.devImages.txt'),
            testFile: f('Flickr_8k.testImages.txt'),
          },
        },
        prep: { out: path.join(out, 'f8k') },
      },
    });
    const { manifest, dir } = await quietly(() => runPrep(config));
    expect(manifest.counts).toEqual({
      train: { images: 6000, captions: 30000 },
      val: { images: 1000, captions: 5000 },
      test: { images: 1000, captions: 5000 },
    });
    expect(manifest.noSplit.count).toBe(92);
    expect(manifest.dropped.noSplitCaptions).toBe(460);
    const p = await loadPrepared(dir);
    const all = [...p.splits.train, ...p.splits.val, ...p.splits.test].map((i) => i.image);
    expect(all).not.toContain('2258277193_586949ec62.jpg.1');
    expect(p.vocab.tokens.slice(0, 5)).toEqual(['<pad>', '<unk>', 'startseq', 'endseq', 'a']);
    expect(p.splits.train[0].image).toBe('1000268201_693b08cb0e.jpg');
  });

  it('COCO val2017 captions: 5,000 images, 25,014 captions', () => {
    const p = parseCoco(text('coco', 'captions_val2017.json'), 'captions_val2017.json', 'val');
    expect(p.images.length).toBe(5000);
    expect(p.captions).toBe(25014);
  });

  it('Karpathy sample and Flickr30k CSV head parse', () => {
    const k = parseKarpathy(text('karpathy', 'dataset_flickr8k_first15_sample.json'), 'k.json');
    expect(k.images.length).toBe(15);
    expect(k.captions).toBe(75);
    expect(k.images[0]).toMatchObject({ image: '2513260012_03d33305cf.jpg', split: 'train' });
    const f = parseFlickr30kCsv(text('flickr30k', 'results_csv_head_nishankparashar.csv'), 'results.csv');
    expect(f.images[0].image).toBe('10082347.jpg');
    expect(f.captions).toBeGreaterThanOrEqual(5);
    expect(f.images[0].captions[0]).toBe(
      'Young blond man in a blue and yellow jacket smiling while standing in front of a net .',
    );
  });

  it('the 30 real COCO photos: csv and coco captions agree, no image missing', async () => {
    const images = data('images', 'coco_val2017');
    const csv = parseCaptionCsv(text('images', 'coco_val2017', 'captions.txt'), 'captions.txt');
    expect(csv.images.length).toBe(30);
    for (const [format, captions] of [
      ['csv', 'captions.txt'],
      ['coco', 'captions.json'],
    ] as const) {
      const { config } = await loadConfig({
        overrides: {
          dataset: { format, captions: path.join(images, captions), images },
          prep: { out: path.join(out, format), minCount: 1, strict: true },
        },
      });
      const { manifest } = await runPrep(config);
      expect(manifest.missingImages.count).toBe(0);
      expect(manifest.counts.train.images + manifest.counts.val.images + manifest.counts.test.images).toBe(30);
    }
  });
});
