// The tfjs VGG16: math checked against a plain-JS reference on the mini spec, weights loaded from
// .h5 give the same outputs as the same weights given directly, and one full-size forward pass.
import { promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tf } from '../../../src/tf/tf.js';
import { initBackend } from '../../../src/tf/backend.js';
import { buildVgg16 } from '../../../src/features/vgg16/tfjs.js';
import { loadVgg16Weights, randomVgg16Weights } from '../../../src/features/vgg16/weights.js';
import { VGG16_PARAMS_NO_TOP, VGG16_PARAMS_WITH_TOP } from '../../../src/features/vgg16/spec.js';
import { MINI_INPUT, MINI_LAYERS, fixture, miniWeights, referenceForward } from './mini.js';

let before = 0;
beforeAll(async () => {
  process.env.CAPTIONER_CACHE = await fs.mkdtemp(path.join(os.tmpdir(), 'captioner-tfjs-')); // digests of loaded fixtures
  await initBackend('wasm', { quiet: true });
  before = tf.memory().numTensors;
});
afterAll(async () => {
  expect(tf.memory().numTensors).toBe(before);
  await fs.rm(process.env.CAPTIONER_CACHE!, { recursive: true, force: true });
});

function miniInput(n: number, seed = 1): Float32Array {
  const x = new Float32Array(n * MINI_INPUT * MINI_INPUT * 3);
  for (let i = 0; i < x.length; i++) x[i] = Math.sin(i * 1.7 + seed) * 2;
  return x;
}

function close(actual: ArrayLike<number>, expected: ArrayLike<number>, tol = 1e-4) {
  expect(actual.length).toBe(expected.length);
  for (let i = 0; i < expected.length; i++)
    expect(Math.abs(actual[i] - expected[i])).toBeLessThanOrEqual(tol * Math.max(1, Math.abs(expected[i])));
}

describe('buildVgg16 on the mini spec', () => {
  it('matches a plain-JS reference at every output (same padding, pools, channels-last flatten, softmax)', async () => {
    const w = miniWeights();
    const input = miniInput(2);
    const per = MINI_INPUT * MINI_INPUT * 3;
    for (const output of ['block1_conv2', 'block1_pool', 'fc1', 'fc2', 'predictions']) {
      const model = buildVgg16(w, output, { layers: MINI_LAYERS });
      const x = tf.tensor4d(input, [2, MINI_INPUT, MINI_INPUT, 3]);
      const y = model.predict(x);
      const got = await y.data();
      tf.dispose([x, y]);
      model.dispose();
      const ref = [0, 1].flatMap((b) => [
        ...referenceForward(w, MINI_LAYERS, input.subarray(b * per, (b + 1) * per), MINI_INPUT, output),
      ]);
      close(got, ref);
    }
  });

  it('weights loaded from each .h5 style give the same outputs as the weights given directly', async () => {
    const x = tf.tensor4d(miniInput(1, 5), [1, MINI_INPUT, MINI_INPUT, 3]);
    const direct = buildVgg16(miniWeights(), 'predictions', { layers: MINI_LAYERS });
    const want = direct.predict(x);
    for (const file of ['mini_legacy.h5', 'mini_keras2.h5', 'mini_prefixed_model.h5']) {
      const { weights } = await loadVgg16Weights(fixture(file), { seed: 0, layers: MINI_LAYERS });
      const model = buildVgg16(weights, 'predictions', { layers: MINI_LAYERS });
      const got = model.predict(x);
      expect(await got.data(), file).toEqual(await want.data());
      got.dispose();
      model.dispose();
    }
    tf.dispose([x, want]);
    direct.dispose();
  });

  it('refuses dense outputs from no-top weights and unknown outputs', () => {
    expect(() => buildVgg16(miniWeights({ includeTop: false }), 'fc2', { layers: MINI_LAYERS })).toThrow(/no-top set/);
    expect(() => buildVgg16(miniWeights(), 'block9_pool', { layers: MINI_LAYERS })).toThrow(/no layer block9_pool/);
    const m = buildVgg16(miniWeights({ includeTop: false }), 'block1_pool', { layers: MINI_LAYERS });
    m.dispose();
  });
});

describe('buildVgg16 full size', () => {
  it('holds the Keras parameter counts and runs one 224x224 image to fc2', async () => {
    const weights = randomVgg16Weights(1234);
    expect([...weights.values()].reduce((n, w) => n + w.kernel.length + w.bias.length, 0)).toBe(VGG16_PARAMS_WITH_TOP);
    const pool = buildVgg16(weights, 'block5_pool');
    expect(pool.paramCount).toBe(VGG16_PARAMS_NO_TOP);
    pool.dispose();
    const model = buildVgg16(weights, 'fc2');
    expect(model.paramCount).toBe(VGG16_PARAMS_WITH_TOP - (4096 * 1000 + 1000));
    const x = tf.tidy(() => tf.randomUniform([1, 224, 224, 3], -120, 130, 'float32', 3) as tf.Tensor4D);
    const y = model.predict(x);
    expect(y.shape).toEqual([1, 4096]);
    const v = await y.data();
    expect(v.every(Number.isFinite)).toBe(true);
    expect(v.every((a) => a >= 0)).toBe(true); // relu
    expect(v.some((a) => a > 0)).toBe(true);
    tf.dispose([x, y]);
    model.dispose();
    model.dispose(); // twice is harmless
    expect(() => model.predict(x)).toThrow(/after dispose/);
  });
});
