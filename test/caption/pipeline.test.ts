// The pipeline with fake stages: order, per-file errors, batching, bounded memory, fatal errors.
import { describe, expect, it } from 'vitest';
import { captionFiles, type CaptionResult, type CaptionStages } from '../../src/caption/pipeline.js';
import { ImageError } from '../../src/features/image.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function fakeStages(opts: { bad?: (f: string) => string | null; delay?: number } = {}) {
  const stats = { live: 0, maxLive: 0, encodeSizes: [] as number[], captionSizes: [] as number[] };
  const stages: CaptionStages = {
    async load(file) {
      // the pipeline passes a Buffer only for names that are not UTF-8; these tests use plain names
      const name = typeof file === 'string' ? file : file.toString('utf8');
      await sleep(Math.random() * (opts.delay ?? 1));
      const why = opts.bad?.(name);
      if (why) throw new ImageError('corrupt', why);
      stats.live++;
      stats.maxLive = Math.max(stats.maxLive, stats.live);
      return new TextEncoder().encode(name);
    },
    async encode(images) {
      stats.encodeSizes.push(images.length);
      await sleep(opts.delay ?? 1);
      return images.map((img) => Float32Array.from(img));
    },
    async caption(features) {
      stats.captionSizes.push(features.length);
      await sleep(opts.delay ?? 1);
      stats.live -= features.length;
      return features.map((f) => ({ caption: `cap ${String.fromCharCode(...f)}`, logprob: -f.length }));
    },
  };
  return { stages, stats };
}

async function collect(g: AsyncIterable<CaptionResult>): Promise<CaptionResult[]> {
  const out: CaptionResult[] = [];
  for await (const r of g) out.push(r);
  return out;
}

describe('captionFiles', () => {
  it('yields one result per input, in input order, errors included', async () => {
    const names = Array.from({ length: 37 }, (_, i) => `img${String(i).padStart(2, '0')}.jpg`);
    const { stages, stats } = fakeStages({ bad: (f) => (f.endsWith('3.jpg') ? 'damaged' : null) });
    const inputs = names.map((path) => ({ path, ...(path === 'img10.jpg' ? { error: 'broken symbolic link' } : {}) }));
    const got = await collect(captionFiles(inputs, stages, { readAhead: 3, encodeBatch: 4, decodeBatch: 5 }));
    expect(got.map((r) => r.image)).toEqual(names);
    for (const r of got) {
      if (r.image.endsWith('3.jpg')) expect(r).toEqual({ image: r.image, error: 'damaged', kind: 'corrupt' });
      else if (r.image === 'img10.jpg') expect(r).toMatchObject({ error: 'broken symbolic link' });
      else expect(r).toEqual({ image: r.image, caption: `cap ${r.image}`, logprob: -r.image.length });
    }
    expect(Math.max(...stats.encodeSizes)).toBeLessThanOrEqual(4);
    expect(Math.max(...stats.captionSizes)).toBeLessThanOrEqual(5);
    expect(stats.encodeSizes.reduce((a, b) => a + b, 0)).toBe(37 - 4 - 1);
  });

  it('holds a bounded number of decoded images however long the input', async () => {
    const { stages, stats } = fakeStages({ delay: 0 });
    function* many() {
      for (let i = 0; i < 600; i++) yield { path: `f${i}.png` };
    }
    let n = 0;
    for await (const r of captionFiles(many(), stages, { readAhead: 4, encodeBatch: 8, decodeBatch: 8 })) {
      expect('caption' in r).toBe(true);
      n++;
    }
    expect(n).toBe(600);
    // read-ahead + encoder queue and batch + decoder queue and batch, a few dozen at most
    expect(stats.maxLive).toBeLessThanOrEqual(4 + 8 + 8 + 8 + 8 + 8);
  });

  it('stops with the error when a model stage fails', async () => {
    const { stages } = fakeStages();
    stages.encode = async () => {
      throw new Error('encoder crashed');
    };
    await expect(
      collect(
        captionFiles([{ path: 'a.jpg' }, { path: 'b.jpg' }], stages, { readAhead: 2, encodeBatch: 2, decodeBatch: 2 }),
      ),
    ).rejects.toThrow('encoder crashed');
  });

  it('copes with an empty input and with all inputs failing', async () => {
    const { stages, stats } = fakeStages({ bad: () => 'nope' });
    expect(await collect(captionFiles([], stages, { readAhead: 2, encodeBatch: 2, decodeBatch: 2 }))).toEqual([]);
    const got = await collect(
      captionFiles([{ path: 'x' }, { path: 'y' }], stages, { readAhead: 2, encodeBatch: 2, decodeBatch: 2 }),
    );
    expect(got).toEqual([
      { image: 'x', error: 'nope', kind: 'corrupt' },
      { image: 'y', error: 'nope', kind: 'corrupt' },
    ]);
    expect(stats.encodeSizes).toEqual([]);
  });
});

describe('captionFiles streams', () => {
  it('yields each image as soon as it is done, without waiting for a full batch of slower inputs', async () => {
    let release: () => void = () => {};
    const gate = new Promise<void>((r) => (release = r));
    const { stages } = fakeStages({ delay: 0 });
    const slow: CaptionStages = {
      ...stages,
      async load(file) {
        if (file === 'f3') await gate; // the 4th image is slow to read (a network disk)
        return stages.load(file);
      },
    };
    const it = captionFiles(
      ['f0', 'f1', 'f2', 'f3', 'f4'].map((p) => ({ path: p })),
      slow,
      { readAhead: 2, encodeBatch: 8, decodeBatch: 32 },
    )[Symbol.asyncIterator]();
    // the first three come out while f3 is still being read (batches of 8 / 32 are not waited for)
    for (const want of ['f0', 'f1', 'f2']) expect(((await it.next()).value as CaptionResult).image).toBe(want);
    release();
    expect(((await it.next()).value as CaptionResult).image).toBe('f3');
    expect(((await it.next()).value as CaptionResult).image).toBe('f4');
    expect((await it.next()).done).toBe(true);
  });
});
