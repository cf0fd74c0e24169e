// The worker thread behind WorkerCaptioner (worker-captioner.ts): builds a Captioner by importing
// workerData.module and calling its export workerData.factory(...args), then captions the batches the
// main thread sends (image bytes arrive as transferred ArrayBuffers) until told to dispose. Errors of a
// batch go back as messages; an uncaught error ends this thread, which the main side reports as a crash.
import { pathToFileURL } from 'node:url';
import { parentPort, workerData } from 'node:worker_threads';
import type { Captioner } from '../caption/types.js';
import type { FromWorker, ToWorker, WorkerInit } from './worker-captioner.js';

const port = parentPort!;
const init = workerData as WorkerInit;
const post = (msg: FromWorker) => port.postMessage(msg);
const errorFields = (e: unknown) => ({ name: (e as Error)?.name ?? 'Error', message: (e as Error)?.message ?? String(e) });

let captioner: Captioner | null = null;

port.on('message', (msg: ToWorker) => {
  if (msg.op === 'caption') {
    const inputs = msg.inputs.map((i) => ({ id: i.id, bytes: Buffer.from(i.buffer, i.offset, i.length) }));
    (async () => {
      if (!captioner) throw new Error('the model is not loaded');
      return captioner.captionBatch(inputs, msg.options);
    })().then(
      (outcomes) => post({ op: 'done', id: msg.id, outcomes }),
      (e: unknown) => post({ op: 'error', id: msg.id, ...errorFields(e) }),
    );
  } else if (msg.op === 'dispose') {
    const c = captioner;
    captioner = null;
    (async () => {
      try {
        await c?.dispose();
      } finally {
        post({ op: 'disposed' });
        port.close();
      }
    })().catch(() => {});
  }
});

try {
  const url = /^file:/.test(init.module) ? init.module : pathToFileURL(init.module).href;
  const mod = (await import(url)) as Record<string, unknown>;
  const factory = mod[init.factory];
  if (typeof factory !== 'function') throw new Error(`${init.module} has no export ${init.factory}() to build the captioner`);
  captioner = (await (factory as (...a: unknown[]) => Captioner | Promise<Captioner>)(...init.args)) as Captioner;
  post({ op: 'ready', info: { ...captioner.info } });
} catch (e) {
  post({ op: 'load-error', ...errorFields(e) });
}
