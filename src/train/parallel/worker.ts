// Worker-thread entry of the parallel trainer (always run from the compiled dist/ file): starts its own TF
// backend with the project's wasm kernels, builds a replica of the decoder, and serves gradient, reduction
// and Adam requests against the shared weights, gradients and moments.
import { parentPort, workerData } from 'node:worker_threads';
import { initBackend } from '../../tf/backend.js';
import { threadCpuMs } from './cpu.js';
import { adamArrays } from '../adam.js';
import { reduceGradients } from './reduce.js';
import { buildDecoder, loadFlat, sliceGradient, type TrainableDecoder } from './replica.js';
import type { FromWorker, ToWorker, WorkerInit } from './protocol.js';

const port = parentPort!;
const init = workerData as WorkerInit;
const total = init.layout.total;
const weights = new Float32Array(init.weights);
const grads = new Float32Array(init.grads);
const m = new Float32Array(init.m);
const v = new Float32Array(init.v);
const mine = grads.subarray(init.index * total, (init.index + 1) * total);
let model: TrainableDecoder | undefined;

const send = (msg: FromWorker) => port.postMessage(msg);

function fail(id: number, e: unknown): void {
  const err = e instanceof Error ? e : new Error(String(e));
  send({ op: 'error', id, name: err.name, message: err.message });
}

async function start(): Promise<void> {
  await initBackend(init.backend, { quiet: true });
  const values: Record<string, Float32Array> = {};
  init.layout.names.forEach((n, i) => (values[n] = weights.slice(init.layout.offsets[i], init.layout.offsets[i] + init.layout.sizes[i])));
  model = buildDecoder(init.kind, init.spec, values, init.norm);
}

async function handle(msg: ToWorker): Promise<void> {
  switch (msg.op) {
    case 'grad': {
      const c0 = threadCpuMs();
      const t0 = performance.now();
      loadFlat(model!, init.layout, weights);
      const t1 = performance.now();
      const { loss, total: objective } = await sliceGradient(model!, init.layout, msg.batch, msg.weights, msg.seed, mine);
      const c1 = threadCpuMs();
      send({ op: 'done', id: msg.id, loss, total: objective, ms: { load: t1 - t0, compute: performance.now() - t1, ...(c0 !== undefined && c1 !== undefined ? { cpu: c1 - c0 } : {}) } });
      return;
    }
    case 'reduce': {
      const t0 = performance.now();
      const blocks = reduceGradients(grads, total, msg.parts, msg.from, msg.to);
      send({ op: 'done', id: msg.id, blocks, ms: { compute: performance.now() - t0 } });
      return;
    }
    case 'adam': {
      const t0 = performance.now();
      adamArrays(msg.factors, weights, m, v, grads, msg.from, msg.to);
      send({ op: 'done', id: msg.id, ms: { compute: performance.now() - t0 } });
    }
  }
}

const ready = start();
ready.then(() => send({ op: 'ready' }), (e) => fail(-1, e));
// requests arrive one at a time (the trainer awaits each); queue them behind start-up
let chain: Promise<void> = ready.catch(() => undefined);
port.on('message', (msg: ToWorker) => {
  chain = chain.then(() => handle(msg).catch((e) => fail(msg.id, e)));
});
