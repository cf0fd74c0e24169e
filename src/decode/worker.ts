// Worker-thread entry of the decoding pool (./pool.ts; started from the same build as the pool: src/ or
// dist/): starts its own TF backend (wasm with the project's kernels, or cpu), rebuilds the decoder from the
// weights the main thread sent, and decodes whole batches with decodeFeatures, one at a time, as the main
// thread would. Results go back with their attention rows' buffers transferred. Requests, start-up errors
// and crashes travel through src/util/rpc.ts.
import { decoderKind } from '../model/decoders/index.js';
import type { Decoder } from '../model/decoders/types.js';
import { Vocab } from '../text/vocab.js';
import { initBackend } from '../tf/backend.js';
import { serveRequests, withTransfer, type Transfer } from '../util/rpc.js';
import { decodeFeatures, type DecodedCaption, type DecodeSettings } from './decode.js';

/** Given to a decode worker at start. */
export interface DecodeWorkerInit {
  backend: 'wasm' | 'cpu';
  type: string;
  spec: unknown;
  weights: Record<string, Float32Array>;
  norm: { mean: Float32Array; std: Float32Array };
  vocab: string[];
}

/** One batch: n feature vectors of equal length, flat [n * D]. */
export interface DecodeRequest {
  flat: Float32Array;
  n: number;
  cfg: DecodeSettings;
}

export type DecodeWorkerApi = {
  decode(req: DecodeRequest): Promise<Transfer<DecodedCaption[]>>;
};

serveRequests<DecodeWorkerApi>(async (init: DecodeWorkerInit) => {
  await initBackend(init.backend, { threads: 1, quiet: true });
  const vocab = new Vocab(init.vocab);
  const decoder = decoderKind(init.type).create(init.spec, init.weights, init.norm) as Decoder;
  const model = { decoder, vocab };
  return {
    api: {
      async decode({ flat, n, cfg }: DecodeRequest) {
        const D = n ? flat.length / n : 0;
        const features = Array.from({ length: n }, (_, i) => flat.subarray(i * D, (i + 1) * D)); // [n] x [D]
        const results = await decodeFeatures(model, features, cfg);
        const rows = results.flatMap((r) => (r.attention ?? []).map((row) => row.buffer as ArrayBuffer));
        return withTransfer(results, [...new Set(rows)]);
      },
    },
  };
});
