// New weights must be seen by the next matrix product, on every engine a user can get: wasm with the native
// addon (products by OpenBLAS), wasm without it (products by XNNPACK, which keeps a packed copy of a matmul's
// right operand per tensor id) and cpu. The regression is the 2x2 case of issue 23: a weight overwritten with
// [10, 20, 30, 40] in its heap memory read back as the new values, but matMul(I, w) still gave [1, 2, 3, 4],
// so data-parallel training without OpenBLAS ran every forward pass with the weights of step 1.
// assignFloats (src/tf/copy.ts) and loadFlat (the replicas' weight refresh) must give the new values through
// every matmul route: plain, transposed, batched and fused with a bias, after the operands were cached.
// Routes are switched through tfjs's kernel registry (test/helpers/wasm-kernels.ts): 'wasm' is what
// CAPTIONER_NATIVE=0 runs, 'stock' is tfjs's own matmul kernels; CI also runs this file with CAPTIONER_NATIVE=0.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { routes } from '../helpers/wasm-kernels.js';
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';
import type { TensorInfo } from '@tensorflow/tfjs';
import { tf } from '../../src/tf/tf.js';
import { initBackend } from '../../src/tf/backend.js';
import { assignFloats } from '../../src/tf/copy.js';
import { addonActive, addonStatus } from '../../src/tf/addon.js';
import { MergeDecoder, mergeInitialWeights, type MergeSpec } from '../../src/model/decoders/merge.js';
import { makeBatch } from '../../src/model/decoders/batch.js';
import { flatLayout, packWeights } from '../../src/train/parallel/flat.js';
import { kindShapes, loadFlat } from '../../src/train/parallel/replica.js';
import { rng } from '../../src/util/random.js';
import { addonRequired } from '../helpers/addon.js';

const status = addonStatus();
const needed = addonRequired();
if (!status.available && !needed)
  console.warn(
    `test/tf/inplace: the native addon is not available here (${status.reason}); the "wasm with the addon" cases are skipped`,
  );

type Engine = { name: string; backend: 'wasm' | 'cpu'; route: 'addon' | 'wasm' | 'stock'; native: boolean };
const engines: Engine[] = [
  { name: 'wasm with the addon', backend: 'wasm', route: 'addon', native: true },
  { name: 'wasm without the addon', backend: 'wasm', route: 'wasm', native: false },
  { name: "wasm, tfjs's own matmul kernels", backend: 'wasm', route: 'stock', native: false },
  { name: 'cpu', backend: 'cpu', route: 'addon', native: false },
];

const values = (t: tf.Tensor) => Array.from(t.dataSync());
/** A variable holding `make()`'s values (tidy frees the initial tensor; the variable keeps the data). */
const variable = (make: () => tf.Tensor) => tf.tidy(() => tf.variable(make()));

