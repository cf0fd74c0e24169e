// The native addon (native/blas.c via src/tf/native.ts): it is built and finds OpenBLAS where CI runs (the
// CI script installs libopenblas0); its matrix products and fused cross-entropy give the wasm kernels'
// answers (every transpose, batch broadcasting, empty operands, the fused matmul's bias and activation);
// it refuses offsets outside the heap; BLAS threads are shared among workers and restored; nothing leaks.
// Where the addon cannot load (a machine without OpenBLAS, outside CI) the tests that need it say why.
import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tf } from '../../src/tf/tf.js';
import { initBackend, blasNote } from '../../src/tf/backend.js';
import { ATTENTION_KERNEL, LSTM_KERNEL, XENT_KERNEL, addonPath, nativeActive, nativeKernelReady, nativeStatus, setBlasThreads, shareBlasThreads, useNative, defaultBlasThreads } from '../../src/tf/native.js';
import { lstmCell, softmaxCrossEntropy } from '../../src/model/ops.js';
import { Adam } from '../../src/train/adam.js';
import { rng } from '../../src/util/random.js';
import { expectClose, randArray, size } from '../helpers/arrays.js';
import { addonRequired } from '../helpers/native.js';

const require = createRequire(import.meta.url);
const repo = path.resolve(import.meta.dirname, '..', '..');
const status = nativeStatus();
const needed = addonRequired();
if (!status.available && !needed) console.warn(`test/tf/native: the native addon is not available here (${status.reason}); its comparisons are skipped`);
const withAddon = status.available ? it : it.skip;

/** f with the products on BLAS, then on wasm's own kernels: [blas, wasm]; checks nothing leaks. */
function bothWays(f: () => tf.Tensor | tf.Tensor[]): [Float32Array[], Float32Array[]] {
  const run = (on: boolean) => {
    useNative(on);
    const before = tf.memory().numTensors;
    const out = tf.tidy(f);
    const list = Array.isArray(out) ? out : [out];
    const values = list.map((t) => Float32Array.from(t.dataSync() as Float32Array));
    tf.dispose(list);
    expect(tf.memory().numTensors).toBe(before);
    return values;
  };
  try {
    return [run(true), run(false)];
  } finally {
    useNative(true);
  }
}

beforeAll(async () => {
  await initBackend('wasm', { quiet: true });
});

afterAll(() => useNative(true));

