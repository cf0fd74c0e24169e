// results.json on real data (../shared/data; skipped loudly when absent): for a set prepared from the
// official COCO val2017 captions, every results entry is named by an integer id of the annotation file
// (the check pycocotools' COCO.loadRes makes: set(image_ids) <= set(coco.getImgIds())), and
// `captioner score` reads such a file against that annotation file; Flickr data keeps file names.
// (The CLI is spawned from dist/: run `npx tsc -p .` first.)
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config/load.js';
import { cocoResults } from '../../src/eval/report.js';
import { corpusOnly, scoreCaptions } from '../../src/eval/score.js';
import { loadPrepared, type PreparedImage } from '../../src/prep/prepared.js';
import { runPrep } from '../../src/prep/run.js';
import { runCli } from '../helpers/cli.js';
import { quietly } from '../helpers/quiet.js';
import { announceSkip, hasShared, sharedData } from '../helpers/shared.js';

announceSkip('COCO results tests on real data');
process.env.CAPTIONER_QUIET = '1';
const out = mkdtempSync(path.join(tmpdir(), 'coco-results-'));
const annFile = path.join(sharedData, 'coco', 'captions_val2017.json');

/** What eval writes for these images: caption = the first reference, standing in for a model's. */
const resultsFor = (images: PreparedImage[]) =>
  cocoResults(
    images.map((im) => ({ image: im.image, caption: im.captions[0] })),
    images,
  );

async function prep(name: string, dataset: Record<string, unknown>) {
  const { config } = await loadConfig({ overrides: { dataset, prep: { out: path.join(out, name) } } });
  const { dir } = await quietly(() => runPrep(config));
  return loadPrepared(dir);
}

describe.skipIf(!hasShared)('results.json ids on real data', () => {
  it('COCO val2017: integer ids, all in the annotation file (loadRes check); score reads them', async () => {
    const p = await prep('coco', {
      format: 'coco',
      captions: annFile,
      split: { ratios: { train: 0.8, val: 0.1, test: 0.1 }, seed: 1 },
    });
    const test = p.splits.test;
    expect(test.length).toBeGreaterThan(400);
    const results = resultsFor(test);
    const ann = JSON.parse(readFileSync(annFile, 'utf8')) as { images: { id: number; file_name: string }[] };
    const imgIds = new Set(ann.images.map((i) => i.id));
    for (const r of results) expect(Number.isInteger(r.image_id)).toBe(true);
    expect(results.filter((r) => !imgIds.has(r.image_id as number))).toEqual([]); // set(image_ids) <= set(getImgIds())
    // and each id is the image's own
    const nameOf = new Map(ann.images.map((i) => [i.id, i.file_name]));
    expect(test.every((im) => nameOf.get(im.cocoId as number) === im.image)).toBe(true);

    const file = path.join(out, 'results.json');
    writeFileSync(file, JSON.stringify(results) + '\n');
    const r = await runCli(['score', '--candidates', file, '--references', annFile, '--json']);
    expect(r.code, r.stderr).toBe(0);
    const want = corpusOnly(
      scoreCaptions(
        test.map((im) => ({ id: String(im.cocoId), candidate: im.captions[0], references: im.captions })),
        'basic',
      ),
    );
    expect(JSON.parse(r.stdout)).toEqual(want);
    // the prepared folder as references: matched by its recorded ids
    const r2 = await runCli(['score', '--candidates', file, '--references', p.dir, '--json']);
    expect(r2.code, r2.stderr).toBe(0);
    expect(JSON.parse(r2.stdout).images).toBe(test.length);
  });

  it('Karpathy Flickr8k sample and the Flickr8k token file: file names', async () => {
    const k = await prep('karpathy', {
      format: 'karpathy',
      captions: path.join(sharedData, 'karpathy', 'dataset_flickr8k_first15_sample.json'),
    });
    const all = [...k.splits.train, ...k.splits.val, ...k.splits.test];
    expect(all.length).toBe(15);
    expect(resultsFor(all).map((r) => r.image_id)).toEqual(all.map((im) => im.image));
    expect(all.every((im) => im.cocoId === undefined)).toBe(true);

    const f = (n: string) => path.join(sharedData, 'flickr8k', n);
    const f8 = await prep('f8k', {
      format: 'flickr8k',
      captions: f('Flickr8k.token.txt'),
      split: {
        trainFile: f('Flickr_8k.trainImages.txt'),
        valFile: f('Flickr_8k.devImages.txt'),
        testFile: f('Flickr_8k.testImages.txt'),
      },
    });
    const res = resultsFor(f8.splits.test);
    expect(res).toHaveLength(1000);
    expect(res.every((r) => typeof r.image_id === 'string' && r.image_id.endsWith('.jpg'))).toBe(true);
  });
});
