import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config/load.js';
import { ConfigError, DataError } from '../../src/errors.js';
import { fingerprintOf, loadPrepared } from '../../src/prep/prepared.js';
import { runPrep } from '../../src/prep/run.js';
import { quietly } from '../helpers/quiet.js';

process.env.CAPTIONER_QUIET = '1';
const root = mkdtempSync(path.join(tmpdir(), 'prep-run-'));
let n = 0;
const fresh = () => {
  const d = path.join(root, `case${n++}`);
  mkdirSync(d, { recursive: true });
  return d;
};
const write = (dir: string, name: string, text: string) => {
  const f = path.join(dir, name);
  mkdirSync(path.dirname(f), { recursive: true });
  writeFileSync(f, text);
  return f;
};
async function captureStderr(fn: () => Promise<unknown>): Promise<string> {
  const orig = process.stderr.write.bind(process.stderr);
  let text = '';
  process.stderr.write = ((chunk: string | Uint8Array) => {
    text += String(chunk);
    return true;
  }) as typeof process.stderr.write;
  try {
    await fn();
  } finally {
    process.stderr.write = orig;
  }
  return text;
}
const prep = async (overrides: Record<string, unknown>) => runPrep((await loadConfig({ overrides })).config);

/** A small Flickr8k-style dataset: 6 images x 2 captions, split lists, one quirk key in no list. */
function flickr(dir: string) {
  const lines: string[] = [];
  const names = ['i1.jpg', 'i2.jpg', 'i3.jpg', 'i4.jpg', 'i5.jpg', 'i6.jpg'];
  for (const im of [...names].reverse())
    lines.push(`${im}#0\tA dog runs on the grass .`, `${im}#1\tThe dog is brown .`);
  lines.push('i1.jpg.1#0\tA quirk .');
  return {
    captions: write(dir, 'tok.txt', lines.join('\r\n') + '\r\n'),
    trainFile: write(dir, 'train.txt', 'i1.jpg\ni2.jpg\ni3.jpg\ni4.jpg\n'),
    valFile: write(dir, 'dev.txt', 'i5.jpg\n'),
    testFile: write(dir, 'test.txt', 'i6.jpg\ngone.jpg\n'),
    names,
  };
}

