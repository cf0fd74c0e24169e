// loadCaptioner on a real (tiny) run folder: rebuilds the recorded encoder, refuses a different one,
// captions encoded bytes with per-image errors, and frees its tensors.
import { promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadCaptioner, type LoadedCaptioner } from '../../src/caption/load.js';
import { ModelError } from '../../src/errors.js';
import { tf } from '../../src/tf/tf.js';
import { bombPng, makeRun, tinyOnnx, WORDS } from './fixtures.js';

let dir: string;
let run: string;
let onnx: string;
let c: LoadedCaptioner;

beforeAll(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), 'captioner-load-'));
  ({ run, onnx } = await makeRun(dir));
  c = await loadCaptioner(run, { backend: 'cpu', threads: 1, beam: 2 });
});

afterAll(async () => {
  await c?.dispose();
  await fs.rm(dir, { recursive: true, force: true });
});

const png = (seed: number) =>
  sharp(Buffer.from(Array.from({ length: 20 * 20 * 3 }, (_, i) => (i * seed * 37) & 255)), {
    raw: { width: 20, height: 20, channels: 3 },
  })
    .png()
    .toBuffer();

describe('loadCaptioner', () => {
  it('describes itself and uses the recorded encoder', () => {
    expect(c.info.name).toBe('tiny-test');
    expect(c.info.encoder).toMatch(/^onnx:encoder\.onnx features/);
    expect(c.encoder.inputSize).toBe(32);
    expect(c.decode.beam).toBe(2);
  });

  it('captions a batch of bytes, with a per-image outcome for bad ones', async () => {
    const jpeg = await sharp(await png(3))
      .jpeg()
      .toBuffer();
    const inputs = [
      { id: 'good.png', bytes: await png(1) },
      { id: 'empty', bytes: Buffer.alloc(0) },
      { id: 'text', bytes: Buffer.from('hello, I am not an image at all\n') },
      { id: 'bomb', bytes: bombPng() },
      { id: 'truncated.jpg', bytes: jpeg.subarray(0, Math.floor(jpeg.length / 2)) },
      { id: 'good.jpg', bytes: jpeg },
    ];
    const before = tf.memory().numTensors;
    const out = await c.captionBatch(inputs);
    expect(tf.memory().numTensors).toBe(before);
    expect(out).toHaveLength(6);
    for (const i of [0, 5]) {
      const o = out[i];
      if (!o.ok) throw new Error(`expected a caption, got ${o.error}`);
      for (const w of o.tokens) expect(WORDS).toContain(w);
      expect(o.caption).toBe(o.tokens.join(' '));
      expect(o.logprob).toBeLessThanOrEqual(0);
    }
    expect(out[1]).toMatchObject({ ok: false, kind: 'corrupt', error: expect.stringMatching(/empty/) });
    expect(out[2]).toMatchObject({ ok: false, kind: 'unsupported', error: expect.stringMatching(/not an image/) });
    expect(out[3]).toMatchObject({ ok: false, kind: 'too_large' });
    expect(out[4]).toMatchObject({ ok: false, kind: 'corrupt' });
    // beam option per call; same image, same answer
    const again = await c.captionBatch([inputs[0]], { beam: 2 });
    expect(again[0]).toEqual(out[0]);
  });

  it('refuses an encoder whose weights changed since training', async () => {
    await fs.writeFile(onnx, tinyOnnx({ seed: 99 }));
    try {
      const e = await loadCaptioner(run, { backend: 'cpu', threads: 1 }).catch((x: unknown) => x);
      expect(e).toBeInstanceOf(ModelError);
      expect((e as Error).message).toMatch(/not the one this model was trained with.*fingerprint/);
    } finally {
      await fs.writeFile(onnx, tinyOnnx());
    }
  });

  it('says what is wrong with a folder that is not a run', async () => {
    await expect(loadCaptioner(dir, { backend: 'cpu' })).rejects.toThrow(/manifest\.json/);
    const m = JSON.parse(await fs.readFile(path.join(run, 'manifest.json'), 'utf8'));
    const bad = path.join(dir, 'no-encoder');
    await fs.cp(run, bad, { recursive: true });
    delete m.features.encoder;
    await fs.writeFile(path.join(bad, 'manifest.json'), JSON.stringify(m));
    await expect(loadCaptioner(bad, { backend: 'cpu' })).rejects.toThrow(/which image encoder/);
  });
});
