// Benchmark group 'decode': captions per second from image features with decodeFeatures (src/decode/
// decode.ts) at beam 1 and beam 3, for a decoder of realistic size (vocabulary 8000, 256 units, 4096-d
// features), batch 32, random weights. Random weights rarely pick the end token, so most captions run
// to maxLength: this is the slow end of decoding. Peers measured in the same run: for beam 1, the
// model's plain greedy loop (greedyDecode below), i.e. what the beam-search machinery costs; for
// beam 3, beam 1 (what the wider beam costs).
import { DecodeSchema } from '#dist/config/schema.js';
import { decodeFeatures } from '#dist/decode/decode.js';
import { disposeState } from '#dist/model/decoders/state.js';
import { MergeDecoder } from '#dist/model/decoders/merge.js';
import type { Decoder } from '#dist/model/decoders/types.js';
import { tf } from '#dist/tf/tf.js';
import { Vocab } from '#dist/text/vocab.js';
import { initBackend } from '#dist/tf/backend.js';
import { rng } from '#dist/util/random.js';
import type { BenchModule, BenchRow } from './types.js';

const VOCAB = 8000;
const UNITS = 256;
const FEATURES = 4096;
const BATCH = 32;

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

/** The peer: a plain greedy loop over the one-step decoder (argmax each step, no beam bookkeeping). */
async function greedyDecode(model: Decoder, images: Float32Array[], opts: { start: number; end: number; maxLength: number }): Promise<number[][]> {
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
    const decoder = MergeDecoder.create({ vocabSize: VOCAB, featureDim: FEATURES, embedDim: UNITS, units: UNITS, imageUnits: UNITS, hiddenUnits: UNITS, merge: 'add', dropout: 0 }, 5);
    const r = rng(9);
    const features = Array.from({ length: BATCH }, () => Float32Array.from({ length: FEATURES }, () => r() * 4));
    const model = { decoder, vocab };
    const timeIt = async (fn: () => Promise<unknown>) => {
      await fn(); // warm-up (kernel compilation, allocation)
      const times: number[] = [];
      for (let i = 0; i < reps; i++) {
        const t0 = performance.now();
        await fn();
        times.push((performance.now() - t0) / 1000);
      }
      return BATCH / median(times);
    };
    try {
      const cfg = (beam: number) => ({ ...DecodeSchema.parse({}), beam, maxLength, batchSize: BATCH });
      let steps = 0;
      const beam1 = await timeIt(async () => {
        const out = await decodeFeatures(model, features, cfg(1));
        steps = out.reduce((a, c) => a + c.tokens.length, 0) / out.length;
      });
      const greedy = await timeIt(() => greedyDecode(decoder, features, { start: vocab.start, end: vocab.end, maxLength }));
      const beam3 = await timeIt(() => decodeFeatures(model, features, cfg(3)));
      const notes = `vocab ${VOCAB}, ${UNITS} units, ${FEATURES}-d features, batch ${BATCH}, maxLength ${maxLength}, mean ${steps.toFixed(1)} words/caption (random weights); backend ${backend.detail}`;
      const rows: BenchRow[] = [
        { bench: 'decode', name: 'beam 1', value: beam1, unit: 'captions/s', peer: 'greedy loop', peerValue: greedy, ratio: beam1 / greedy, notes },
        { bench: 'decode', name: 'beam 3', value: beam3, unit: 'captions/s', peer: 'beam 1', peerValue: beam1, ratio: beam3 / beam1, notes },
      ];
      return rows;
    } finally {
      decoder.dispose();
    }
  },
};
