// The native addon (native/blas.c via src/tf/addon.ts): it is built and finds OpenBLAS where CI runs (the
// CI script installs libopenblas0); its matrix products and fused cross-entropy give the wasm kernels'
// answers (every transpose, batch broadcasting, empty operands, the fused matmul's bias and activation);
// it refuses offsets outside the heap (test/tf/addon-hostile.test.ts tries every bad argument); the BLAS
// thread policy is one per process, shared among declared workers and never changed by a product, also
// with several threads computing; the results promised byte-identical do not depend on where operands lie
// on the heap, on how a range is split or on OpenBLAS's thread count; nothing leaks. Where the addon cannot
// load (a machine without OpenBLAS, outside CI; or CAPTIONER_NATIVE=0) the tests that need it say why.
import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { beforeAll, describe, expect, it } from 'vitest';
import { routes } from '../helpers/wasm-kernels.js';
import { tf } from '../../src/tf/tf.js';
import { initBackend, blasNote } from '../../src/tf/backend.js';
import { Worker } from 'node:worker_threads';
import {
  ATTENTION_KERNEL,
  LSTM_KERNEL,
  XENT_KERNEL,
  addonPath,
  blasThreadInfo,
  addonActive,
  addonKernelReady,
  addonStatus,
  setBlasThreads,
  shareBlasThreads,
  defaultBlasThreads,
} from '../../src/tf/addon.js';
import { lstmCell, softmaxCrossEntropy } from '../../src/model/ops.js';
import { Adam } from '../../src/train/adam.js';
import { rng } from '../../src/util/random.js';
import { expectClose, randArray, size } from '../helpers/arrays.js';
import { addonRequired } from '../helpers/addon.js';

const require = createRequire(import.meta.url);
const repo = path.resolve(import.meta.dirname, '..', '..');
const status = addonStatus();
// CI installs OpenBLAS, so the addon must load there, unless CI turns it off to test the wasm path
const needed = addonRequired();
if (!status.available && !needed)
  console.warn(
    `test/tf/native: the native addon is not available here (${status.reason}); its comparisons are skipped`,
  );
const withAddon = status.available ? it : it.skip;

/**
 * f as installed (products and fused kernels by the addon), then on wasm's own kernels (no fused kernels: the
 * models' tf-ops path, as CAPTIONER_NATIVE=0 runs): [blas, wasm]; checks nothing leaks.
 */
function bothWays(f: () => tf.Tensor | tf.Tensor[]): [Float32Array[], Float32Array[]] {
  const run = () => {
    const before = tf.memory().numTensors;
    const out = tf.tidy(f);
    const list = Array.isArray(out) ? out : [out];
    const values = list.map((t) => Float32Array.from(t.dataSync() as Float32Array));
    tf.dispose(list);
    expect(tf.memory().numTensors).toBe(before);
    return values;
  };
  return [run(), routes.withRoute('wasm', run)];
}

beforeAll(async () => {
  await initBackend('wasm', { quiet: true });
});

describe('the native addon', () => {
  it(`is built and finds OpenBLAS${needed ? ' (required in CI)' : ' (or says why not)'}`, () => {
    if (needed) expect(status, `${addonPath()}: ${status.reason}`).toMatchObject({ available: true });
    if (status.available) {
      expect(status.library).toMatch(/openblas/i);
      expect(blasNote(false)).toMatch(/^matrix products by OpenBLAS [\d.]+/);
      expect(addonActive()).toBe(true);
    } else {
      expect(status.reason).toMatch(/\w/);
      expect(blasNote(true)).toContain(status.reason!);
    }
  });

  it('CAPTIONER_NATIVE=0 turns it off: the backend line says the products run on wasm', () => {
    const r = spawnSync(
      process.execPath,
      [
        '--input-type=module',
        '-e',
        `
      const b = await import(${JSON.stringify(path.join(repo, 'dist/tf/backend.js'))});
      const info = await b.initBackend('wasm', { quiet: true });
      console.log(info.detail);`,
      ],
      { encoding: 'utf8', env: { ...process.env, CAPTIONER_NATIVE: '0' } },
    );
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
    for (const [tA, tB] of [
      [false, false],
      [true, false],
      [false, true],
      [true, true],
    ]) {
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
      const [[x], [y]] = bothWays(() =>
        tf.fused.matMul({
          a: tf.tensor2d(a, [6, 10]),
          b: tf.tensor2d(b, [7, 10]),
          transposeB: true,
          bias: tf.tensor1d(bias),
          activation,
          leakyreluAlpha: 0.1,
        }),
      );
      expectClose(x, y);
    });
  }
});

