// The one Adam (src/train/adam.ts): its factors (bias correction, clipping) by hand; every implementation of
// its inner loop against adamLoop, the reference, on the same inputs over several steps with clipping on and
// off: the addon's C loop on host arrays, the addon's heap kernel (Adam.apply on wasm with the addon), tf ops
// (Adam.apply on wasm without the addon and on cpu), tf ops with the clip scale kept on the backend (the
// device path of tfjs-node-gpu, run here on cpu); and its checkpoint format, the same over tf variables and
// over the data-parallel trainer's host arrays, so either continues the other's checkpoint.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { routes } from '../helpers/wasm-kernels.js';
import { tf } from '../../src/tf/tf.js';
import { initBackend } from '../../src/tf/backend.js';
import { ADAM_KERNEL, addonKernelReady, addonStatus } from '../../src/tf/addon.js';
import {
  Adam,
  adamArrays,
  adamFactors,
  adamHyper,
  adamLoop,
  adamOps,
  clipScale,
  clipScaleOn,
  type AdamFactors,
} from '../../src/train/adam.js';
import { flatLayout, flatMoments } from '../../src/train/parallel/flat.js';
import { rng } from '../../src/util/random.js';
import { expectClose, randArray, size } from '../helpers/arrays.js';
import { addonRequired } from '../helpers/addon.js';

const status = addonStatus();
const needed = addonRequired();
if (!status.available && !needed)
  console.warn(
    `test/train/adam: the native addon is not available here (${status.reason}); its implementations are skipped`,
  );
const withAddon = status.available || needed ? it : it.skip;

const same = (a: Float32Array, b: Float32Array) =>
  Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));

/** Three weights, their initial values, and three steps of gradients (large enough that clipping at 1 bites). */
const shapes: Record<string, number[]> = { a: [30, 20], b: [20], c: [7, 3, 2] };
const names = Object.keys(shapes);
const r = rng(5);
const init = Object.fromEntries(names.map((n) => [n, randArray(r, size(shapes[n]))]));
const steps = [0, 1, 2].map(() =>
  Object.fromEntries(names.map((n) => [n, randArray(r, size(shapes[n])).map((x) => x * 3)])),
);

/** The reference: the global norm in float64, adamFactors, adamLoop per weight. Weights, moments (m, v per weight) and norms. */
function reference(clipNorm: number) {
  const h = adamHyper({ learningRate: 0.01, clipNorm });
  const w = Object.fromEntries(names.map((n) => [n, Float32Array.from(init[n])]));
  const m = Object.fromEntries(names.map((n) => [n, new Float32Array(init[n].length)]));
  const v = Object.fromEntries(names.map((n) => [n, new Float32Array(init[n].length)]));
  const norms: number[] = [];
  steps.forEach((g, i) => {
    let sq = 0;
    for (const n of names) for (const x of g[n]) sq += x * x;
    norms.push(Math.sqrt(sq));
    const f = adamFactors(h, i + 1, Math.sqrt(sq));
    for (const n of names) adamLoop(f, w[n], m[n], v[n], g[n], 0, g[n].length);
  });
  return { weights: names.map((n) => w[n]), moments: names.flatMap((n) => [m[n], v[n]]), norms };
}

/** Adam.apply over tf variables on the current backend, three steps; nothing leaks. */
async function overVariables(clipNorm: number) {
  const vars = Object.fromEntries(names.map((n) => [n, tf.tidy(() => tf.variable(tf.tensor(init[n], shapes[n])))]));
  const adam = new Adam(vars, { learningRate: 0.01, clipNorm });
  const before = tf.memory().numTensors;
  const norms: number[] = [];
  for (const g of steps) {
    const gt = Object.fromEntries(names.map((n) => [n, tf.tensor(g[n], shapes[n])]));
    const norm = adam.apply(gt);
    norms.push((await norm.data())[0]);
    tf.dispose([norm, ...Object.values(gt)]);
  }
  expect(tf.memory().numTensors).toBe(before);
  expect(adam.iterations).toBe(3);
  const state = await adam.state();
  const weights = await Promise.all(names.map(async (n) => (await vars[n].data()) as Float32Array));
  adam.dispose();
  tf.dispose(Object.values(vars));
  return { weights, moments: state.arrays.map((a) => a.data), norms };
}

function expectLike(
  got: { weights: Float32Array[]; moments: Float32Array[]; norms: number[] },
  want: ReturnType<typeof reference>,
  tol: number,
) {
  expectClose(got.norms, want.norms, tol);
  got.weights.forEach((w, i) => expectClose(w, want.weights[i], tol));
  got.moments.forEach((m, i) => expectClose(m, want.moments[i], tol));
}

