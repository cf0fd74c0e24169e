// COCO image ids through prep: read from COCO files (images[].id) and Karpathy COCO files (cocoid),
// absent for Flickr; recorded per image in the split files; left out of the fingerprint; sets written
// before ids existed still load.
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config/load.js';
import { DataError } from '../../src/errors.js';
import { parseCoco, parseFlickr8k, parseKarpathy } from '../../src/prep/formats.js';
import {
  fingerprintOf,
  loadPrepared,
  parseSplitFile,
  serializeSplit,
  type PreparedImage,
} from '../../src/prep/prepared.js';
import { runPrep } from '../../src/prep/run.js';
import { quietly } from '../helpers/quiet.js';

process.env.CAPTIONER_QUIET = '1';
const root = mkdtempSync(path.join(tmpdir(), 'prep-cocoid-'));
const write = (name: string, text: string) => {
  const f = path.join(root, name);
  writeFileSync(f, text);
  return f;
};

const coco = {
  images: [
    { id: 391895, file_name: '000000391895.jpg', coco_url: 'http://images.cocodataset.org/val2017/000000391895.jpg' },
    { id: 522418, file_name: '000000522418.jpg' },
    { id: 'custom-7', file_name: 'custom.jpg' },
  ],
  annotations: [
    { image_id: 391895, id: 1, caption: 'A man riding a bike.' },
    { image_id: 522418, id: 2, caption: 'A woman cutting a cake.' },
    { image_id: 391895, id: 3, caption: 'A person on a bicycle.' },
    { image_id: 'custom-7', id: 4, caption: 'A custom image.' },
  ],
};

/** Karpathy's dataset_coco.json layout (filepath, filename, imgid, cocoid). */
const karpathyCoco = {
  dataset: 'coco',
  images: [
    {
      filepath: 'val2014',
      filename: 'COCO_val2014_000000391895.jpg',
      imgid: 0,
      cocoid: 391895,
      split: 'test',
      sentences: [{ raw: 'A man riding a bike.', tokens: ['a', 'man'] }],
    },
    {
      filepath: 'train2014',
      filename: 'COCO_train2014_000000057870.jpg',
      imgid: 1,
      cocoid: 57870,
      split: 'restval',
      sentences: [{ raw: 'A restaurant with chairs.' }],
    },
    {
      filepath: 'val2014',
      filename: 'COCO_val2014_000000522418.jpg',
      imgid: 2,
      cocoid: 522418,
      split: 'val',
      sentences: [{ raw: 'A woman cutting a cake.' }],
    },
  ],
};

describe('formats: COCO ids', () => {
  it('COCO captions JSON: each image carries its images[].id (integer, or the string the file uses)', () => {
    const p = parseCoco(JSON.stringify(coco), 'c.json', 'val');
    expect(p.images.map((i) => [i.image, i.cocoId])).toEqual([
      ['000000391895.jpg', 391895],
      ['000000522418.jpg', 522418],
      ['custom.jpg', 'custom-7'],
    ]);
  });

  it('one file name under two ids: captions merged, the first id kept, a warning', () => {
    const doc = {
      images: [
        { id: 1, file_name: 'a.jpg' },
        { id: 2, file_name: 'a.jpg' },
      ],
      annotations: [
        { image_id: 1, caption: 'x' },
        { image_id: 2, caption: 'y' },
      ],
    };
    const p = parseCoco(JSON.stringify(doc), 'c.json');
    expect(p.images).toEqual([{ image: 'a.jpg', file: 'a.jpg', captions: ['x', 'y'], cocoId: 1 }]);
    expect(p.warnings).toEqual([
      expect.stringMatching(/^c\.json: annotations\[1\]: image "a\.jpg" has COCO id 2 here but 1 at .*first/),
    ]);
  });

  it('Karpathy COCO: cocoid (not imgid); Karpathy Flickr and Flickr8k: none', () => {
    const k = parseKarpathy(JSON.stringify(karpathyCoco), 'dataset_coco.json');
    expect(k.images.map((i) => [i.image, i.file, i.split, i.cocoId])).toEqual([
      ['COCO_val2014_000000391895.jpg', 'val2014/COCO_val2014_000000391895.jpg', 'test', 391895],
      ['COCO_train2014_000000057870.jpg', 'train2014/COCO_train2014_000000057870.jpg', 'train', 57870],
      ['COCO_val2014_000000522418.jpg', 'val2014/COCO_val2014_000000522418.jpg', 'val', 522418],
    ]);
    const f = parseKarpathy(
      JSON.stringify({ images: [{ filename: 'x.jpg', imgid: 3, split: 'train', sentences: [{ raw: 'a dog' }] }] }),
      'dataset_flickr8k.json',
    );
    expect(f.images[0].cocoId).toBeUndefined();
    expect('cocoId' in f.images[0]).toBe(false);
    expect(parseFlickr8k('a.jpg#0\ta dog\n', 't.txt').images[0].cocoId).toBeUndefined();
  });

  it('a Karpathy cocoid that is not an integer is a warning and ignored', () => {
    const doc = {
      images: [
        { filename: 'x.jpg', cocoid: 1.5, split: 'train', sentences: [{ raw: 'a dog' }] },
        { filename: 'y.jpg', cocoid: '42', split: 'train', sentences: [{ raw: 'a cat' }] },
      ],
    };
    const p = parseKarpathy(JSON.stringify(doc), 'k.json');
    expect(p.images[0].cocoId).toBeUndefined();
    expect(p.images[1].cocoId).toBe(42); // a digit string is read as the integer id
    expect(p.warnings).toEqual([
      expect.stringMatching(/^k\.json: images\[0\]: "cocoid" .*1\.5.* is not an integer; ignored/),
    ]);
  });
});

