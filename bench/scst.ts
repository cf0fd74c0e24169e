// Benchmark group 'scst': images per second of one self-critical training step (src/train/scst.ts:
// k = 5 sampled captions per image, leave-one-out mean baseline, CIDEr-D reward from
// src/eval/metrics/cider-reward.ts) against the cross-entropy step on the same images with 5 reference
// captions each, at small Flickr8k-like sizes (vocabulary 3,000, 4096-d features, 256 units, 16 images
// per batch, captions up to 16 tokens), merge decoder, on wasm, random weights. Random weights rarely
// draw the end token, so sampled captions run to maxLength: the slow end of SCST.
import { tf } from '#dist/tf/tf.js';
import { initBackend } from '#dist/tf/backend.js';
import { makeBatch } from '#dist/model/decoders/batch.js';
import { MergeDecoder, type MergeSpec } from '#dist/model/decoders/merge.js';
import type { Decoder } from '#dist/model/decoders/types.js';
import { CiderDReward } from '#dist/eval/metrics/cider-reward.js';
import { Adam, byWeightName } from '#dist/train/adam.js';
import { scstStep, wordRewardFn } from '#dist/train/scst.js';
import { rng } from '#dist/util/random.js';
import type { BenchModule, BenchRow } from './types.js';

const VOCAB = 3000;
const FEATURES = 4096;
const UNITS = 256;
const IMAGES = 16;
const K = 5;
const MAX_LENGTH = 16;

export const bench: BenchModule = {
  group: 'scst',
  async run({ quick }) {
    const prev = tf.getBackend();
    await initBackend('wasm', { quiet: true });
    const steps = quick ? 1 : 3;
    const spec: MergeSpec = {
      vocabSize: VOCAB,
      featureDim: FEATURES,
      embedDim: UNITS,
      units: UNITS,
      imageUnits: UNITS,
      hiddenUnits: UNITS,
      merge: 'add',
      dropout: 0.5,
    };
    const model = MergeDecoder.create(spec, 3);
    const decoder: Decoder = model;
    const adam = new Adam(model.weights, { learningRate: 5e-5, clipNorm: 5 });
    const r = rng(17);
    const tokens = ['<pad>', '<unk>', 'startseq', 'endseq', ...Array.from({ length: VOCAB - 4 }, (_, i) => `w${i}`)];
    const word = () => 4 + Math.floor(r() * (VOCAB - 4));
    const features = Array.from({ length: IMAGES }, () => Float32Array.from({ length: FEATURES }, () => r() * 4));
    const ids = features.map((_, i) => `img${i}`);
    const captions = ids.map(() =>
      Array.from({ length: K }, () => Array.from({ length: 8 + Math.floor(r() * 6) }, word)),
    );
    // the reward's document frequencies from a Flickr8k-sized training set (6,000 images), the batch's among them
    const refs: [string, string[][]][] = captions.map((cs, i) => [ids[i], cs.map((c) => c.map((t) => tokens[t]))]);
    for (let i = IMAGES; i < 6000; i++)
      refs.push([
        `train${i}`,
        Array.from({ length: 5 }, () => Array.from({ length: 8 + Math.floor(r() * 6) }, () => tokens[word()])),
      ]);
    const t0 = performance.now();
    const scorer = new CiderDReward(refs);
    const dfSeconds = (performance.now() - t0) / 1000;
    const rewardFn = wordRewardFn(scorer, tokens);
    const xeBatch = makeBatch(
      captions.flatMap((cs, i) => cs.map((c) => ({ features: features[i], tokens: [2, ...c, 3] }))),
      FEATURES,
    );
    const rows: BenchRow[] = [];
    try {
      const xeStep = async (i: number) => {
        const { value, grads } = tf.variableGrads(
          () => model.loss(xeBatch, { training: true, seed: i }),
          model.variables,
        );
        const norm = adam.apply(byWeightName(model.weights, grads));
        await value.data();
        tf.dispose([value, norm, ...Object.values(grads)]);
      };
      const sc = (i: number) =>
        scstStep(decoder, adam, { features, imageIds: ids }, rewardFn, {
          k: K,
          baseline: 'mean',
          maxLength: MAX_LENGTH,
          seed: i,
          start: 2,
          end: 3,
        });
      const time = async (fn: (i: number) => Promise<unknown>) => {
        await fn(0); // warm-up
        const s = performance.now();
        for (let i = 1; i <= steps; i++) await fn(i);
        return (performance.now() - s) / 1000 / steps;
      };
      const xe = await time(xeStep);
      let last = await sc(0);
      const scst = await time(async (i) => (last = await sc(i)));
      const sizes = `V ${VOCAB}, D ${FEATURES}, U ${UNITS}, ${IMAGES} images x ${K}`;
      rows.push({
        bench: 'scst',
        name: 'cross-entropy step wasm',
        value: IMAGES / xe,
        unit: 'images/s',
        notes: `${sizes} reference captions; ${xe.toFixed(2)} s/step`,
      });
      rows.push({
        bench: 'scst',
        name: 'scst step wasm',
        value: IMAGES / scst,
        unit: 'images/s',
        peer: 'cross-entropy step wasm',
        peerValue: IMAGES / xe,
        ratio: xe / scst,
        notes: `${sizes} samples, maxLength ${MAX_LENGTH}, mean length ${last.meanLength.toFixed(1)}; ${scst.toFixed(2)} s/step; reward df over 6,000 images ${dfSeconds.toFixed(2)} s`,
      });
    } finally {
      adam.dispose();
      model.dispose();
      if (prev) await tf.setBackend(prev);
    }
    return rows;
  },
};
