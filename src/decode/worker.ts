// Worker-thread entry of the decoding pool (./pool.ts; always run from the compiled dist/ file): starts its
// own TF backend (wasm with the project's kernels, or cpu), rebuilds the decoder from the weights the main
// thread sent, and decodes whole batches with decodeFeatures, one at a time, as the main thread would.
// Results go back with their attention rows' buffers transferred. Errors of a batch go back as messages;
// a failure while starting is reported with id -1.
import { parentPort, workerData } from 'node:worker_threads';
import { decoderKind } from '../model/decoders/index.js';
import type { Decoder } from '../model/decoders/types.js';
import { Vocab } from '../text/vocab.js';
import { initBackend } from '../tf/backend.js';
import { decodeFeatures } from './decode.js';
import type { DecodeWorkerInit, FromDecodeWorker, ToDecodeWorker } from './pool.js';

const port = parentPort!;
const init = workerData as DecodeWorkerInit;
const send = (msg: FromDecodeWorker, transfer: ArrayBuffer[] = []) => port.postMessage(msg, transfer);
const fail = (id: number, e: unknown) => send({ op: 'error', id, name: (e as Error)?.name ?? 'Error', message: (e as Error)?.message ?? String(e) });

let model: { decoder: Decoder; vocab: Vocab } | undefined;

async function start(): Promise<void> {
  await initBackend(init.backend, { threads: 1, quiet: true });
  const vocab = new Vocab(init.vocab);
  const decoder = decoderKind(init.type).create(init.spec, init.weights, init.norm) as Decoder;
  model = { decoder, vocab };
}

async function handle(msg: ToDecodeWorker): Promise<void> {
  const D = msg.n ? msg.flat.length / msg.n : 0;
  const features = Array.from({ length: msg.n }, (_, i) => msg.flat.subarray(i * D, (i + 1) * D)); // [n] x [D]
  const results = await decodeFeatures(model!, features, msg.cfg);
  const transfer = results.flatMap((r) => (r.attention ?? []).map((row) => row.buffer as ArrayBuffer));
  send({ op: 'done', id: msg.id, results }, [...new Set(transfer)]);
}

const ready = start();
ready.then(() => send({ op: 'ready' }), (e) => fail(-1, e));
// the pool sends one batch at a time per worker; queue anything behind start-up
let chain: Promise<void> = ready.catch(() => undefined);
port.on('message', (msg: ToDecodeWorker) => {
  chain = chain.then(() => handle(msg).catch((e) => fail(msg.id, e)));
});
