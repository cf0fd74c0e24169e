// Worker-thread entry of the parallel trainer (started from the same build as the trainer: src/ or dist/):
// starts its own wasm backend with the project's kernels, builds a replica of the decoder, and serves
// gradient, reduction and Adam requests (src/util/rpc.ts) against the shared weights, gradients and moments.
import { initBackend } from '../../tf/backend.js';
import { serveRequests } from '../../util/rpc.js';
import { threadCpuMs } from './cpu.js';
import { adamArrays } from '../adam.js';
import { reduceGradients } from './reduce.js';
import { buildDecoder, loadFlat, sliceGradient } from './replica.js';
import type { TrainWorkerApi, WorkerInit } from './protocol.js';

serveRequests<TrainWorkerApi>(async (init: WorkerInit) => {
  const total = init.layout.total;
  const weights = new Float32Array(init.weights);
  const grads = new Float32Array(init.grads);
  const m = new Float32Array(init.m);
  const v = new Float32Array(init.v);
  const mine = grads.subarray(init.index * total, (init.index + 1) * total);
  await initBackend('wasm', { quiet: true });
  const values: Record<string, Float32Array> = {};
  init.layout.names.forEach(
    (n, i) => (values[n] = weights.slice(init.layout.offsets[i], init.layout.offsets[i] + init.layout.sizes[i])),
  );
  const model = buildDecoder(init.kind, init.spec, values, init.norm);
  return {
    api: {
      async grad({ batch, weights: sw, seed }) {
        const c0 = threadCpuMs();
        const t0 = performance.now();
        loadFlat(model, init.layout, weights);
        const t1 = performance.now();
        const { loss, total: objective } = await sliceGradient(
          model,
          init.layout,
          batch,
          sw,
          seed,
          mine,
          init.labelSmoothing,
        );
        const c1 = threadCpuMs();
        return {
          loss,
          total: objective,
          ms: {
            load: t1 - t0,
            compute: performance.now() - t1,
            ...(c0 !== undefined && c1 !== undefined ? { cpu: c1 - c0 } : {}),
          },
        };
      },
      reduce({ parts, from, to }) {
        const t0 = performance.now();
        const blocks = reduceGradients(grads, total, parts, from, to);
        return { blocks, ms: { compute: performance.now() - t0 } };
      },
      adam({ factors, from, to }) {
        const t0 = performance.now();
        adamArrays(factors, weights, m, v, grads, from, to);
        return { ms: { compute: performance.now() - t0 } };
      },
    },
  };
});