describe('the fused softmax cross-entropy kernel', () => {
  withAddon(
    'gives the loss and gradients of the tfjs ops, chunked or not, with out-of-range targets picking nothing',
    () => {
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
          const { value, grads } = tf.valueAndGrads((hh: tf.Tensor, ww: tf.Tensor, bb: tf.Tensor) =>
            softmaxCrossEntropy(hh as tf.Tensor2D, ww as tf.Tensor2D, bb as tf.Tensor1D, targets, true, budget),
          )(vars);
          const plain = softmaxCrossEntropy(
            vars[0] as tf.Tensor2D,
            vars[1] as tf.Tensor2D,
            vars[2] as tf.Tensor1D,
            targets,
            false,
            budget,
          );
          return [value, plain, ...grads];
        };
        expect(addonKernelReady(XENT_KERNEL)).toBe(true);
        const [blas, wasm] = bothWays(f);
        for (let i = 0; i < blas.length; i++) expectClose(blas[i], wasm[i], 1e-5);
      }
    },
  );
});

describe('the fused LSTM cell', () => {
  withAddon("gives the tfjs ops' h, c and gradients, saturated gates included, over several chained steps", () => {
    const r = rng(11);
    const N = 5;
    const U = 24; // not a multiple of the vector width: the loops' tails run too
    const T = 3;
    const zx = Array.from({ length: T }, () => randArray(r, N * 4 * U).map((x, i) => (i % 17 === 0 ? x * 60 : x * 3)));
    const rw = randArray(r, U * 4 * U).map((x) => x * 0.5);
    const c0 = randArray(r, N * U);
    const wh = randArray(r, N * U);
    const f = () => {
      const inputs = [
        ...zx.map((z) => tf.tensor2d(z, [N, 4 * U])),
        tf.tensor2d(rw, [U, 4 * U]),
        tf.tensor2d(c0, [N, U]),
      ];
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
    expect(addonKernelReady(LSTM_KERNEL)).toBe(true);
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
    const viaKernel = addonKernelReady(ATTENTION_KERNEL);
    expect(viaKernel).toBe(true);
    const f = () => {
      const xs = [tf.tensor3d(enc, [N, P, A]), tf.tensor2d(att, [N, A]), tf.tensor2d(w, [A, 1])];
      const scores = (e: tf.Tensor, a: tf.Tensor, ww: tf.Tensor) =>
        addonKernelReady(ATTENTION_KERNEL)
          ? (tf.engine().runKernel(ATTENTION_KERNEL, { enc: e, att: a, w: ww }) as tf.Tensor)
          : tf.reshape(tf.matMul(tf.reshape(tf.tanh(tf.add(e, tf.expandDims(a, 1))), [N * P, A]), ww as tf.Tensor2D), [
              N,
              P,
            ]);
      const { value, grads } = tf.valueAndGrads(
        (e: tf.Tensor, a: tf.Tensor, ww: tf.Tensor) =>
          tf.sum(tf.mul(scores(e, a, ww), tf.tensor2d(ws, [N, P]))) as tf.Scalar,
      )(xs);
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
    const grads = [0, 1, 2].map(() =>
      Object.fromEntries(Object.entries(shapes).map(([n, sh]) => [n, randArray(r, size(sh)).map((x) => x * 3)])),
    );
    const run = (on: boolean, clipNorm: number) =>
      routes.withRoute(on ? 'addon' : 'wasm', async () => {
        const vars = Object.fromEntries(
          Object.entries(shapes).map(([n, sh]) => [
            n,
            tf.variable(tf.tensor(init[n], sh), true, `adam-test-${on}-${clipNorm}-${n}`),
          ]),
        );
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
        const out = {
          norms,
          weights: await Promise.all(
            Object.values(vars).map(async (v) => Float32Array.from((await v.data()) as Float32Array)),
          ),
          moments: state.arrays.map((a) => Float32Array.from(a.data)),
        };
        adam.dispose();
        tf.dispose(Object.values(vars));
        return out;
      });
    for (const clip of [0, 1]) {
      const blas = await run(true, clip);
      const plain = await run(false, clip);
      expectClose(blas.norms, plain.norms, 1e-5);
      blas.weights.forEach((w, i) => expectClose(w, plain.weights[i], 1e-5));
      blas.moments.forEach((m, i) => expectClose(m, plain.moments[i], 1e-5));
    }
  });
});

describe('the fused Adam update with non-finite gradients', () => {
  withAddon('gives NaN weights and moments, as the tfjs update does (the addon itself refuses a NaN factor)', () => {
    for (const on of [true, false]) {
      routes.withRoute(on ? 'addon' : 'wasm', () => {
        const w = tf.variable(tf.tensor1d([1, 2, 3]), true, `adam-nan-${on}`);
        const adam = new Adam({ w }, { learningRate: 0.01, clipNorm: 1 });
        const g = tf.tensor1d([0, NaN, 1]);
        tf.dispose(adam.apply({ w: g }));
        expect([...w.dataSync()].every(Number.isNaN), `addon ${on}`).toBe(true);
        adam.dispose();
        tf.dispose([w, g]);
      });
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

  withAddon(
    'the BLAS thread policy: fixed at load, 1 thread while workers are declared (undone in any order), never left changed by a product',
    () => {
      const addon = require(addonPath()) as { sgemm: (...a: unknown[]) => void };
      const start = blasThreadInfo()!;
      expect(start.policy).toBe(defaultBlasThreads());
      expect(start).toMatchObject({ inEffect: start.policy, workers: 0, threads: 1, blas: start.policy });
      const before = setBlasThreads(4);
      try {
        expect(before).toBe(start.policy);
        expect(blasThreadInfo()).toMatchObject({ policy: 4, inEffect: 4, workers: 0, blas: 4 });
        const undoA = shareBlasThreads(2);
        expect(blasThreadInfo()).toMatchObject({ inEffect: 1, workers: 2, blas: 1 });
        const undoB = shareBlasThreads(1);
        expect(blasThreadInfo()).toMatchObject({ inEffect: 1, workers: 3, blas: 1 });
        undoA();
        undoA(); // once only
        expect(blasThreadInfo()).toMatchObject({ inEffect: 1, workers: 1, blas: 1 });
        undoB();
        expect(blasThreadInfo()).toMatchObject({ inEffect: 4, workers: 0, blas: 4 });
        // a small product runs alone on this (the only) thread, then OpenBLAS has the policy's count again
        const heap = new ArrayBuffer(64);
        new Float32Array(heap).set([1, 0, 0, 1, 1, 2, 3, 4]);
        addon.sgemm(heap, false, false, 2, 2, 2, 1, 0, 2, 16, 2, 0, 32, 2);
        expect([...new Float32Array(heap, 32, 4)]).toEqual([1, 2, 3, 4]);
        expect(blasThreadInfo()).toMatchObject({ inEffect: 4, blas: 4 });
      } finally {
        setBlasThreads(before);
      }
      expect(blasThreadInfo()).toMatchObject({ policy: start.policy, inEffect: start.policy, workers: 0 });
    },
  );

  withAddon(
    'worker threads computing at once: right products on 1 thread each while they live, OpenBLAS back at the policy after',
    async () => {
      // each worker loads the addon (as data-parallel training's and the decoding pool's do) and runs
      // thousands of small products, which the addon used to run on 1 thread by saving and restoring the
      // process's count around each call: a race between threads that could leave OpenBLAS on 1
      const policy = blasThreadInfo()!.policy;
      const code = `
      const { workerData, parentPort } = require('node:worker_threads');
      const a = require(workerData);
      a.load(['libopenblas.so.0', 'libopenblas.so'], 0);
      const heap = new ArrayBuffer(256);
      const f = new Float32Array(heap);
      let wrong = 0;
      for (let i = 0; i < 4000; i++) {
        f.set([1, 0, 0, 1, i, 2, 3, 4]);
        a.sgemm(heap, false, false, 2, 2, 2, 1, 0, 2, 16, 2, 0, 32, 2);
        if (f[8] !== i || f[11] !== 4) wrong++;
      }
      parentPort.postMessage({ wrong, info: a.threadInfo() });`;
      const seen: { wrong: number; info: { threads: number; inEffect: number; blas: number } }[] = [];
      // undeclared workers (a library user's own threads) are seen by the addon itself
      await Promise.all(
        [0, 1, 2].map(
          () =>
            new Promise<void>((resolve, reject) => {
              const w = new Worker(code, { eval: true, workerData: addonPath() });
              w.on('message', (m) => seen.push(m));
              w.on('error', reject);
              w.on('exit', () => resolve());
            }),
        ),
      );
      expect(seen).toHaveLength(3);
      for (const m of seen) {
        expect(m.wrong).toBe(0);
        expect(m.info.threads).toBeGreaterThanOrEqual(2); // this thread and the worker at least
        expect(m.info).toMatchObject({ inEffect: 1, blas: 1 });
      }
      expect(blasThreadInfo()).toMatchObject({ policy, inEffect: policy, blas: policy, workers: 0, threads: 1 });
    },
  );
});

describe('results promised byte-identical', () => {
  // A rerun, a --resume and the same worker count give the same bytes (README: backends & performance), so
  // each kernel's result must be a function of its inputs alone: not of where the operands lie on the wasm
  // heap (that changes between runs and on resume), not of how a range is split (the partitioned update of
  // data-parallel training), not of OpenBLAS's thread count (main thread vs decoding workers).
  type Addon = Record<string, (...a: unknown[]) => unknown>;
  const HEAP = 1 << 20;

  /** Lays `arrays` (float counts; each gets `values` or zeros) out from `shift` bytes on 64-byte strides. */
  function place(heap: ArrayBuffer, shift: number, arrays: (Float32Array | Int32Array | number)[]): number[] {
    let cursor = 64;
    return arrays.map((a) => {
      const off = cursor + shift;
      const n = typeof a === 'number' ? a : a.length;
      if (typeof a === 'number') new Float32Array(heap, off, n).fill(0);
      else if (a instanceof Int32Array) new Int32Array(heap, off, n).set(a);
      else new Float32Array(heap, off, n).set(a);
      cursor += Math.ceil((n * 4) / 64) * 64 + 64;
      return off;
    });
  }

  withAddon('every kernel gives the same bytes wherever its operands lie on the heap', () => {
    const a = require(addonPath()) as Addon;
    const r = rng(21);
    const big = (n: number, k = 4) => randArray(r, n).map((x) => x * k);
    const [M, V] = [3, 1001];
    const [N, U] = [3, 37];
    const [Na, P, A] = [2, 5, 29];
    const cases: {
      name: string;
      inputs: (Float32Array | Int32Array)[];
      outputs: number[];
      call: (h: ArrayBuffer, o: number[]) => unknown;
    }[] = [
      {
        name: 'xent',
        inputs: [big(M * V), big(V), Int32Array.from([5, 1000, 7])],
        outputs: [M * V, V],
        call: (h, o) => a.xent(h, o[0], o[1], o[2], M, V, 0.25, o[3], o[4]),
      },
      { name: 'sumSquares', inputs: [big(10007)], outputs: [], call: (h, o) => a.sumSquares(h, o[0], 10007) },
      {
        name: 'adam',
        inputs: [big(1003), big(1003), big(1003), big(1003).map(Math.abs)],
        outputs: [1003, 1003, 1003],
        call: (h, o) => a.adam(h, o[0], o[1], o[2], o[3], 1003, 0.7, 0.9, 0.999, 0.01, 1e-8, o[4], o[5], o[6]),
      },
      {
        name: 'lstm',
        inputs: [big(N * 4 * U), big(N * 4 * U), big(N * U)],
        outputs: [N * U, N * U],
        call: (h, o) => a.lstm(h, o[0], o[1], o[2], N, U, o[3], o[4]),
      },
      {
        name: 'lstmGrad',
        inputs: [big(N * 4 * U), big(N * 4 * U), big(N * U), big(N * U), big(N * U), big(N * U)],
        outputs: [N * 4 * U, N * U],
        call: (h, o) => a.lstmGrad(h, o[0], o[1], o[2], o[3], o[4], o[5], N, U, o[6], o[7]),
      },
      {
        name: 'attn',
        inputs: [big(Na * P * A), big(Na * A), big(A)],
        outputs: [Na * P],
        call: (h, o) => a.attn(h, o[0], o[1], o[2], Na, P, A, o[3]),
      },
      {
        name: 'attnGrad',
        inputs: [big(Na * P * A), big(Na * A), big(A), big(Na * P)],
        outputs: [Na * P * A, Na * A, A],
        call: (h, o) => a.attnGrad(h, o[0], o[1], o[2], o[3], Na, P, A, o[4], o[5], o[6]),
      },
      {
        name: 'sgemm',
        inputs: [big(7 * 65), big(65 * 33)],
        outputs: [7 * 33],
        call: (h, o) => a.sgemm(h, false, false, 7, 33, 65, 1, o[0], 65, o[1], 33, 0, o[2], 33),
      },
      {
        name: 'sgemm transposed',
        inputs: [big(65 * 7), big(33 * 65)],
        outputs: [7 * 33],
        call: (h, o) => a.sgemm(h, true, true, 7, 33, 65, 1, o[0], 7, o[1], 65, 0, o[2], 33),
      },
    ];
    for (const c of cases) {
      let first: Buffer | undefined;
      for (let shift = 0; shift < 64; shift += 4) {
        const heap = new ArrayBuffer(HEAP);
        const offs = place(heap, shift, [...c.inputs, ...c.outputs]);
        const ret = c.call(heap, offs);
        const outs = c.outputs.map((n, i) => Buffer.from(new Uint8Array(heap, offs[c.inputs.length + i], n * 4)));
        const bytes = Buffer.concat([
          Buffer.from(new Float64Array([typeof ret === 'number' ? ret : 0]).buffer),
          ...outs,
        ]);
        if (!first) first = bytes;
        else expect(bytes.equals(first), `${c.name} at a heap offset of ${shift} mod 64`).toBe(true);
      }
    }
  });

  withAddon(
    "Adam on host arrays gives the same bytes however its range is split, and the heap kernel's bytes; the two gradient norms agree",
    () => {
      const a = require(addonPath()) as Addon;
      const r = rng(22);
      const n = 1003;
      const init = [randArray(r, n), randArray(r, n), randArray(r, n).map(Math.abs), randArray(r, n)]; // w m v g
      const run = (cuts: number[]) => {
        const [w, m, v, g] = init.map((x) => Float32Array.from(x));
        for (let i = 0; i + 1 < cuts.length; i++)
          a.adamArrays(w, m, v, g, cuts[i], cuts[i + 1], 0.7, 0.9, 0.999, 0.01, 1e-8);
        return Buffer.concat([w, m, v].map((x) => Buffer.from(x.buffer)));
      };
      const whole = run([0, n]);
      expect(run([0, 5, 517, n]).equals(whole)).toBe(true);
      expect(run([0, 1, 2, 3, 999, n]).equals(whole)).toBe(true);
      const heap = new ArrayBuffer(HEAP);
      const o = place(heap, 4, [init[0], init[3], init[1], init[2]]);
      a.adam(heap, o[0], o[1], o[2], o[3], n, 0.7, 0.9, 0.999, 0.01, 1e-8, o[0], o[2], o[3]);
      const onHeap = Buffer.concat([o[0], o[2], o[3]].map((off) => Buffer.from(new Uint8Array(heap, off, n * 4))));
      expect(onHeap.equals(whole)).toBe(true);
      // the main thread's norm (sumSquares) and data-parallel training's (reduceBlocks, one block) are one sum
      const sums = new Float64Array(1);
      a.reduceBlocks(Float32Array.from(init[3]), n, 1, 0, n, 1 << 16, sums);
      expect(a.sumSquares(heap, o[1], n)).toBe(sums[0]);
    },
  );

  withAddon(
    "a worker's product gives the main thread's bytes below 64M multiply-adds, and a product the same bytes run after run",
    () => {
      // OpenBLAS's result depends on its thread count (measured with 0.3.21: a [300, 300] x [300, 800] product
      // on 2 threads differs from 1 thread in 5% of its elements, by up to 2e-5), so the addon runs products
      // below 64M on the calling thread alone on the main thread, and every product on 1 thread while
      // workers compute: the decoding pool's products below 64M then give the main thread's bytes
      const a = require(addonPath()) as Addon;
      const r = rng(23);
      const sizes = [
        [64, 256, 1024],
        [96, 256, 2000],
        [7, 65, 33],
      ]; // M K N, all below 64M
      const heap = new ArrayBuffer(8 << 20);
      const product = (M: number, K: number, N: number) => {
        const [ao, bo, co] = [0, M * K * 4, (M * K + K * N) * 4];
        a.sgemm(heap, false, false, M, N, K, 1, ao, K, bo, N, 0, co, N);
        return Buffer.from(new Uint8Array(heap, co, M * N * 4));
      };
      const fill = (M: number, K: number, N: number) =>
        new Float32Array(heap, 0, M * K + K * N).set(randArray(r, M * K + K * N));
      const before = setBlasThreads(3); // several threads, whatever this machine has
      try {
        for (const [M, K, N] of sizes) {
          fill(M, K, N);
          const main = product(M, K, N);
          const undo = shareBlasThreads(2);
          try {
            expect(blasThreadInfo()!.blas).toBe(1);
            expect(product(M, K, N).equals(main), `[${M}, ${K}] x [${K}, ${N}]`).toBe(true);
          } finally {
            undo();
          }
        }
        // above 64M: split over the 3 threads, the same bytes every time
        fill(300, 300, 800);
        const big = product(300, 300, 800);
        expect(product(300, 300, 800).equals(big)).toBe(true);
      } finally {
        setBlasThreads(before);
      }
    },
  );
});

describe('scripts/build-native.mjs', () => {
  /** A copy of the install script and the addon's sources in a fresh folder (nothing built yet). */
  function copyPackage(): string {
    const tmp = mkdtempSync(path.join(os.tmpdir(), 'captioner-native-'));
    mkdirSync(path.join(tmp, 'scripts'));
    mkdirSync(path.join(tmp, 'native'));
    cpSync(path.join(repo, 'scripts', 'build-native.mjs'), path.join(tmp, 'scripts', 'build-native.mjs'));
    for (const f of readdirSync(path.join(repo, 'native'))) {
      if (/\.(c|h|gyp)$/.test(f)) cpSync(path.join(repo, 'native', f), path.join(tmp, 'native', f));
    }
    return tmp;
  }
  const built = (tmp: string) => existsSync(path.join(tmp, 'native', 'build', 'Release', 'captioner_native.node'));
  type Headers = { nodedir: string; from: string } | undefined;
  /** The install script's choice of headers (importing it runs nothing: it builds only when run as a program). */
  const script = async () =>
    (await import(pathToFileURL(path.join(repo, 'scripts', 'build-native.mjs')).href)) as {
      nodeHeaders: (o?: object) => Headers;
    };

  it('never fails the install: without a working compiler it says so in one line and exits 0', () => {
    const tmp = copyPackage();
    try {
      const env: NodeJS.ProcessEnv = {
        ...process.env,
        CC: '/bin/false',
        CXX: '/bin/false',
        npm_config_nodedir: process.env.npm_config_nodedir ?? '/usr',
      };
      delete env.CAPTIONER_NATIVE; // this suite also runs with CAPTIONER_NATIVE=0, which skips the build
      const r = spawnSync(process.execPath, [path.join(tmp, 'scripts', 'build-native.mjs')], {
        encoding: 'utf8',
        env,
        timeout: 120_000,
      });
      expect(r.status, r.stderr).toBe(0);
      expect(r.stderr).toMatch(
        /^captioner: native BLAS addon not built \(.+\); training and decoding run on the wasm kernels alone/,
      );
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
      expect(built(tmp)).toBe(false);
      const off = spawnSync(process.execPath, [path.join(tmp, 'scripts', 'build-native.mjs')], {
        encoding: 'utf8',
        env: { ...process.env, CAPTIONER_NATIVE: '0' },
      });
      expect(off.status).toBe(0);
      expect(off.stderr).toBe('');
    } finally {
      rmSync(tmp, { recursive: true, force: true });
    }
  });

  it("builds offline with the running Node's own headers: no npm_config_nodedir, an empty HOME and node-gyp cache, no way to download", async (ctx) => {
    const { nodeHeaders } = await script();
    const own = nodeHeaders({ env: {} });
    const compiler =
      spawnSync('sh', ['-c', 'command -v cc && command -v make && command -v python3'], { encoding: 'utf8' }).status ===
      0;
    if (!own || !compiler) {
      const why = !own
        ? `this Node (${process.execPath}) has no headers in <prefix>/include/node`
        : 'no C compiler, make or python3 here';
      if (needed) throw new Error(`test/tf/native: CI must build the addon offline: ${why}`);
      console.warn(`test/tf/native: the offline build is not tried here: ${why}`);
      return ctx.skip();
    }
    const tmp = copyPackage();
    try {
      const home = path.join(tmp, 'home');
      mkdirSync(home);
      const env: NodeJS.ProcessEnv = {
        ...process.env,
        HOME: home,
        npm_config_devdir: path.join(home, 'node-gyp'),
        npm_config_cache: path.join(home, 'npm'),
      };
      delete env.npm_config_nodedir;
      delete env.CAPTIONER_NATIVE;
      // any download would go to a closed port and fail at once
      Object.assign(env, {
        http_proxy: 'http://127.0.0.1:9',
        https_proxy: 'http://127.0.0.1:9',
        HTTP_PROXY: 'http://127.0.0.1:9',
        HTTPS_PROXY: 'http://127.0.0.1:9',
        npm_config_proxy: 'http://127.0.0.1:9',
        npm_config_https_proxy: 'http://127.0.0.1:9',
        npm_config_disturl: 'http://127.0.0.1:9/dist',
        NODEJS_ORG_MIRROR: 'http://127.0.0.1:9/dist',
      });
      const r = spawnSync(process.execPath, [path.join(tmp, 'scripts', 'build-native.mjs')], {
        encoding: 'utf8',
        env,
        timeout: 300_000,
      });
      expect(r.status, r.stderr).toBe(0);
      expect(r.stderr).toBe('');
      expect(built(tmp)).toBe(true);
      expect(readdirSync(home)).not.toContain('node-gyp'); // nothing fetched into node-gyp's cache
    } finally {
      rmSync(tmp, { recursive: true, force: true });
    }
  });

  it("chooses the headers: npm_config_nodedir first, else the running Node's installation when it holds this version's", async () => {
    const { nodeHeaders } = await script();
    const tmp = mkdtempSync(path.join(os.tmpdir(), 'captioner-headers-'));
    try {
      const prefix = path.join(tmp, 'prefix');
      const include = path.join(prefix, 'include', 'node');
      mkdirSync(include, { recursive: true });
      const execPath = path.join(prefix, 'bin', 'node');
      const at = (version: string) => nodeHeaders({ env: {}, execPath, version });
      expect(at('20.1.2')).toBeUndefined(); // no headers: node-gyp downloads, as before
      for (const f of ['node_api.h', 'node.h', 'common.gypi']) writeFileSync(path.join(include, f), '');
      writeFileSync(
        path.join(include, 'node_version.h'),
        '#define NODE_MAJOR_VERSION 20\n#define NODE_MINOR_VERSION 1\n#define NODE_PATCH_VERSION 2\n',
      );
      expect(at('20.1.2')).toMatchObject({ nodedir: prefix });
      expect(at('20.1.3')).toBeUndefined(); // another Node's headers
      expect(nodeHeaders({ env: { npm_config_nodedir: '/opt/node' }, execPath, version: '20.1.2' })).toMatchObject({
        nodedir: '/opt/node',
        from: 'npm_config_nodedir',
      });
      rmSync(path.join(include, 'node_api.h'));
      expect(at('20.1.2')).toBeUndefined();
    } finally {
      rmSync(tmp, { recursive: true, force: true });
    }
  });
});