for (const e of engines) {
  const run = e.native && !status.available && !needed ? describe.skip : describe;
  run(`new weights reach the next matmul: ${e.name}`, () => {
    let prev: string | undefined;
    beforeAll(async () => {
      prev = tf.getBackend();
      await initBackend(e.backend, { quiet: true });
      if (e.backend === 'wasm') routes.use(e.route);
      if (e.native) expect(addonActive(), `${status.reason}`).toBe(true);
    });
    afterAll(async () => {
      if (e.backend === 'wasm') routes.use('addon');
      if (prev) await tf.setBackend(prev);
    });

    it('the 2x2 repro: assignFloats [10, 20, 30, 40]; matMul(I, w) gives them', () => {
      const before = tf.memory().numTensors;
      const w = variable(() => tf.tensor2d([1, 2, 3, 4], [2, 2]));
      const I = tf.eye(2);
      const first = tf.matMul(I, w); // packs (and caches) w on wasm
      expect(values(first)).toEqual([1, 2, 3, 4]);
      assignFloats(w, Float32Array.from([10, 20, 30, 40]));
      expect(values(w)).toEqual([10, 20, 30, 40]);
      const second = tf.matMul(I, w);
      expect(values(second)).toEqual([10, 20, 30, 40]);
      tf.dispose([w, I, first, second]);
      expect(tf.memory().numTensors).toBe(before);
    });

    it('every matmul route sees the new values: transposed, batched, fused with a bias; from shared memory', () => {
      const before = tf.memory().numTensors;
      const r = rng(4);
      const K = 24;
      const N = 20;
      const wv = Float32Array.from({ length: K * N }, () => r() - 0.5);
      const bv = Float32Array.from({ length: N }, () => r() - 0.5);
      const w = variable(() => tf.tensor2d(wv, [K, N]));
      const wt = variable(() => tf.transpose(w)); // [N, K], used with transposeB
      const bias = variable(() => tf.tensor1d(bv));
      const x = tf.tensor2d(
        Float32Array.from({ length: 8 * K }, () => r() - 0.5),
        [8, K],
      );
      const x3 = tf.tensor3d(
        Float32Array.from({ length: 3 * 8 * K }, () => r() - 0.5),
        [3, 8, K],
      );
      const products = () => [
        tf.matMul(x, w),
        tf.matMul(x, wt, false, true),
        tf.matMul(x3, w),
        tf.fused.matMul({ a: x, b: w, bias, activation: 'relu' }),
      ];
      tf.dispose(products()); // every route caches what it caches
      const shared = (a: Float32Array) => {
        const s = new Float32Array(new SharedArrayBuffer(a.byteLength));
        s.set(a);
        return s;
      };
      const nw = shared(wv.map((v) => v * -2 + 0.25));
      const nb = shared(bv.map((v) => v + 1));
      assignFloats(w, nw);
      assignFloats(bias, nb);
      tf.tidy(() => assignFloats(wt, tf.transpose(w).dataSync() as Float32Array));
      nw.fill(0); // the variables hold copies: later writes to the shared arrays do not reach them
      nb.fill(0);
      const got = products();
      const want = tf.tidy(() => {
        const fw = tf.tensor2d(
          wv.map((v) => v * -2 + 0.25),
          [K, N],
        ); // fresh tensors: nothing cached
        const fb = tf.tensor1d(bv.map((v) => v + 1));
        return [
          tf.matMul(x, fw),
          tf.matMul(x, tf.transpose(fw), false, true),
          tf.matMul(x3, fw),
          tf.relu(tf.add(tf.matMul(x, fw), fb)),
        ];
      });
      got.forEach((g, i) => {
        const a = g.dataSync();
        const b = want[i].dataSync();
        expect(a.length).toBe(b.length);
        let worst = 0;
        for (let j = 0; j < a.length; j++) worst = Math.max(worst, Math.abs(a[j] - b[j]));
        expect(worst, `product ${i}`).toBeLessThan(1e-5);
      });
      tf.dispose([...got, ...want, w, wt, bias, x, x3]);
      expect(tf.memory().numTensors).toBe(before);
    });

    it("loadFlat (the replicas' weight refresh) gives the forward pass of a model built with the new weights", async () => {
      const spec: MergeSpec = {
        vocabSize: 30,
        featureDim: 6,
        embedDim: 8,
        units: 10,
        imageUnits: 10,
        hiddenUnits: 12,
        merge: 'add',
        dropout: 0,
      };
      const norm = { mean: new Float32Array(6), std: new Float32Array(6).fill(1) };
      const r = rng(8);
      const batch = makeBatch(
        Array.from({ length: 5 }, () => ({
          features: Float32Array.from({ length: 6 }, () => r()),
          tokens: [2, 4 + Math.floor(r() * 20), 5 + Math.floor(r() * 20), 3],
        })),
        6,
      );
      const layout = flatLayout(kindShapes('merge', spec));
      const flat = new Float32Array(new SharedArrayBuffer(layout.total * 4));
      packWeights(layout, mergeInitialWeights(spec, 2), flat);
      const replica = new MergeDecoder(spec, mergeInitialWeights(spec, 1), norm);
      const before = tf.memory().numTensors;
      tf.tidy(() => replica.loss(batch, { training: false })).dispose(); // caches the old weights where a backend does
      loadFlat(replica, layout, flat);
      expect(tf.memory().numTensors).toBe(before);
      const fresh = new MergeDecoder(spec, mergeInitialWeights(spec, 2), norm);
      const a = tf.tidy(() => replica.loss(batch, { training: false }));
      const b = tf.tidy(() => fresh.loss(batch, { training: false }));
      expect((await a.data())[0]).toBe((await b.data())[0]);
      tf.dispose([a, b]);
      replica.dispose();
      fresh.dispose();
    });
  });
}

describe('why: the hazard the tests above guard against (tfjs-backend-wasm 4.22 without the addon)', () => {
  let prev: string | undefined;
  beforeAll(async () => {
    prev = tf.getBackend();
    await initBackend('wasm', { quiet: true });
    routes.use('wasm');
  });
  afterAll(async () => {
    routes.use('addon');
    if (prev) await tf.setBackend(prev);
  });

  it("a write over a weight's heap memory is read back, but matMul keeps using the packed old values", () => {
    const init = tf.tensor2d([1, 2, 3, 4], [2, 2]);
    const w = tf.variable(init);
    init.dispose();
    const I = tf.eye(2);
    tf.matMul(I, w).dispose();
    const backend = tf.backend() as unknown as BackendWasm;
    (backend.typedArrayFromHeap(w as unknown as TensorInfo) as Float32Array).set([10, 20, 30, 40]);
    expect(values(w)).toEqual([10, 20, 30, 40]);
    const stale = tf.matMul(I, w);
    // if this starts to fail, tfjs stopped caching packed weights; the rule (never write in place) stays
    expect(values(stale)).toEqual([1, 2, 3, 4]);
    tf.dispose([w, I, stale]);
  });
});
