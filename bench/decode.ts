// Benchmark group 'decode': captions per second from image features with decodeFeatures (src/decode/
// decode.ts) at beam 1 and beam 3, for a decoder of realistic size (vocabulary 8000, 256 units, 4096-d
// features), batch 32, random weights. Random weights rarely pick the end token, so most captions run
// to maxLength: this is the slow end of decoding. Peers measured in the same run: for beam 1, the
// model's plain greedy loop (greedyDecode below), i.e. what the beam-search machinery costs; for
// beam 3, beam 1 (what the wider beam costs). Row 'beam 3, N workers' decodes one batch per worker
// thread at once with the decoding pool (src/decode/pool.ts, decode.workers N = this machine's cores, at
// least 2); its peer is the main-thread beam 3 row (the same batches, one after another). Worker start-up
// (weights copied, wasm started) is not in the timing; the notes give it.
import { DecodeSchema } from '#dist/config/schema.js';
import { decodeFeatures } from '#dist/decode/decode.js';
import { startDecoder } from '#dist/decode/pool.js';
import { disposeState } from '#dist/model/decoders/state.js';
import { MergeDecoder } from '#dist/model/decoders/merge.js';
import type { Decoder } from '#dist/model/decoders/types.js';
import { tf } from '#dist/tf/tf.js';
import { Vocab } from '#dist/text/vocab.js';
import { initBackend } from '#dist/tf/backend.js';
import { rng } from '#dist/util/random.js';
import { availableParallelism } from 'node:os';
import type { BenchModule, BenchRow } from './types.js';
import { median } from './stats.js';

const VOCAB = 8000;
const UNITS = 256;
const FEATURES = 4096;
const BATCH = 32;

/** The peer: a plain greedy loop over the one-step decoder (argmax each step, no beam bookkeeping). */
async function greedyDecode(
  model: Decoder,
  images: Float32Array[],
  opts: { start: number; end: number; maxLength: number },
): Promise<number[][]> {
  const out: number[][] = images.map(() => []);
  const done = images.map(() => false);
  let state = model.initState(images);
  let tokens = images.map(() => opts.start);
  try {
    for (let t = 0; t < opts.maxLength && done.some((d) => !d); t++) {
      const r = model.step(state, tokens);
      disposeState(state);
      state = r.state;
      const best = tf.tidy(() => tf.argMax(r.logProbs, 1));
      r.logProbs.dispose();
      tokens = Array.from(await best.data());
      best.dispose();
      tokens.forEach((id, i) => {
        if (done[i]) return;
        if (id === opts.end) done[i] = true;
        else out[i].push(id);
      });
    }
  } finally {
    disposeState(state);
  }
  return out;
}

export const bench: BenchModule = {
  group: 'decode',
  async run({ quick }) {
    const backend = await initBackend('auto', { quiet: true, threads: 0 });
    const maxLength = quick ? 12 : 34;
    const reps = quick ? 1 : 3;
    const tokens = ['<pad>', '<unk>', 'startseq', 'endseq', ...Array.from({ length: VOCAB - 4 }, (_, i) => `w${i}`)];
    const vocab = new Vocab(tokens);
    const decoder = MergeDecoder.create(
      {
        vocabSize: VOCAB,
        featureDim: FEATURES,
        embedDim: UNITS,
        units: UNITS,
        imageUnits: UNITS,
        hiddenUnits: UNITS,
        merge: 'add',
        dropout: 0,
      },
      5,
    );
    const r = rng(9);
    const features = Array.from({ length: BATCH }, () => Float32Array.from({ length: FEATURES }, () => r() * 4));
    const model = { decoder, vocab };
    const timeIt = async (fn: () => Promise<unknown>, n = BATCH) => {
      await fn(); // warm-up (kernel compilation, allocation)
      const times: number[] = [];
      for (let i = 0; i < reps; i++) {
        const t0 = performance.now();
        await fn();
        times.push((performance.now() - t0) / 1000);
      }
      return n / median(times);
    };
    try {
      const cfg = (beam: number) => ({ ...DecodeSchema.parse({}), beam, maxLength, batchSize: BATCH });
      let steps = 0;
      const beam1 = await timeIt(async () => {
        const out = await decodeFeatures(model, features, cfg(1));
        steps = out.reduce((a, c) => a + c.tokens.length, 0) / out.length;
      });
      const greedy = await timeIt(() =>
        greedyDecode(decoder, features, { start: vocab.start, end: vocab.end, maxLength }),
      );
      const beam3 = await timeIt(() => decodeFeatures(model, features, cfg(3)));
      // the decoding pool: one batch of BATCH images per worker, all at once
      const workers = Math.max(2, availableParallelism());
      const many = Array.from({ length: workers }, () => features).flat();
      const t0 = performance.now();
      const pool = await startDecoder(model, { workers });
      const startMs = performance.now() - t0;
      let pooled: number;
      try {
        pooled = await timeIt(() => pool.decode(many, cfg(3)), many.length);
      } finally {
        await pool.dispose();
      }
      const notes = `vocab ${VOCAB}, ${UNITS} units, ${FEATURES}-d features, batch ${BATCH}, maxLength ${maxLength}, mean ${steps.toFixed(1)} words/caption (random weights); backend ${backend.detail}`;
      const rows: BenchRow[] = [
        {
          bench: 'decode',
          name: 'beam 1',
          value: beam1,
          unit: 'captions/s',
          peer: 'greedy loop',
          peerValue: greedy,
          ratio: beam1 / greedy,
          notes,
        },
        {
          bench: 'decode',
          name: 'beam 3',
          value: beam3,
          unit: 'captions/s',
          peer: 'beam 1',
          peerValue: beam1,
          ratio: beam3 / beam1,
          notes,
        },
        {
          bench: 'decode',
          name: `beam 3, ${workers} workers`,
          value: pooled,
          unit: 'captions/s',
          peer: 'beam 3 (main thread)',
          peerValue: beam3,
          ratio: pooled / beam3,
          notes: `decode.workers ${workers} (${availableParallelism()} cores), ${workers} batches of ${BATCH} at once, 1 ${pool.backend} thread per worker; start-up ${startMs.toFixed(0)} ms (not timed); ${notes}`,
        },
      ];
      return rows;
    } finally {
      decoder.dispose();
    }
  },
};