describe('Adam: the factors', () => {
  // clipScaleOn runs on a backend (importing test/helpers/wasm-kernels.ts registers wasm, not yet started)
  beforeAll(async () => {
    await initBackend('cpu', { quiet: true });
  });

  it('bias-corrects the learning rate and clips to the global norm', () => {
    const h = adamHyper({ learningRate: 0.1, clipNorm: 2 });
    expect(h).toEqual({ learningRate: 0.1, beta1: 0.9, beta2: 0.999, epsilon: 1e-7, clipNorm: 2 });
    const f1 = adamFactors(h, 1, 4);
    expect(f1.lr).toBeCloseTo((0.1 * Math.sqrt(1 - 0.999)) / (1 - 0.9), 15);
    expect(f1.scale).toBe(0.5);
    expect(adamFactors(h, 2, 1).lr).toBeCloseTo((0.1 * Math.sqrt(1 - 0.999 ** 2)) / (1 - 0.9 ** 2), 15);
    expect(adamFactors(h, 2, 1).scale).toBe(1); // below the clip norm: unchanged
    expect(clipScale(100, 0)).toBe(1); // no clipping
    for (const [norm, clip] of [
      [4, 2],
      [1, 2],
      [3, 0],
    ]) {
      const t = tf.tidy(() => clipScaleOn(tf.scalar(norm), clip).dataSync()[0]);
      expect(t).toBeCloseTo(clipScale(norm, clip), 7);
    }
  });

  it('one step by hand: w -= lr m / (sqrt(v) + eps) on the clipped gradient', () => {
    const f: AdamFactors = { beta1: 0.9, beta2: 0.999, epsilon: 1e-7, lr: 0.5, scale: 0.5 };
    const w = Float32Array.from([1, 1]);
    const m = Float32Array.from([0, 0.2]);
    const v = Float32Array.from([0, 0.04]);
    adamLoop(f, w, m, v, Float32Array.from([2, -2]), 0, 2);
    // g' = 1, -1; m = 0.1, 0.18 - 0.1; v = 0.001, 0.03996 + 0.001
    expect(m[0]).toBeCloseTo(0.1, 7);
    expect(m[1]).toBeCloseTo(0.08, 7);
    expect(v[0]).toBeCloseTo(0.001, 7);
    expect(v[1]).toBeCloseTo(0.04096, 7);
    expect(w[0]).toBeCloseTo(1 - (0.5 * 0.1) / (Math.sqrt(0.001) + 1e-7), 5);
    expect(w[1]).toBeCloseTo(1 - (0.5 * 0.08) / (Math.sqrt(0.04096) + 1e-7), 5);
  });
});

describe('Adam: every inner loop against adamLoop', () => {
  withAddon("the addon's C loop on host arrays (plain and shared), only inside the range", () => {
    expect(status.available).toBe(true);
    const n = 5000;
    const f: AdamFactors = { beta1: 0.9, beta2: 0.999, epsilon: 1e-7, lr: 0.001, scale: 0.5 };
    const inputs = [
      randArray(r, n),
      randArray(r, n).map((x) => x * 0.1),
      randArray(r, n).map((x) => Math.abs(x) * 0.01),
      randArray(r, n),
    ];
    const shared = (a: Float32Array): Float32Array => {
      const s = new Float32Array(new SharedArrayBuffer(a.byteLength));
      s.set(a);
      return s;
    };
    const plain = (a: Float32Array): Float32Array => Float32Array.from(a);
    for (const make of [plain, shared]) {
      const [w, m, v, g] = inputs.map(make);
      const [w0, m0, v0, g0] = inputs.map((a) => Float32Array.from(a));
      for (let t = 1; t <= 3; t++) adamArrays({ ...f, lr: 0.001 * t }, w, m, v, g, 100, 4000);
      for (let t = 1; t <= 3; t++) adamLoop({ ...f, lr: 0.001 * t }, w0, m0, v0, g0, 100, 4000);
      expectClose(w, w0, 1e-6);
      expectClose(m, m0, 1e-6);
      expectClose(v, v0, 1e-6);
      expect(same(w.subarray(0, 100), inputs[0].subarray(0, 100))).toBe(true);
      expect(same(w.subarray(4000), inputs[0].subarray(4000))).toBe(true);
    }
  });

  // without the addon (CAPTIONER_NATIVE=0: CI's second pass over the engine tests) adamArrays is adamLoop itself
  it(`${status.available ? 'with' : 'without'} the addon adamArrays gives adamLoop's bytes${status.available ? ' to float tolerance' : ''}`, () => {
    const f: AdamFactors = { beta1: 0.9, beta2: 0.999, epsilon: 1e-7, lr: 0.01, scale: 0.7 };
    const a = [randArray(r, 300), new Float32Array(300), new Float32Array(300), randArray(r, 300)];
    const b = a.map((x) => Float32Array.from(x));
    adamArrays(f, a[0], a[1], a[2], a[3], 0, 300);
    adamLoop(f, b[0], b[1], b[2], b[3], 0, 300);
    a.forEach((x, i) => (status.available ? expectClose(x, b[i], 1e-6) : expect(same(x, b[i])).toBe(true)));
  });

  describe('Adam.apply on wasm', () => {
    beforeAll(async () => {
      await initBackend('wasm', { quiet: true });
    });

    withAddon('with the addon (its heap kernel and native norm), clipping on and off', async () => {
      expect(addonKernelReady(ADAM_KERNEL)).toBe(true);
      for (const clip of [0, 1]) expectLike(await overVariables(clip), reference(clip), 1e-5);
    });

    it('without the addon (tf ops: its kernel unregistered, as CAPTIONER_NATIVE=0 runs), clipping on and off', async () => {
      await routes.withRoute('wasm', async () => {
        expect(addonKernelReady(ADAM_KERNEL)).toBe(false);
        for (const clip of [0, 1]) expectLike(await overVariables(clip), reference(clip), 1e-5);
      });
    });
  });

  describe('on cpu', () => {
    let prev: string | undefined;
    beforeAll(async () => {
      prev = tf.getBackend();
      await initBackend('cpu', { quiet: true });
    });
    afterAll(async () => {
      if (prev) await tf.setBackend(prev);
    });

    it('Adam.apply (tf ops), clipping on and off', async () => {
      for (const clip of [0, 1]) expectLike(await overVariables(clip), reference(clip), 1e-5);
    });

    it("adamOps with the clip scale left on the backend (the device path): the reference's update", () => {
      const h = adamHyper({ learningRate: 0.01, clipNorm: 1 });
      const want = reference(1);
      let x = tf.tensor(init.a);
      let m = tf.zerosLike(x);
      let v = tf.zerosLike(x);
      steps.forEach((g, i) => {
        const next = tf.tidy(() => {
          const norm = tf.sqrt(tf.addN(names.map((n) => tf.sum(tf.square(tf.tensor(g[n])))))) as tf.Scalar;
          return adamOps(
            { ...adamFactors(h, i + 1, 0), scale: clipScaleOn(norm, h.clipNorm) },
            x,
            tf.tensor(g.a),
            m,
            v,
          );
        });
        tf.dispose([x, m, v]);
        [x, m, v] = next;
      });
      expectClose(x.dataSync(), want.weights[0], 1e-5);
      expectClose(m.dataSync(), want.moments[0], 1e-5);
      expectClose(v.dataSync(), want.moments[1], 1e-5);
      tf.dispose([x, m, v]);
    });
  });
});