describe('the native addon', () => {
  it(`is built and finds OpenBLAS${needed ? ' (required in CI)' : ' (or says why not)'}`, () => {
    if (needed) expect(status, `${addonPath()}: ${status.reason}`).toMatchObject({ available: true });
    if (status.available) {
      expect(status.library).toMatch(/openblas/i);
      expect(blasNote(false)).toMatch(/^matrix products by OpenBLAS [\d.]+/);
      expect(nativeActive()).toBe(true);
    } else {
      expect(status.reason).toMatch(/\w/);
      expect(blasNote(true)).toContain(status.reason!);
    }
  });

  it('CAPTIONER_NATIVE=0 turns it off: the backend line says the products run on wasm', () => {
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', `
      const b = await import(${JSON.stringify(path.join(repo, 'dist/tf/backend.js'))});
      const info = await b.initBackend('wasm', { quiet: true });
      console.log(info.detail);`], { encoding: 'utf8', env: { ...process.env, CAPTIONER_NATIVE: '0' } });
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/matrix products on wasm/);
  });
});

describe('matrix products by BLAS equal the wasm kernels', () => {
  const r = rng(11);
  const cases: { batchA: number[]; batchB: number[]; M: number; K: number; N: number }[] = [
    { batchA: [], batchB: [], M: 5, K: 7, N: 3 },
    { batchA: [], batchB: [], M: 64, K: 256, N: 300 },
    { batchA: [3], batchB: [3], M: 4, K: 6, N: 5 },
    { batchA: [2, 3], batchB: [2, 3], M: 17, K: 33, N: 41 },
    { batchA: [4], batchB: [1], M: 20, K: 30, N: 40 },
    { batchA: [4], batchB: [], M: 20, K: 30, N: 40 },
    { batchA: [1], batchB: [4], M: 20, K: 30, N: 40 },
    { batchA: [], batchB: [], M: 0, K: 5, N: 4 },
    { batchA: [], batchB: [], M: 3, K: 0, N: 4 },
  ];
  for (const c of cases) {
    for (const [tA, tB] of [[false, false], [true, false], [false, true], [true, true]]) {
      withAddon(`batch [${c.batchA}]x[${c.batchB}] M${c.M} K${c.K} N${c.N} tA=${tA} tB=${tB}`, () => {
        const aShape = [...c.batchA, ...(tA ? [c.K, c.M] : [c.M, c.K])];
        const bShape = [...c.batchB, ...(tB ? [c.N, c.K] : [c.K, c.N])];
        const av = randArray(r, size(aShape));
        const bv = randArray(r, size(bShape));
        const f = () => tf.matMul(tf.tensor(av, aShape), tf.tensor(bv, bShape), tA, tB);
        if (c.M * c.K === 0) {
          // empty operands: wasm's own kernel only complains on stderr; BLAS gives the right zeros
          const out = f();
          expect(out.shape).toEqual([...tf.broadcast_util.assertAndGetBroadcastShape(c.batchA, c.batchB), c.M, c.N]);
          expect([...out.dataSync()].every((v) => v === 0)).toBe(true);
          out.dispose();
          return;
        }
        const [[x], [y]] = bothWays(f);
        expectClose(x, y);
      });
    }
  }

  for (const activation of ['linear', 'relu', 'elu', 'sigmoid', 'leakyrelu'] as const) {
    withAddon(`fused matMul with a bias and ${activation}`, () => {
      const a = randArray(r, 6 * 10);
      const b = randArray(r, 10 * 7);
      const bias = randArray(r, 7);
      const [[x], [y]] = bothWays(() => tf.fused.matMul({ a: tf.tensor2d(a, [6, 10]), b: tf.tensor2d(b, [7, 10]), transposeB: true, bias: tf.tensor1d(bias), activation, leakyreluAlpha: 0.1 }));
      expectClose(x, y);
    });
  }
});

describe('the fused softmax cross-entropy kernel', () => {
  withAddon('gives the loss and gradients of the tfjs ops, chunked or not, with out-of-range targets picking nothing', () => {
    const r = rng(3);
    const N = 37;
    const H = 16;
    const V = 50;
    const h = randArray(r, N * H);
    const w = randArray(r, H * V);
    const b = randArray(r, V);
    const targets = Int32Array.from({ length: N }, (_, i) => (i === 5 ? V + 3 : Math.floor(r() * V)));
    for (const budget of [undefined, 8 * V]) {
      const f = () => {
        const vars = [tf.tensor2d(h, [N, H]), tf.tensor2d(w, [H, V]), tf.tensor1d(b)];
        const { value, grads } = tf.valueAndGrads((hh: tf.Tensor, ww: tf.Tensor, bb: tf.Tensor) => softmaxCrossEntropy(hh as tf.Tensor2D, ww as tf.Tensor2D, bb as tf.Tensor1D, targets, true, budget))(vars);
        const plain = softmaxCrossEntropy(vars[0] as tf.Tensor2D, vars[1] as tf.Tensor2D, vars[2] as tf.Tensor1D, targets, false, budget);
        return [value, plain, ...grads];
      };
      expect(nativeKernelReady(XENT_KERNEL)).toBe(true);
      const [blas, wasm] = bothWays(f);
      for (let i = 0; i < blas.length; i++) expectClose(blas[i], wasm[i], 1e-5);
    }
  });
});

describe('the fused LSTM cell', () => {
  withAddon('gives the tfjs ops\' h, c and gradients, saturated gates included, over several chained steps', () => {
    const r = rng(11);
    const N = 5;
    const U = 24; // not a multiple of the vector width: the loops' tails run too
    const T = 3;
    const zx = Array.from({ length: T }, () => randArray(r, N * 4 * U).map((x, i) => (i % 17 === 0 ? x * 60 : x * 3)));
    const rw = randArray(r, U * 4 * U).map((x) => x * 0.5);
    const c0 = randArray(r, N * U);
    const wh = randArray(r, N * U);
    const f = () => {
      const inputs = [...zx.map((z) => tf.tensor2d(z, [N, 4 * U])), tf.tensor2d(rw, [U, 4 * U]), tf.tensor2d(c0, [N, U])];
      // a scalar of every step's h and the last c, through the recurrence: rec = h W
      const loss = (...xs: tf.Tensor[]) => {
        const w = xs[T] as tf.Tensor2D;
        let c = xs[T + 1] as tf.Tensor2D;
        let h = tf.zeros([N, U]) as tf.Tensor2D;
        let total: tf.Tensor = tf.scalar(0);
        for (let t = 0; t < T; t++) {
          [h, c] = lstmCell(xs[t] as tf.Tensor2D, tf.matMul(h, w), c);
          total = tf.add(total, tf.sum(tf.mul(h, tf.tensor2d(wh, [N, U]))));
        }
        return tf.add(total, tf.sum(tf.square(c))) as tf.Scalar;
      };
      const [h1, c1] = lstmCell(inputs[0] as tf.Tensor2D, tf.zeros([N, 4 * U]), inputs[T + 1] as tf.Tensor2D);
      const { value, grads } = tf.valueAndGrads(loss)(inputs);
      return [h1, c1, value, ...grads];
    };
    expect(nativeKernelReady(LSTM_KERNEL)).toBe(true);
    const [blas, wasm] = bothWays(f);
    expect(blas).toHaveLength(3 + T + 2);
    for (let i = 0; i < blas.length; i++) expectClose(blas[i], wasm[i], 1e-5);
  });
});

describe('the fused attention scores', () => {
  withAddon('give w . tanh(enc + att) and its gradients as the tfjs ops do, saturated tanh included', () => {
    const r = rng(13);
    const [N, P, A] = [3, 7, 20]; // A not a multiple of the vector width
    const enc = randArray(r, N * P * A).map((x, i) => (i % 13 === 0 ? x * 50 : x * 2));
    const att = randArray(r, N * A);
    const w = randArray(r, A);
    const ws = randArray(r, N * P);
    const viaKernel = nativeKernelReady(ATTENTION_KERNEL);
    expect(viaKernel).toBe(true);
    const f = () => {
      const xs = [tf.tensor3d(enc, [N, P, A]), tf.tensor2d(att, [N, A]), tf.tensor2d(w, [A, 1])];
      const scores = (e: tf.Tensor, a: tf.Tensor, ww: tf.Tensor) =>
        nativeKernelReady(ATTENTION_KERNEL)
          ? (tf.engine().runKernel(ATTENTION_KERNEL, { enc: e, att: a, w: ww }) as tf.Tensor)
          : tf.reshape(tf.matMul(tf.reshape(tf.tanh(tf.add(e, tf.expandDims(a, 1))), [N * P, A]), ww as tf.Tensor2D), [N, P]);
      const { value, grads } = tf.valueAndGrads((e: tf.Tensor, a: tf.Tensor, ww: tf.Tensor) => tf.sum(tf.mul(scores(e, a, ww), tf.tensor2d(ws, [N, P]))) as tf.Scalar)(xs);
      return [scores(xs[0], xs[1], xs[2]), value, ...grads];
    };
    const [blas, wasm] = bothWays(f);
    expect(blas[0]).toHaveLength(N * P);
    expect(blas[4]).toHaveLength(A);
    for (let i = 0; i < blas.length; i++) expectClose(blas[i], wasm[i], 1e-5);
  });
});

describe('the fused Adam update', () => {
  withAddon('gives the weights, moments and gradient norm of the tfjs update, with clipping on and off', async () => {
    const r = rng(5);
    const shapes: Record<string, number[]> = { a: [30, 20], b: [20], c: [7, 3, 2] };
    const init = Object.fromEntries(Object.entries(shapes).map(([n, sh]) => [n, randArray(r, size(sh))]));
    const grads = [0, 1, 2].map(() => Object.fromEntries(Object.entries(shapes).map(([n, sh]) => [n, randArray(r, size(sh)).map((x) => x * 3)])));
    const run = async (on: boolean, clipNorm: number) => {
      useNative(on);
      try {
        const vars = Object.fromEntries(Object.entries(shapes).map(([n, sh]) => [n, tf.variable(tf.tensor(init[n], sh), true, `adam-test-${on}-${clipNorm}-${n}`)]));
        const adam = new Adam(vars, { learningRate: 0.01, clipNorm });
        const before = tf.memory().numTensors;
        const norms: number[] = [];
        for (const g of grads) {
          const gt = Object.fromEntries(Object.entries(shapes).map(([n, sh]) => [n, tf.tensor(g[n], sh)]));
          const norm = adam.apply(gt);
          norms.push((await norm.data())[0]);
          tf.dispose([norm, ...Object.values(gt)]);
        }
        expect(tf.memory().numTensors).toBe(before);
        const state = await adam.state();
        const out = { norms, weights: await Promise.all(Object.values(vars).map(async (v) => Float32Array.from((await v.data()) as Float32Array))), moments: state.arrays.map((a) => Float32Array.from(a.data)) };
        adam.dispose();
        tf.dispose(Object.values(vars));
        return out;
      } finally {
        useNative(true);
      }
    };
    for (const clip of [0, 1]) {
      const blas = await run(true, clip);
      const plain = await run(false, clip);
      expectClose(blas.norms, plain.norms, 1e-5);
      blas.weights.forEach((w, i) => expectClose(w, plain.weights[i], 1e-5));
      blas.moments.forEach((m, i) => expectClose(m, plain.moments[i], 1e-5));
    }
  });
});

describe('guards and threads', () => {
  withAddon('an offset outside the heap is a RangeError, never a stray write', () => {
    const addon = require(addonPath()) as { sgemm: (...a: unknown[]) => void; xent: (...a: unknown[]) => number };
    const heap = new ArrayBuffer(64);
    expect(() => addon.sgemm(heap, false, false, 2, 2, 2, 1, 0, 2, 16, 2, 0, 56, 2)).toThrow(RangeError);
    expect(() => addon.sgemm(heap, false, false, 2, 2, 2, 1, -4, 2, 16, 2, 0, 32, 2)).toThrow(RangeError);
    expect(() => addon.sgemm(heap, false, false, 2, 2, 2, 1, 2, 2, 16, 2, 0, 32, 2)).toThrow(RangeError); // misaligned
    expect(() => addon.sgemm(new Float32Array(4), false, false, 1, 1, 1, 1, 0, 1, 0, 1, 0, 0, 1)).toThrow(TypeError); // not an ArrayBuffer
    expect(() => addon.xent(heap, 0, 0, 0, 4, 8, 1, 0, 0)).toThrow(RangeError);
    const lstm = addon as unknown as { lstm: (...a: unknown[]) => void; lstmGrad: (...a: unknown[]) => void };
    expect(() => lstm.lstm(heap, 0, 4, 0, 1, 4, 0, 0)).toThrow(RangeError); // rec [1, 16] from byte 4 runs past the end
    expect(() => lstm.lstmGrad(heap, 0, 0, 0, 0, 0, 0, 1, 4, 8, 0)).toThrow(RangeError); // dz [1, 16] from byte 8
    expect(() => lstm.lstm(heap, 0, 0, 0, -1, 4, 0, 0)).toThrow(TypeError); // a negative size
    const attn = addon as unknown as { attn: (...a: unknown[]) => void; attnGrad: (...a: unknown[]) => void };
    expect(() => attn.attn(heap, 0, 0, 0, 2, 3, 4, 0)).toThrow(RangeError); // enc [2, 3, 4] is 96 bytes
    expect(() => attn.attnGrad(heap, 0, 0, 0, 0, 1, 2, 4, 0, 0, 60)).toThrow(RangeError); // dw [4] from byte 60
    // inside: 2x2 identity times [1 2; 3 4] lands in C
    const f = new Float32Array(heap);
    f.set([1, 0, 0, 1, 1, 2, 3, 4]);
    addon.sgemm(heap, false, false, 2, 2, 2, 1, 0, 2, 16, 2, 0, 32, 2);
    expect([...f.subarray(8, 12)]).toEqual([1, 2, 3, 4]);
  });

  withAddon('shareBlasThreads splits the cores among workers and the undo restores the count', () => {
    const addon = require(addonPath()) as { setThreads: (n: number) => number };
    const start = setBlasThreads(3);
    try {
      const undo = shareBlasThreads(2);
      expect(addon.setThreads(Math.max(1, Math.floor(defaultBlasThreads() / 2)))).toBe(Math.max(1, Math.floor(defaultBlasThreads() / 2)));
      undo();
      undo(); // once only
      expect(addon.setThreads(3)).toBe(3);
    } finally {
      setBlasThreads(start > 0 ? start : defaultBlasThreads());
    }
  });
});

describe('scripts/build-native.mjs', () => {
  it('never fails the install: without a working compiler it says so in one line and exits 0', () => {
    const tmp = mkdtempSync(path.join(os.tmpdir(), 'captioner-native-'));
    try {
      mkdirSync(path.join(tmp, 'scripts'));
      cpSync(path.join(repo, 'scripts', 'build-native.mjs'), path.join(tmp, 'scripts', 'build-native.mjs'));
      cpSync(path.join(repo, 'native', 'binding.gyp'), path.join(tmp, 'native', 'binding.gyp'));
      cpSync(path.join(repo, 'native', 'blas.c'), path.join(tmp, 'native', 'blas.c'));
      const r = spawnSync(process.execPath, [path.join(tmp, 'scripts', 'build-native.mjs')], { encoding: 'utf8', env: { ...process.env, CAPTIONER_NATIVE: undefined, CC: '/bin/false', CXX: '/bin/false', npm_config_nodedir: process.env.npm_config_nodedir ?? '/usr' }, timeout: 120_000 });
      expect(r.status, r.stderr).toBe(0);
      expect(r.stderr).toMatch(/^captioner: native BLAS addon not built \(.+\); training and decoding run on the wasm kernels alone/);
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
      expect(existsSync(path.join(tmp, 'native', 'build', 'Release', 'captioner_native.node'))).toBe(false);
      const off = spawnSync(process.execPath, [path.join(tmp, 'scripts', 'build-native.mjs')], { encoding: 'utf8', env: { ...process.env, CAPTIONER_NATIVE: '0' } });
      expect(off.status).toBe(0);
      expect(off.stderr).toBe('');
    } finally {
      rmSync(tmp, { recursive: true, force: true });
    }
  });
});