describe('prepared split files: cocoId', () => {
  const ims: PreparedImage[] = [
    { image: 'a.jpg', file: 'val2017/a.jpg', captions: ['a "dog"'], tokens: [[2, 3]], cocoId: 391895 },
    { image: 'b.jpg', file: 'b.jpg', captions: ['b'], tokens: [[2, 3]], cocoId: 'id "with" \\ quotes' },
    { image: 'c.jpg', file: 'c.jpg', captions: ['c'], tokens: [[2, 3]] },
  ];
  const bare = ims.map(({ cocoId: _id, ...rest }) => rest);

  it('round-trips, the id last on the line and only where there is one', () => {
    const text = serializeSplit(ims);
    expect(text.split('\n')[0]).toBe(
      '{"image":"a.jpg","file":"val2017/a.jpg","captions":["a \\"dog\\""],"tokens":[[2,3]],"cocoId":391895}',
    );
    expect(text.split('\n')[2]).not.toContain('cocoId');
    expect(parseSplitFile(text, 't.jsonl', 4)).toEqual(ims);
  });

  it('the fingerprint does not cover the ids: an older set without them has the same fingerprint', () => {
    const vocab = '{"tokens":["<pad>","<unk>","s","e"]}\n';
    const withIds = fingerprintOf({ vocab, train: serializeSplit(ims), val: '', test: '' });
    const without = fingerprintOf({ vocab, train: serializeSplit(bare), val: '', test: '' });
    expect(withIds).toBe(without);
    expect(fingerprintOf({ vocab, train: Buffer.from(serializeSplit(ims)), val: '', test: '' })).toBe(without);
    // anything else still counts
    expect(fingerprintOf({ vocab, train: serializeSplit(ims).replace('"b"', '"B"'), val: '', test: '' })).not.toBe(
      without,
    );
  });

  it('rejects an id that is neither an integer nor a string', () => {
    const line = '{"image":"a.jpg","file":"a.jpg","captions":["a"],"tokens":[[2,3]],"cocoId":{"x":1}}\n';
    expect(() => parseSplitFile(line, 't.jsonl', 4)).toThrow(DataError);
    expect(() => parseSplitFile(line, 't.jsonl', 4)).toThrow(/^t\.jsonl:1: "cocoId" must be an integer/);
  });
});

describe('runPrep records the ids', () => {
  it('COCO files: every prepared image carries its images[].id; an older set (ids stripped) loads with none', async () => {
    const file = write('coco.json', JSON.stringify(coco));
    const { config } = await loadConfig({
      overrides: {
        dataset: { format: 'coco', cocoFiles: { train: file } },
        prep: { out: path.join(root, 'coco-prep'), minCount: 1 },
      },
    });
    const { dir, manifest } = await quietly(() => runPrep(config));
    const p = await loadPrepared(dir);
    expect(p.splits.train.map((i) => [i.image, i.cocoId])).toEqual([
      ['000000391895.jpg', 391895],
      ['000000522418.jpg', 522418],
      ['custom.jpg', 'custom-7'],
    ]);
    expect(readFileSync(path.join(dir, 'train.jsonl'), 'utf8')).toContain('"cocoId":391895}');

    // as written before ids were recorded: same fingerprint, loads, no ids
    const trainFile = path.join(dir, 'train.jsonl');
    writeFileSync(trainFile, readFileSync(trainFile, 'utf8').replace(/,"cocoId":(\d+|"[^"]*")\}/g, '}'));
    const old = await loadPrepared(dir);
    expect(old.manifest.fingerprint).toBe(manifest.fingerprint);
    expect(old.splits.train.map((i) => i.cocoId)).toEqual([undefined, undefined, undefined]);
  });

  it('Karpathy COCO: cocoid per image in every split', async () => {
    const file = write('dataset_coco.json', JSON.stringify(karpathyCoco));
    const { config } = await loadConfig({
      overrides: {
        dataset: { format: 'karpathy', captions: file },
        prep: { out: path.join(root, 'k-prep'), minCount: 1 },
      },
    });
    const { dir } = await quietly(() => runPrep(config));
    const p = await loadPrepared(dir);
    expect([...p.splits.train, ...p.splits.val, ...p.splits.test].map((i) => i.cocoId).sort()).toEqual(
      [391895, 522418, 57870].sort(),
    );
    expect(p.splits.test[0]).toMatchObject({ image: 'COCO_val2014_000000391895.jpg', cocoId: 391895 });
  });
});
