// Worker-thread entry of serve's model worker (the host is ./threaded-captioner.ts): builds a Captioner by
// importing workerData.module and calling its export workerData.factory(...args), then captions the batches
// the main thread sends (image bytes arrive as transferred ArrayBuffers) until told to dispose. Requests,
// load errors and crashes travel through src/util/rpc.ts; an uncaught error ends this thread, which the host
// reports as a crash.
import { pathToFileURL } from 'node:url';
import type { CaptionOptions, CaptionOutcome, Captioner } from '../caption/types.js';
import { serveRequests } from '../util/rpc.js';

/** Given to the worker at start. */
export interface ModelWorkerInit {
  /** File path or file: URL of an ES module. */
  module: string;
  /** Name of the export that builds the Captioner: (...args) => Captioner | Promise<Captioner>. */
  factory: string;
  /** Its arguments (structured-cloned; a SharedArrayBuffer stays shared). */
  args: unknown[];
}

/** One image on its way to the worker: the bytes' ArrayBuffer is transferred, with the view's place in it. */
export interface WireInput {
  id: string;
  buffer: ArrayBuffer;
  offset: number;
  length: number;
}

export type ModelWorkerApi = {
  caption(r: { inputs: WireInput[]; options: CaptionOptions }): Promise<CaptionOutcome[]>;
  /** Dispose the captioner (what it holds: onnxruntime sessions); the host then ends the thread. */
  dispose(): Promise<void>;
};

serveRequests<ModelWorkerApi, Captioner['info']>(async (init: ModelWorkerInit) => {
  const url = /^file:/.test(init.module) ? init.module : pathToFileURL(init.module).href;
  const mod = (await import(url)) as Record<string, unknown>;
  const factory = mod[init.factory];
  if (typeof factory !== 'function')
    throw new Error(`${init.module} has no export ${init.factory}() to build the captioner`);
  let captioner: Captioner | null = await (factory as (...a: unknown[]) => Captioner | Promise<Captioner>)(
    ...init.args,
  );
  return {
    info: { ...captioner.info },
    api: {
      async caption({ inputs, options }) {
        if (!captioner) throw new Error('the model is not loaded');
        return captioner.captionBatch(
          inputs.map((i) => ({ id: i.id, bytes: Buffer.from(i.buffer, i.offset, i.length) })),
          options,
        );
      },
      async dispose() {
        const c = captioner;
        captioner = null;
        await c?.dispose();
      },
    },
  };
});
