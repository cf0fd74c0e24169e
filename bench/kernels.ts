// Benchmark group 'kernels': the wasm kernel overrides of src/tf/kernels/ against the stock tfjs
// 4.22 wasm kernels, in the same run. Throughputs in GFLOP/s (higher is better); ratio =
// patched / stock. Shapes are the caption model's training step (batch 64 x 34 tokens = 2176 rows).
// The three routes (stock, our wasm kernels, OpenBLAS) are switched through tfjs's kernel registry
// (test/helpers/kernel-routes.ts), whose stock kernels are captured when this module loads: before any
// group starts the wasm backend (bench/index.ts loads every group first).
import type { BenchModule, BenchRow } from './types.js';
import { tf } from '#dist/tf/tf.js';
import { loadWasmModule } from '#dist/tf/wasm.js';
import { wasmBatchMatMul } from '#dist/tf/kernels/BatchMatMul.js';
import { wasmFusedMatMul } from '#dist/tf/kernels/_FusedMatMul.js';
import { blasNote, initBackend } from '#dist/tf/backend.js';
import { defaultBlasThreads, addonStatus } from '#dist/tf/addon.js';
import { kernelRoutes } from '../test/helpers/kernel-routes.js';
import { median } from './stats.js';

await loadWasmModule();
const routes = kernelRoutes({ tf, wasmBatchMatMul, wasmFusedMatMul });

interface Case {
  name: string;
  /** Batch dims of A and B (default none). */
  batchA?: number[];
  batchB?: number[];
  M: number;
  K: number;
  N: number;
  tA: boolean;
  tB: boolean;
  quick: boolean;
}

const CASES: Case[] = [
  { name: 'matmul [2176x256]x[256x1024] transposeB', M: 2176, K: 256, N: 1024, tA: false, tB: true, quick: true },
  { name: 'matmul [2176x256]x[256x1024] plain', M: 2176, K: 256, N: 1024, tA: false, tB: false, quick: true },
  {
    name: 'matmul [2176x256]^T x[2176x1024] (dense weight grad)',
    M: 256,
    K: 2176,
    N: 1024,
    tA: true,
    tB: false,
    quick: true,
  },
  { name: 'matmul [64x1024]x[256x1024]^T (LSTM input grad)', M: 64, K: 1024, N: 256, tA: false, tB: true, quick: true },
  {
    name: 'batched matmul 16x[64x256]x[256x1024]',
    batchA: [16],
    batchB: [16],
    M: 64,
    K: 256,
    N: 1024,
    tA: false,
    tB: false,
    quick: true,
  },
  {
    name: 'batched matmul 16x[64x256]x[256x1024] (shared B)',
    batchA: [16],
    batchB: [],
    M: 64,
    K: 256,
    N: 1024,
    tA: false,
    tB: false,
    quick: true,
  },
  {
    name: 'matmul [2176x256]^T x[2176x8000] (output weight grad)',
    M: 256,
    K: 2176,
    N: 8000,
    tA: true,
    tB: false,
    quick: false,
  },
  {
    name: 'matmul [2176x8000]x[256x8000]^T (output input grad)',
    M: 2176,
    K: 8000,
    N: 256,
    tA: false,
    tB: true,
    quick: false,
  },
];

/** Milliseconds of one run of f (result read back). */
function once(f: () => tf.Tensor): number {
  const t0 = performance.now();
  const out = tf.tidy(f);
  out.dataSync();
  const ms = performance.now() - t0;
  out.dispose();
  return ms;
}

/**
 * Median ms of the stock kernel, our wasm wrappers and (when the native addon loads) OpenBLAS, runs
 * interleaved so load changes hit all alike.
 */
function compare(f: () => tf.Tensor, reps: number): { stock: number; patched: number; blas?: number } {
  const blas = addonStatus().available;
  const stock: number[] = [];
  const patched: number[] = [];
  const native: number[] = [];
  const on = (which: 'stock' | 'wasm' | 'blas') => routes.use(which === 'blas' ? 'addon' : which);
  try {
    for (const w of ['stock', 'wasm', ...(blas ? ['blas' as const] : [])] as const) {
      on(w);
      once(f); // warm-up
    }
    for (let i = 0; i < reps; i++) {
      on('stock');
      stock.push(once(f));
      on('wasm');
      patched.push(once(f));
      if (blas) {
        on('blas');
        native.push(once(f));
      }
    }
  } finally {
    routes.use('addon');
  }
  return { stock: median(stock), patched: median(patched), ...(blas ? { blas: median(native) } : {}) };
}

export const bench: BenchModule = {
  group: 'kernels',
  async run({ quick }) {
    await initBackend('wasm', { quiet: true });
    const rows: BenchRow[] = [];
    for (const c of CASES.filter((x) => x.quick || !quick)) {
      const batch = (c.batchA ?? []).reduce((p, d) => p * d, 1);
      const flops = 2 * c.M * c.K * c.N * batch;
      const reps = flops > 2e9 ? (quick ? 1 : 3) : quick ? 5 : 11;
      const a = tf.randomNormal([...(c.batchA ?? []), ...(c.tA ? [c.K, c.M] : [c.M, c.K])]);
      const b = tf.randomNormal([...(c.batchB ?? []), ...(c.tB ? [c.N, c.K] : [c.K, c.N])]);
      try {
        const { stock, patched, blas } = compare(() => tf.matMul(a, b, c.tA, c.tB), reps);
        const gf = (ms: number) => flops / ms / 1e6;
        if (blas !== undefined) {
          rows.push({
            bench: 'kernels',
            name: `OpenBLAS ${c.name}`,
            value: round(gf(blas)),
            unit: 'GFLOP/s',
            peer: 'wasm stock kernel',
            peerValue: round(gf(stock)),
            ratio: round(stock / blas),
            notes: `${blas.toFixed(1)} ms vs ${stock.toFixed(1)} ms; ${blasNote(false)} on ${defaultBlasThreads()} threads, through the native addon on the wasm heap`,
          });
        }
        rows.push({
          bench: 'kernels',
          name: `wasm ${c.name}`,
          value: round(gf(patched)),
          unit: 'GFLOP/s',
          peer: 'wasm stock kernel',
          peerValue: round(gf(stock)),
          ratio: round(stock / patched),
          notes: `${patched.toFixed(1)} ms vs ${stock.toFixed(1)} ms; our wasm wrappers (what runs without the native addon)`,
        });
      } finally {
        routes.use('addon');
        a.dispose();
        b.dispose();
      }
    }
    // UnsortedSegmentSum (Embedding gradient): the stock wasm backend has no kernel at all.
    const x = tf.randomNormal([2176, 256]);
    const ids = tf.randomUniform([2176], 0, 8000, 'int32') as tf.Tensor1D;
    try {
      once(() => tf.unsortedSegmentSum(x, ids, 8000));
      const ms = median(Array.from({ length: quick ? 3 : 10 }, () => once(() => tf.unsortedSegmentSum(x, ids, 8000))));
      rows.push({
        bench: 'kernels',
        name: 'wasm unsortedSegmentSum [2176x256] -> 8000 rows',
        value: round(ms),
        unit: 'ms',
        notes: 'stock tfjs-backend-wasm 4.22 lacks this kernel (Embedding cannot train)',
      });
    } finally {
      x.dispose();
      ids.dispose();
    }
    return rows;
  },
};

function round(v: number): number {
  return Math.round(v * 100) / 100;
}