describe('Adam: one checkpoint format', () => {
  it("host-array moments (the data-parallel trainer) and tf variables write the same arrays and read each other's", async () => {
    await initBackend('cpu', { quiet: true });
    const layout = flatLayout(shapes);
    const fm = new Float32Array(layout.total);
    const fv = new Float32Array(layout.total);
    const flat = new Adam(flatMoments(layout, fm, fv), { learningRate: 0.01, clipNorm: 1 });
    // run the reference's three steps through the flat Adam: factors(), adamArrays, stepped()
    const w = new Float32Array(layout.total);
    names.forEach((n, i) => w.set(init[n], layout.offsets[i]));
    for (const g of steps) {
      const gf = new Float32Array(layout.total);
      names.forEach((n, i) => gf.set(g[n], layout.offsets[i]));
      let sq = 0;
      for (const x of gf) sq += x * x;
      adamArrays(flat.factors(Math.sqrt(sq)), w, fm, fv, gf, 0, layout.total);
      flat.stepped();
    }
    const st = await flat.state();
    expect(st.iterations).toBe(3);
    expect(st.arrays.map((a) => a.name)).toEqual(names.flatMap((n) => [`m/${n}`, `v/${n}`]));
    expect(st.arrays.map((a) => a.shape)).toEqual(names.flatMap((n) => [shapes[n], shapes[n]]));
    const want = reference(1);
    st.arrays.forEach((a, i) => expectClose(a.data, want.moments[i], 1e-5));
    // tf variables restore it and write it back unchanged
    const vars = Object.fromEntries(names.map((n) => [n, tf.tidy(() => tf.variable(tf.tensor(init[n], shapes[n])))]));
    const onVars = new Adam(vars, { learningRate: 0.5 });
    onVars.restore(st.iterations, 0.02, new Map(st.arrays.map((a) => [a.name, a])));
    expect([onVars.iterations, onVars.learningRate]).toEqual([3, 0.02]);
    const back = await onVars.state();
    back.arrays.forEach((a, i) => expect(same(a.data, st.arrays[i].data)).toBe(true));
    // and the host arrays read the variables' checkpoint
    const again = new Adam(flatMoments(layout, new Float32Array(layout.total), new Float32Array(layout.total)), {
      learningRate: 0.01,
    });
    again.restore(back.iterations, back.learningRate, new Map(back.arrays.map((a) => [a.name, a])));
    (await again.state()).arrays.forEach((a, i) => expect(same(a.data, st.arrays[i].data)).toBe(true));
    // a missing or mis-sized moment is refused before anything is written
    const short = new Map(st.arrays.map((a) => [a.name, a]));
    short.set('v/c', { ...short.get('v/c')!, data: new Float32Array(3) });
    expect(() => again.restore(9, 0.1, short)).toThrow(/"v\/c" is missing or has the wrong size/);
    expect(again.iterations).toBe(3);
    short.delete('m/a');
    expect(() => onVars.restore(9, 0.1, short)).toThrow(/"m\/a" is missing/);
    expect(() => flat.apply({})).toThrow(/host arrays/);
    onVars.dispose();
    tf.dispose(Object.values(vars));
  });
});