describe('runPrep', () => {
  it('writes the prepared folder: vocab, sorted splits, manifest with a matching fingerprint', async () => {
    const dir = fresh();
    const f = flickr(dir);
    const out = path.join(dir, 'out');
    const { manifest } = await quietly(() =>
      prep({
        dataset: {
          format: 'flickr8k',
          captions: f.captions,
          split: { trainFile: f.trainFile, valFile: f.valFile, testFile: f.testFile },
        },
        prep: { out, minCount: 4 },
      }),
    );
    const vocab = JSON.parse(readFileSync(path.join(out, 'vocab.json'), 'utf8'));
    // train: 4 images x ("a dog runs on the grass", "the dog is brown"): dog 8, the 8, a 4, brown 4, grass 4, is 4, on 4, runs 4
    expect(vocab).toEqual({
      tokens: ['<pad>', '<unk>', 'startseq', 'endseq', 'dog', 'the', 'a', 'brown', 'grass', 'is', 'on', 'runs'],
    });
    const train = readFileSync(path.join(out, 'train.jsonl'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    expect(train.map((r) => r.image)).toEqual(['i1.jpg', 'i2.jpg', 'i3.jpg', 'i4.jpg']);
    expect(train[0]).toEqual({
      image: 'i1.jpg',
      file: 'i1.jpg',
      captions: ['A dog runs on the grass .', 'The dog is brown .'],
      tokens: [
        [2, 6, 4, 11, 10, 5, 8, 3],
        [2, 5, 4, 9, 7, 3],
      ],
    });
    expect(manifest).toMatchObject({
      kind: 'captioner.prepared',
      version: 1,
      format: 'flickr8k',
      imagesDir: null,
      counts: { train: { images: 4, captions: 8 }, val: { images: 1, captions: 2 }, test: { images: 1, captions: 2 } },
      vocabSize: 12,
      captionLength: { p50: 6, max: 8 },
      noSplit: { count: 1, first: ['i1.jpg.1'] },
      missingImages: { count: 0, first: [] },
      options: { split: { method: 'files' }, prep: { minCount: 4, maxLength: 34 } },
    });
    expect(manifest.dropped).toMatchObject({ noSplitImages: 1, noSplitCaptions: 1, listedWithoutCaptions: 1 });
    expect(manifest.sources.captions).toEqual([path.resolve(f.captions)]);
    const written = JSON.parse(readFileSync(path.join(out, 'manifest.json'), 'utf8'));
    expect(written).toEqual(manifest);
    const read = (k: string) => readFileSync(path.join(out, k));
    expect(manifest.fingerprint).toBe(
      fingerprintOf({
        vocab: read('vocab.json'),
        train: read('train.jsonl'),
        val: read('val.jsonl'),
        test: read('test.jsonl'),
      }),
    );
    expect(manifest.fingerprint).toMatch(/^[0-9a-f]{64}$/);

    const loaded = await loadPrepared(out);
    expect(loaded.vocab.tokens).toEqual(vocab.tokens);
    expect(loaded.splits.train).toEqual(train);
    expect(loaded.splits.test.map((i) => i.image)).toEqual(['i6.jpg']);
    expect(loaded.manifest.fingerprint).toBe(manifest.fingerprint);
  });

  it('reports and excludes images missing from the images folder; --strict fails with DataError', async () => {
    const dir = fresh();
    const f = flickr(dir);
    const images = path.join(dir, 'images');
    for (const im of ['i1.jpg', 'i2.jpg', 'i5.jpg']) write(images, im, 'x');
    const ds = {
      format: 'flickr8k',
      captions: f.captions,
      images,
      split: { trainFile: f.trainFile, valFile: f.valFile, testFile: f.testFile },
    };
    const out = path.join(dir, 'out');
    const { manifest } = await quietly(() => prep({ dataset: ds, prep: { out, minCount: 1 } }));
    expect(manifest.missingImages).toEqual({ count: 3, first: ['i6.jpg', 'i4.jpg', 'i3.jpg'] });
    expect(manifest.dropped).toMatchObject({ missingImages: 3, missingImageCaptions: 6 });
    expect(manifest.counts.train).toEqual({ images: 2, captions: 4 });
    expect(manifest.counts.test).toEqual({ images: 0, captions: 0 });
    expect(manifest.imagesDir).toBe(path.resolve(images));
    const err = await quietly(() => prep({ dataset: ds, prep: { out: path.join(dir, 'strict'), strict: true } })).catch(
      (e) => e,
    );
    expect(err).toBeInstanceOf(DataError);
    expect(err.exitCode).toBe(3);
    expect(err.message).toMatch(/3 images named by the captions are missing from .*: i6\.jpg, i4\.jpg, i3\.jpg/);
    await expect(prep({ dataset: { ...ds, images: path.join(dir, 'nope') }, prep: { out } })).rejects.toThrow(
      /images folder not found/,
    );
  });

  it('the wrong images folder (none of the images in it) is a DataError naming the folder', async () => {
    const dir = fresh();
    const f = flickr(dir);
    const images = path.join(dir, 'elsewhere');
    write(images, 'unrelated.jpg', 'x');
    const ds = {
      format: 'flickr8k',
      captions: f.captions,
      images,
      split: { trainFile: f.trainFile, valFile: f.valFile, testFile: f.testFile },
    };
    const err = await quietly(() => prep({ dataset: ds, prep: { out: path.join(dir, 'out') } })).catch((e) => e);
    expect(err).toBeInstanceOf(DataError);
    expect(err.message).toMatch(
      /elsewhere: none of the 6 images named by the captions are in this folder \(looked for i6\.jpg, .*\); is dataset\.images \(--images\) the right folder\?/,
    );
    expect(err.message).not.toMatch(/no captions left/);
  });

  it('warns with file:line about repeated or odd caption numbers and invalid UTF-8; --strict fails', async () => {
    const dir = fresh();
    const bytes = Buffer.concat([
      Buffer.from('a.jpg#0\tA dog runs .\na.jpg#0\tA dog runs .\nb.jpg#x\tA cat .\nc.jpg#0\tA caf'),
      Buffer.from([0xe9, 0x20]), // Latin-1 "é": not UTF-8
      Buffer.from('dog .\n'),
    ]);
    const captions = path.join(dir, 'tok.txt');
    writeFileSync(captions, bytes);
    const ds = { format: 'flickr8k', captions };
    const stderr = await captureStderr(() => prep({ dataset: ds, prep: { out: path.join(dir, 'out'), minCount: 1 } }));
    expect(stderr).toContain(
      'warning: 3 problems in the captions or split files (read anyway; --strict makes them errors):',
    );
    expect(stderr).toContain(`${captions}:4: invalid UTF-8 (read as U+FFFD): "c.jpg#0\\tA caf\uFFFD dog ."`);
    expect(stderr).toContain(
      `${captions}:2: "a.jpg#0" repeats ${captions}:1 with the same caption; the repeat is left out`,
    );
    expect(stderr).toContain(`${captions}:3: "#x" after the image name is not a caption number; read as image "b.jpg"`);
    const err = await quietly(() => prep({ dataset: ds, prep: { out: path.join(dir, 'strict'), strict: true } })).catch(
      (e) => e,
    );
    expect(err).toBeInstanceOf(DataError);
    expect(err.message).toMatch(/^3 problems in the captions or split files \(prep\.strict is on/);
    expect(err.message).toContain(`${captions}:4: invalid UTF-8`);
  });

  it('ratio split: same output for any input order, ratios respected', async () => {
    const dir = fresh();
    const lines = Array.from({ length: 50 }, (_, i) => `img${i}.jpg,A thing number ${i} .`);
    const a = write(dir, 'a.csv', 'image,caption\n' + lines.join('\n'));
    const b = write(dir, 'b.csv', 'image,caption\n' + [...lines].reverse().join('\n'));
    const ra = await prep({
      dataset: { format: 'csv', captions: a, split: { seed: 3 } },
      prep: { out: path.join(dir, 'a') },
    });
    const rb = await prep({
      dataset: { format: 'csv', captions: b, split: { seed: 3 } },
      prep: { out: path.join(dir, 'b') },
    });
    expect(rb.manifest.fingerprint).toBe(ra.manifest.fingerprint);
    expect(ra.manifest.counts.train.images).toBe(40);
    expect(ra.manifest.counts.val.images).toBe(5);
    expect(ra.manifest.options.split).toEqual({
      method: 'ratio',
      ratios: { train: 0.8, val: 0.1, test: 0.1 },
      seed: 3,
    });
    const rc = await prep({
      dataset: { format: 'csv', captions: a, split: { seed: 4 } },
      prep: { out: path.join(dir, 'c') },
    });
    expect(rc.manifest.fingerprint).not.toBe(ra.manifest.fingerprint);
  });

  it('coco: one file per split; images found directly or under the coco_url folder', async () => {
    const dir = fresh();
    const coco = (ids: number[], folder: string) =>
      JSON.stringify({
        images: ids.map((id) => ({
          id,
          file_name: `${id}.jpg`,
          coco_url: `http://images.cocodataset.org/${folder}/${id}.jpg`,
        })),
        annotations: ids.map((id, k) => ({ id: k, image_id: id, caption: `A cat number ${id} .` })),
      });
    const train = write(dir, 'train.json', coco([1, 2, 3], 'train2017'));
    const val = write(dir, 'val.json', coco([4], 'val2017'));
    const images = path.join(dir, 'img');
    write(images, 'train2017/1.jpg', 'x');
    write(images, 'train2017/2.jpg', 'x');
    write(images, '4.jpg', 'x');
    const { manifest, dir: out } = await quietly(() =>
      prep({
        dataset: { format: 'coco', cocoFiles: { train, val }, images },
        prep: { out: path.join(dir, 'out'), minCount: 1 },
      }),
    );
    expect(manifest.options.split.method).toBe('field');
    expect(manifest.counts.train.images).toBe(2);
    expect(manifest.missingImages).toEqual({ count: 1, first: ['3.jpg'] });
    const p = await loadPrepared(out);
    expect(p.splits.train.map((i) => [i.image, i.file])).toEqual([
      ['1.jpg', 'train2017/1.jpg'],
      ['2.jpg', 'train2017/2.jpg'],
    ]);
    expect(p.splits.val.map((i) => [i.image, i.file])).toEqual([['4.jpg', '4.jpg']]);
  });

  it('karpathy: split field, file = filepath/filename', async () => {
    const dir = fresh();
    const doc = {
      images: [
        { filename: 'a.jpg', filepath: 'val2014', split: 'restval', sentences: [{ raw: 'A dog .' }] },
        { filename: 'b.jpg', filepath: 'val2014', split: 'test', sentences: [{ raw: 'A cat .' }] },
      ],
    };
    const k = write(dir, 'dataset_coco.json', JSON.stringify(doc));
    const { dir: out } = await prep({
      dataset: { format: 'karpathy', captions: k },
      prep: { out: path.join(dir, 'out'), minCount: 1 },
    });
    const p = await loadPrepared(out);
    expect(p.splits.train).toEqual([
      { image: 'a.jpg', file: 'val2014/a.jpg', captions: ['A dog .'], tokens: [[2, 4, 5, 3]] },
    ]);
    expect(p.splits.test[0].file).toBe('val2014/b.jpg');
  });

  it('config problems are ConfigErrors; unreadable input is a DataError', async () => {
    const dir = fresh();
    await expect(prep({ dataset: { format: 'flickr8k' } })).rejects.toThrow(ConfigError);
    await expect(prep({ dataset: { format: 'coco', captions: 'x', cocoFiles: { val: 'y' } } })).rejects.toThrow(
      /not both/,
    );
    await expect(prep({ dataset: { format: 'csv', captions: 'x', split: { method: 'field' } } })).rejects.toThrow(
      /"field" needs/,
    );
    await expect(prep({ dataset: { format: 'csv', captions: 'x', split: { method: 'files' } } })).rejects.toThrow(
      /"files" needs/,
    );
    await expect(prep({ dataset: { format: 'csv', captions: path.join(dir, 'none.csv') } })).rejects.toThrow(
      /none\.csv: cannot read captions file: no such file/,
    );
    await expect(loadConfig({ overrides: { prep: { maxLength: 2 } } })).rejects.toThrow(
      /prep.maxLength: expected an integer from 3 to 200, got 2/,
    );
  });
});

describe('loadPrepared', () => {
  it('gives clear DataErrors for folders that are not prepared datasets or were changed', async () => {
    const dir = fresh();
    await expect(loadPrepared(path.join(dir, 'missing'))).rejects.toThrow(/no such folder/);
    await expect(loadPrepared(dir)).rejects.toThrow(/not a prepared dataset \(no manifest\.json/);
    write(dir, 'manifest.json', '{"kind": "other"}');
    await expect(loadPrepared(dir)).rejects.toThrow(/not a prepared dataset manifest/);

    const f = flickr(dir);
    const out = path.join(dir, 'out');
    await quietly(() => prep({ dataset: { format: 'flickr8k', captions: f.captions }, prep: { out } }));
    await loadPrepared(out);
    const train = path.join(out, 'train.jsonl');
    writeFileSync(train, readFileSync(train, 'utf8').replace('A dog', 'A cat'));
    await expect(loadPrepared(out)).rejects.toThrow(/do not match the manifest fingerprint/);
  });
});
