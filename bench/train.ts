// Benchmark group 'train': training throughput (target tokens per second) of the caption decoders at
// Flickr8k-like sizes, on wasm, against the same model trained in PyTorch on the CPU in the same run
// (when bench/torch.ts can run it; the peer at its best thread split). Merge: vocabulary 8,000,
// captions of 34 tokens, batch 64, 256 units, 4096-d fc2 features, plus the classic prefix-expansion
// formulation on tfjs for contrast. Attention (Show, Attend and Tell): vocabulary 8,000, batch 32,
// captions of 16 tokens (15 targets: about Flickr8k's mean of 12 words plus the end token, rounded up),
// 256 units / embedding / attention dim, over VGG16 block5_conv3's 14x14x512 grid (the paper's; --quick:
// block5_pool's 7x7), on the main thread and on the data-parallel workers. Transformer: the schema's
// default model.transformer (3 pre-LN blocks, 8 heads, model size 256 = model.units, feed-forward 1024,
// dropout 0.1, tied embeddings) over the same grids, captions and batch as attention, likewise. The cpu
// backend is left out: one step at these sizes takes minutes and several GB.
import { tf } from '#dist/tf/tf.js';
import { initBackend } from '#dist/tf/backend.js';
import { makeBatch, type CaptionBatch } from '#dist/model/decoders/batch.js';
import { MergeDecoder, mergeInitialWeights, type MergeSpec } from '#dist/model/decoders/merge.js';
import { AttentionDecoder, attentionInitialWeights, type AttentionSpec } from '#dist/model/decoders/attention.js';
import {
  TRANSFORMER_MAX_LENGTH,
  TransformerDecoder,
  transformerInitialWeights,
  type TransformerSpec,
} from '#dist/model/decoders/transformer.js';
import type { Decoder, FeatureNorm } from '#dist/model/decoders/index.js';
import { Adam, byWeightName } from '#dist/train/adam.js';
import { resolveWorkers } from '#dist/train/parallel/trainer.js';
import { createTrainer, type Trainer } from '#dist/train/trainer.js';
import { rng } from '#dist/util/random.js';
import { blasNote } from '#dist/tf/backend.js';
import { defaultBlasThreads, addonActive, setBlasThreads } from '#dist/tf/addon.js';
import { spawn } from 'node:child_process';
import { fileURLToPath, pathToFileURL } from 'node:url';
import type { BenchModule, BenchOptions, BenchRow } from './types.js';
import { median } from './stats.js';

export interface TrainBenchSizes {
  vocab: number;
  length: number;
  batch: number;
  units: number;
  featureDim: number;
}

export const FULL: TrainBenchSizes = { vocab: 8000, length: 34, batch: 64, units: 256, featureDim: 4096 };

export interface AttentionBenchSizes {
  vocab: number;
  /** Caption length with start and end tokens (length - 1 targets). */
  length: number;
  batch: number;
  /** Units = embedding = attention dim. */
  units: number;
  positions: number;
  channels: number;
}

/** 14 x 14 x 512: VGG16 block5_conv3, the paper's annotations. */
export const ATTENTION_FULL: AttentionBenchSizes = {
  vocab: 8000,
  length: 16,
  batch: 32,
  units: 256,
  positions: 196,
  channels: 512,
};
/** --quick: 7 x 7 x 512, VGG16 block5_pool. */
export const ATTENTION_QUICK: AttentionBenchSizes = { ...ATTENTION_FULL, positions: 49 };

/** The transformer's own sizes on top of the attention sizes (units = its model size). */
export interface TransformerBenchSizes extends AttentionBenchSizes {
  layers: number;
  heads: number;
  ffnDim: number;
}

/** The schema's default model.transformer (layers 3, heads 8, model size = model.units 256, ffn 4 x 256) on the attention sizes. */
export const TRANSFORMER_FULL: TransformerBenchSizes = { ...ATTENTION_FULL, layers: 3, heads: 8, ffnDim: 1024 };
export const TRANSFORMER_QUICK: TransformerBenchSizes = { ...TRANSFORMER_FULL, positions: 49 };

function transformerSpecOf(s: TransformerBenchSizes): TransformerSpec {
  return {
    vocabSize: s.vocab,
    positions: s.positions,
    channels: s.channels,
    layers: s.layers,
    heads: s.heads,
    modelDim: s.units,
    ffnDim: s.ffnDim,
    dropout: 0.1,
    positionEncoding: 'sinusoidal',
    imagePositions: 'learned',
    tieEmbeddings: true,
    maxLength: TRANSFORMER_MAX_LENGTH,
  };
}

function attentionSpecOf(s: AttentionBenchSizes): AttentionSpec {
  return {
    vocabSize: s.vocab,
    positions: s.positions,
    channels: s.channels,
    embedDim: s.units,
    units: s.units,
    attentionDim: s.units,
    dropout: 0.5,
    alphaReg: 1,
  };
}

/** What one timed training loop runs: a decoder kind, its spec and initial weights, and one batch. */
export interface Workload {
  kind: 'merge' | 'attention' | 'transformer';
  spec: MergeSpec | AttentionSpec | TransformerSpec;
  weights: Record<string, Float32Array>;
  norm: FeatureNorm;
  batch: CaptionBatch;
}

function identityNorm(dim: number): FeatureNorm {
  return { mean: new Float32Array(dim), std: new Float32Array(dim).fill(1) };
}

export function mergeWorkload(s: TrainBenchSizes): Workload {
  const spec = specOf(s);
  return {
    kind: 'merge',
    spec,
    weights: mergeInitialWeights(spec, 1),
    norm: identityNorm(s.featureDim),
    batch: syntheticBatch(s),
  };
}

/** B full-length captions over random grid features. */
function gridBatch(s: AttentionBenchSizes): CaptionBatch {
  const r = rng(1);
  const D = s.positions * s.channels;
  const items = Array.from({ length: s.batch }, () => ({
    features: Float32Array.from({ length: D }, () => r()),
    tokens: [2, ...Array.from({ length: s.length - 2 }, () => 4 + Math.floor(r() * (s.vocab - 4))), 3],
  }));
  return makeBatch(items, D);
}

export function attentionWorkload(s: AttentionBenchSizes): Workload {
  const spec = attentionSpecOf(s);
  return {
    kind: 'attention',
    spec,
    weights: attentionInitialWeights(spec, 1),
    norm: identityNorm(s.channels),
    batch: gridBatch(s),
  };
}

export function transformerWorkload(s: TransformerBenchSizes): Workload {
  const spec = transformerSpecOf(s);
  return {
    kind: 'transformer',
    spec,
    weights: transformerInitialWeights(spec, 1),
    norm: identityNorm(s.channels),
    batch: gridBatch(s),
  };
}

function decoderOf(w: Workload): Decoder {
  if (w.kind === 'merge') return new MergeDecoder(w.spec as MergeSpec, w.weights, w.norm);
  if (w.kind === 'attention') return new AttentionDecoder(w.spec as AttentionSpec, w.weights, w.norm);
  return new TransformerDecoder(w.spec as TransformerSpec, w.weights, w.norm);
}

function specOf(s: TrainBenchSizes): MergeSpec {
  return {
    vocabSize: s.vocab,
    featureDim: s.featureDim,
    embedDim: s.units,
    units: s.units,
    imageUnits: s.units,
    hiddenUnits: s.units,
    merge: 'add',
    dropout: 0.5,
  };
}

/** B full-length captions (every position has a real target). */
function syntheticBatch(s: TrainBenchSizes, seed = 1): CaptionBatch {
  const r = rng(seed);
  const items = Array.from({ length: s.batch }, () => ({
    features: Float32Array.from({ length: s.featureDim }, () => r()),
    tokens: [2, ...Array.from({ length: s.length - 2 }, () => 4 + Math.floor(r() * (s.vocab - 4))), 3],
  }));
  return makeBatch(items, s.featureDim);
}

/** Whole-caption teacher forcing on the main thread: seconds per optimizer step (Adam + clipping included). */
export async function timeWholeCaption(
  w: Workload,
  steps: number,
): Promise<{ secondsPerStep: number; tokensPerStep: number }> {
  const model = decoderOf(w);
  const adam = new Adam(model.weights, { learningRate: 1e-3, clipNorm: 5 });
  const batch = w.batch;
  const one = async (i: number) => {
    // the whole objective (attention: cross-entropy plus the attention regulariser)
    const { value, grads } = tf.variableGrads(() => model.loss(batch, { training: true, seed: i }), model.variables);
    adam.apply(byWeightName(model.weights, grads)).dispose();
    await value.data();
    tf.dispose([value, ...Object.values(grads)]);
  };
  try {
    await one(0); // warm-up
    const t0 = performance.now();
    for (let i = 1; i <= steps; i++) await one(i);
    return { secondsPerStep: (performance.now() - t0) / 1000 / steps, tokensPerStep: batch.targets.length };
  } finally {
    adam.dispose();
    model.dispose();
  }
}

export interface ParallelTiming {
  secondsPerStep: number;
  tokensPerStep: number;
  /** Mean ms per step: slowest replica's weight refresh and gradient, reduction + Adam, the rest (messaging), busiest replica's CPU. */
  ms: { load: number; compute: number; update: number; other: number; replicaCpu: number };
  /** CPU seconds per step of every thread in the process, workers included. */
  cpuPerStep: number;
}

function trainerOf(w: Workload, workers: number, update: 'main' | 'partitioned'): Promise<Trainer> {
  return createTrainer({
    kind: w.kind,
    spec: w.spec,
    weights: w.weights,
    norm: w.norm,
    workers,
    learningRate: 1e-3,
    clipNorm: 5,
    update,
  });
}

/** `steps` timed steps of a warm trainer on the workload's batch (seeds seed0 + 1 ...). */
async function timeSteps(t: Trainer, batch: CaptionBatch, steps: number, seed0: number): Promise<ParallelTiming> {
  const sum = { load: 0, compute: 0, update: 0, total: 0, cpu: 0 };
  const cpu0 = process.cpuUsage(); // every thread of the process, workers included
  const t0 = performance.now();
  for (let i = 1; i <= steps; i++) {
    const r = await t.step(batch, seed0 + i);
    for (const k of Object.keys(sum) as (keyof typeof sum)[]) sum[k] += r.ms[k];
  }
  const secondsPerStep = (performance.now() - t0) / 1000 / steps;
  const cpu = process.cpuUsage(cpu0);
  return {
    secondsPerStep,
    tokensPerStep: batch.targets.length,
    cpuPerStep: (cpu.user + cpu.system) / 1e6 / steps,
    ms: {
      load: sum.load / steps,
      compute: sum.compute / steps,
      update: sum.update / steps,
      other: (sum.total - sum.load - sum.compute - sum.update) / steps,
      replicaCpu: sum.cpu / steps,
    },
  };
}

/**
 * Training as train.workers sets it (src/train/trainer.ts: the main thread for 1, worker threads for more):
 * seconds per step after `warmup` untimed steps, and where the time goes. `update`: who applies Adam when
 * workers > 1 ('main' thread, or the workers each on a 'partitioned' range).
 */
export async function timeParallel(
  w: Workload,
  workers: number,
  steps: number,
  update: 'main' | 'partitioned' = 'main',
  warmup = 1,
): Promise<ParallelTiming> {
  const t = await trainerOf(w, workers, update);
  try {
    for (let i = 0; i < warmup; i++) await t.step(w.batch, -1 - i);
    return await timeSteps(t, w.batch, steps, 0);
  } finally {
    await t.dispose();
  }
}

/**
 * A scaling pair: workers 1 (the main thread) and `workers` (partitioned Adam), both built first and warmed
 * with `warmup` steps each (a new worker pool runs its first steps while V8 still compiles its code), then
 * timed in alternating rounds of `steps`, so a slow spell of the machine falls on both sides. Every round
 * of each side, in order.
 */
export async function timeScaling(
  w: Workload,
  workers: number,
  steps: number,
  rounds: number,
  warmup: number,
): Promise<{ one: ParallelTiming[]; many: ParallelTiming[] }> {
  const one = await trainerOf(w, 1, 'main');
  let many: Trainer | undefined;
  try {
    many = await trainerOf(w, workers, 'partitioned');
    for (let i = 0; i < warmup; i++) {
      await one.step(w.batch, -1 - i);
      await many.step(w.batch, -1 - i);
    }
    const out = { one: [] as ParallelTiming[], many: [] as ParallelTiming[] };
    for (let r = 0; r < rounds; r++) {
      out.one.push(await timeSteps(one, w.batch, steps, r * steps));
      out.many.push(await timeSteps(many, w.batch, steps, r * steps));
    }
    return out;
  } finally {
    await one.dispose();
    await many?.dispose();
  }
}

/**
 * The classic prefix-expansion method (one training sample per (caption prefix, next word), prefixes
 * left-padded to length-1, the LSTM's last output predicts the word), plain autodiff, on the same
 * weights: seconds per step of `samples` samples.
 */
export async function timePrefixExpansion(
  s: TrainBenchSizes,
  samples: number,
  steps: number,
): Promise<{ secondsPerStep: number; tokensPerStep: number }> {
  const model = MergeDecoder.create(specOf(s), 1);
  const w = model.weights;
  const adam = new Adam(w, { learningRate: 1e-3, clipNorm: 5 });
  const r = rng(2);
  const T = s.length - 1;
  const images = Float32Array.from({ length: samples * s.featureDim }, () => r());
  const seqs = new Int32Array(samples * T);
  const targets = new Int32Array(samples);
  for (let i = 0; i < samples; i++) {
    const len = 1 + (i % T); // prefix lengths 1..T, left-padded with 0
    for (let t = T - len; t < T; t++) seqs[i * T + t] = t === T - len ? 2 : 4 + Math.floor(r() * (s.vocab - 4));
    targets[i] = 4 + Math.floor(r() * (s.vocab - 4));
  }
  const U = s.units;
  const lossFn = () => {
    const x = tf.tensor2d(images, [samples, s.featureDim]);
    const img = tf.relu(tf.add(tf.matMul(tf.dropout(x, 0.5), w['image/kernel']), w['image/bias']));
    const emb = tf.dropout(tf.gather(w['embedding'], tf.tensor1d(seqs, 'int32')), 0.5); // [S*T, E]
    const zx = tf.reshape(tf.add(tf.matMul(emb as tf.Tensor2D, w['lstm/kernel']), w['lstm/bias']), [samples, T, 4 * U]);
    const zs = tf.unstack(zx, 1);
    const mask = tf.reshape(tf.cast(tf.notEqual(tf.tensor2d(seqs, [samples, T], 'int32'), 0), 'float32'), [
      samples,
      T,
      1,
    ]);
    const ms = tf.unstack(mask, 1);
    let h: tf.Tensor = tf.zeros([samples, U]);
    let c: tf.Tensor = tf.zeros([samples, U]);
    for (let t = 0; t < T; t++) {
      const z = tf.add(zs[t], tf.matMul(h as tf.Tensor2D, w['lstm/recurrent']));
      const [zi, zf, zg, zo] = tf.split(z, 4, 1);
      const c2 = tf.add(tf.mul(tf.sigmoid(zf), c), tf.mul(tf.sigmoid(zi), tf.tanh(zg)));
      const h2 = tf.mul(tf.sigmoid(zo), tf.tanh(c2));
      // masked steps (padding) keep the previous state, as Keras does with mask_zero
      c = tf.add(tf.mul(ms[t], c2), tf.mul(tf.sub(1, ms[t]), c));
      h = tf.add(tf.mul(ms[t], h2), tf.mul(tf.sub(1, ms[t]), h));
    }
    const hid = tf.relu(tf.add(tf.matMul(tf.add(h, img) as tf.Tensor2D, w['hidden/kernel']), w['hidden/bias']));
    const logits = tf.add(tf.matMul(hid as tf.Tensor2D, w['output/kernel']), w['output/bias']);
    return tf.losses.softmaxCrossEntropy(tf.oneHot(tf.tensor1d(targets, 'int32'), s.vocab), logits) as tf.Scalar;
  };
  const one = async () => {
    const { value, grads } = tf.variableGrads(lossFn, model.variables);
    adam.apply(byWeightName(w, grads)).dispose();
    await value.data();
    tf.dispose([value, ...Object.values(grads)]);
  };
  try {
    await one();
    const t0 = performance.now();
    for (let i = 0; i < steps; i++) await one();
    return { secondsPerStep: (performance.now() - t0) / 1000 / steps, tokensPerStep: samples };
  } finally {
    adam.dispose();
    model.dispose();
  }
}

/**
 * The PyTorch peer, when bench/torch.ts (written alongside) can run it; null otherwise. It sweeps the
 * torch x BLAS thread splits unless `fixed` names one (a second round at the split the sweep found).
 */
async function torchPeer(
  s: TrainBenchSizes | AttentionBenchSizes | TransformerBenchSizes,
  steps: number,
  fixed?: { threads: number; blasThreads: number },
): Promise<{ tokensPerSecond: number; detail: string; threads?: number; blasThreads?: number } | null> {
  try {
    const modPath = './torch.js';
    const mod = (await import(modPath)) as {
      runTrainPeer?: (
        o: Record<string, number | boolean | string>,
      ) => Promise<{ tokensPerSecond: number; detail?: string; threads?: number; blasThreads?: number } | null>;
    };
    if (typeof mod.runTrainPeer !== 'function') return null;
    // Same work as ours: every caption full length (length - 1 real targets), so padding plays no part.
    const full = s.length - 1;
    const common = {
      vocab: s.vocab,
      length: s.length,
      batch: s.batch,
      units: s.units,
      steps,
      minLen: full,
      maxLen: full,
      packed: true,
      ...(fixed ?? {}),
    };
    // an attention or transformer step takes about a second: the thread sweep times one step per configuration
    const opts =
      'layers' in s
        ? {
            ...common,
            model: 'transformer',
            positions: s.positions,
            channels: s.channels,
            layers: s.layers,
            heads: s.heads,
            ffnDim: s.ffnDim,
            sweepSteps: 1,
          }
        : 'positions' in s
          ? { ...common, model: 'attention', positions: s.positions, channels: s.channels, sweepSteps: 1 }
          : { ...common, featureDim: s.featureDim };
    const r = await mod.runTrainPeer(opts);
    return r
      ? {
          tokensPerSecond: r.tokensPerSecond,
          detail: r.detail ?? 'pytorch-cpu',
          threads: r.threads,
          blasThreads: r.blasThreads,
        }
      : null;
  } catch {
    return null;
  }
}

/**
 * Attention training throughput: ours on the main thread and on the data-parallel workers (one per core,
 * at least 2; partitioned Adam, the trainer's default) against the same model in PyTorch at its best thread split.
 */
export async function attentionRows(options: BenchOptions): Promise<BenchRow[]> {
  const a = options.quick ? ATTENTION_QUICK : ATTENTION_FULL;
  const steps = options.quick ? 1 : 3;
  const grid =
    a.positions === 196
      ? "VGG16 block5_conv3 14x14, the paper's"
      : a.positions === 49
        ? 'VGG16 block5_pool 7x7'
        : `${a.positions} positions`;
  const sizes = `V ${a.vocab}, L ${a.length} (${a.length - 1} targets), B ${a.batch}, U = E = A ${a.units}, P ${a.positions} x C ${a.channels} (${grid}); dropout 0.5, alphaReg 1`;
  const peer = await torchPeer(a, steps);
  const vsPeer = (v: number) =>
    peer ? { peer: peer.detail, peerValue: peer.tokensPerSecond, ratio: v / peer.tokensPerSecond } : {};
  const rows: BenchRow[] = [];
  const main = await timeWholeCaption(attentionWorkload(a), steps);
  const mainTps = main.tokensPerStep / main.secondsPerStep;
  rows.push({
    bench: 'train',
    name: 'attention whole-caption wasm (main thread)',
    value: mainTps,
    unit: 'tokens/s',
    ...vsPeer(mainTps),
    notes: `${sizes}; ${main.secondsPerStep.toFixed(2)} s/step${peer ? '' : '; PyTorch peer not available'}`,
  });
  const workers = Math.max(2, resolveWorkers('auto'));
  const p = await timeParallel(attentionWorkload(a), workers, steps, 'partitioned', 2);
  const v = p.tokensPerStep / p.secondsPerStep;
  rows.push({
    bench: 'train',
    name: `attention data-parallel wasm, workers ${workers} (partitioned Adam)`,
    value: v,
    unit: 'tokens/s',
    ...vsPeer(v),
    notes: `${sizes}; ${p.secondsPerStep.toFixed(2)} s/step, ${p.cpuPerStep.toFixed(2)} CPU-s/step; ${(v / mainTps).toFixed(2)}x the main thread`,
  });
  return rows;
}

/**
 * Transformer training throughput, as attentionRows: ours on the main thread and on the data-parallel workers
 * against the same model in PyTorch (bench/parity-peer.py build_transformer) at its best thread split.
 */
export async function transformerRows(options: BenchOptions): Promise<BenchRow[]> {
  const a = options.quick ? TRANSFORMER_QUICK : TRANSFORMER_FULL;
  const steps = options.quick ? 1 : 3;
  const grid =
    a.positions === 196
      ? 'VGG16 block5_conv3 14x14'
      : a.positions === 49
        ? 'VGG16 block5_pool 7x7'
        : `${a.positions} positions`;
  const sizes = `V ${a.vocab}, L ${a.length} (${a.length - 1} targets), B ${a.batch}, ${a.layers} pre-LN blocks, ${a.heads} heads, D ${a.units}, F ${a.ffnDim}, P ${a.positions} x C ${a.channels} (${grid}); dropout 0.1, tied embeddings`;
  const peer = await torchPeer(a, steps);
  const vsPeer = (v: number) =>
    peer ? { peer: peer.detail, peerValue: peer.tokensPerSecond, ratio: v / peer.tokensPerSecond } : {};
  const rows: BenchRow[] = [];
  const main = await timeWholeCaption(transformerWorkload(a), steps);
  const mainTps = main.tokensPerStep / main.secondsPerStep;
  rows.push({
    bench: 'train',
    name: 'transformer whole-caption wasm (main thread)',
    value: mainTps,
    unit: 'tokens/s',
    ...vsPeer(mainTps),
    notes: `${sizes}; ${main.secondsPerStep.toFixed(2)} s/step${peer ? '' : '; PyTorch peer not available'}`,
  });
  const workers = Math.max(2, resolveWorkers('auto'));
  const p = await timeParallel(transformerWorkload(a), workers, steps, 'partitioned', 2);
  const v = p.tokensPerStep / p.secondsPerStep;
  rows.push({
    bench: 'train',
    name: `transformer data-parallel wasm, workers ${workers} (partitioned Adam)`,
    value: v,
    unit: 'tokens/s',
    ...vsPeer(v),
    notes: `${sizes}; ${p.secondsPerStep.toFixed(2)} s/step, ${p.cpuPerStep.toFixed(2)} CPU-s/step; ${(v / mainTps).toFixed(2)}x the main thread`,
  });
  return rows;
}

export const bench: BenchModule = {
  group: 'train',
  async run(options: BenchOptions): Promise<BenchRow[]> {
    const s = FULL;
    const steps = options.quick ? 2 : 5;
    const sizes = `V ${s.vocab}, L ${s.length}, B ${s.batch}, U ${s.units}, D ${s.featureDim}`;
    // This machine's speed drifts by 10-30% over minutes (other tenants): the peer runs before, between
    // and after our rounds and its fastest round counts, as our faster main-thread round does.
    const peers = [await torchPeer(s, steps)];
    const prev = tf.getBackend();
    type Measured = { name: string; tps: number; notes: string };
    const measured: Measured[] = [];
    try {
      await initBackend('wasm', { quiet: true });
      const blas = addonActive();
      const engine = blas ? `wasm + ${blasNote(false).replace('matrix products by ', '')} matmuls` : 'wasm';
      // two rounds, alternating with the peer at its best split; each side's faster round counts
      const rounds = [await timeWholeCaption(mergeWorkload(s), steps)];
      const first = peers[0];
      if (first?.threads !== undefined && first.blasThreads !== undefined)
        peers.push(await torchPeer(s, steps, { threads: first.threads, blasThreads: first.blasThreads }));
      rounds.push(await timeWholeCaption(mergeWorkload(s), steps));
      const whole = rounds.reduce((a, b) => (b.secondsPerStep < a.secondsPerStep ? b : a));
      const tps = whole.tokensPerStep / whole.secondsPerStep;
      const ourRounds = rounds.map((r) => Math.round(r.tokensPerStep / r.secondsPerStep)).join(' / ');
      measured.push({
        name: `whole-caption ${engine} (main thread)`,
        tps,
        notes: `${sizes}; ${whole.secondsPerStep.toFixed(2)} s/step; our rounds ${ourRounds} tokens/s, the faster counts; BLAS threads: ${blas ? defaultBlasThreads() : '-'}`,
      });
      if (blas) {
        const plain = await withoutAddon<{ secondsPerStep: number; tokensPerStep: number }>({
          job: 'whole',
          sizes: s,
          steps: options.quick ? 1 : 2,
        });
        measured.push({
          name: 'whole-caption wasm kernels only (CAPTIONER_NATIVE=0)',
          tps: plain.tokensPerStep / plain.secondsPerStep,
          notes: `${sizes}; ${plain.secondsPerStep.toFixed(2)} s/step; what a machine without the native addon or OpenBLAS gets (a child process with CAPTIONER_NATIVE=0)`,
        });
      }
      const auto = resolveWorkers('auto');
      const autoNote = auto === 2 ? ' (= auto here)' : '';
      const split = (p: ParallelTiming) =>
        `busiest replica ${(p.ms.replicaCpu / 1000).toFixed(2)} CPU-s/step; ms/step: refresh ${p.ms.load.toFixed(0)}, gradient ${p.ms.compute.toFixed(0)}, reduce+Adam ${p.ms.update.toFixed(0)}, messaging ${p.ms.other.toFixed(0)}`;
      const tpsOf = (p: ParallelTiming) => p.tokensPerStep / p.secondsPerStep;
      // the trainer as configured: workers 1 and 2 (and auto where that is more), BLAS threads shared out
      type Config = { workers: number; update: 'main' | 'partitioned'; label: string };
      const configs: Config[] = [
        { workers: 1, update: 'main', label: `${engine}, workers 1 (main thread)` },
        { workers: 2, update: 'main', label: `data-parallel ${engine}, workers 2${autoNote} (main-thread Adam)` },
        {
          workers: 2,
          update: 'partitioned',
          label: `data-parallel ${engine}, workers 2${autoNote} (partitioned Adam)`,
        },
        ...(auto > 2
          ? [
              {
                workers: auto,
                update: 'partitioned' as const,
                label: `data-parallel ${engine}, workers auto (${auto}, partitioned Adam)`,
              },
            ]
          : []),
      ];
      let oneWorker = 0;
      for (const c of configs) {
        const p = await timeParallel(mergeWorkload(s), c.workers, steps, c.update, c.workers > 1 ? 2 : 1);
        const v = tpsOf(p);
        if (c.workers === 1) oneWorker = v;
        const vsOne = c.workers > 1 && oneWorker ? `; ${(v / oneWorker).toFixed(2)}x workers 1` : '';
        // while worker threads compute, OpenBLAS runs every product on its calling thread (src/tf/addon.ts)
        const threads = blas ? `; BLAS threads per worker: ${c.workers > 1 ? 1 : defaultBlasThreads()}` : '';
        measured.push({
          name: c.label,
          tps: v,
          notes: `${sizes}; ${p.secondsPerStep.toFixed(2)} s/step, ${p.cpuPerStep.toFixed(2)} CPU-s/step${vsOne}; ${split(p)}${threads}`,
        });
      }
      // The engine's own scaling, one core per replica. With the addon one replica's products already spread
      // over every core, so "workers 2 / workers 1" above compares two ways of using 2 cores. Each pair below
      // gives workers 1 (the main thread) 1 BLAS thread, as each of 2 workers has while they compute:
      // first with the addon's products on 1 BLAS thread, then without the addon at all (a child process with
      // CAPTIONER_NATIVE=0: wasm's own kernels and JS copies, reduction and Adam in every thread, as a machine
      // without OpenBLAS runs). Both sides are built and warmed first, then timed in alternating rounds; the
      // figure is the median of the rounds' ratios (workers 2 / workers 1 timed back to back).
      type Pair = { name: string; engine: string; withoutAddon?: boolean; steps: number; warmup: number };
      const pairs: Pair[] = blas
        ? [
            { name: 'one BLAS thread', engine: `${engine}, 1 BLAS thread per replica`, steps, warmup: 3 },
            {
              name: 'wasm only',
              engine: 'wasm kernels only',
              withoutAddon: true,
              steps: options.quick ? 1 : 2,
              warmup: options.quick ? 1 : 2,
            },
          ]
        : [{ name: 'wasm', engine: 'wasm', steps, warmup: 3 }];
      const pairRounds = options.quick ? 1 : 5;
      for (const pr of pairs) {
        let r: Awaited<ReturnType<typeof timeScaling>>;
        if (pr.withoutAddon) {
          r = await withoutAddon({
            job: 'scaling',
            sizes: s,
            workers: 2,
            steps: pr.steps,
            rounds: pairRounds,
            warmup: pr.warmup,
          });
        } else {
          const threadsBefore = blas ? setBlasThreads(1) : 0;
          try {
            r = await timeScaling(mergeWorkload(s), 2, pr.steps, pairRounds, pr.warmup);
          } finally {
            if (threadsBefore > 0) setBlasThreads(threadsBefore);
          }
        }
        // the ratio of each round's two sides (timed back to back, so they share the machine's speed of the
        // moment), and the median of those: one slow spell moves one round, not the figure
        const ratios = r.many.map((m, i) => tpsOf(m) / tpsOf(r.one[i]));
        const ratio = median(ratios);
        const fastest = (xs: ParallelTiming[]) => xs.reduce((a, b) => (b.secondsPerStep < a.secondsPerStep ? b : a));
        const one = fastest(r.one);
        const two = fastest(r.many);
        const roundsNote = (xs: ParallelTiming[]) =>
          `rounds ${xs.map((x) => Math.round(tpsOf(x))).join(' / ')} tokens/s, the fastest shown`;
        const common = `${pr.warmup} warm-up steps each, then ${pairRounds} alternating rounds of ${pr.steps} steps`;
        measured.push({
          name: `${pr.engine}, workers 1 (main thread)`,
          tps: tpsOf(one),
          notes: `${sizes}; ${one.secondsPerStep.toFixed(2)} s/step; ${common}; ${roundsNote(r.one)}; ${split(one)}`,
        });
        measured.push({
          name: `data-parallel ${pr.engine}, workers 2 (partitioned Adam)`,
          tps: tpsOf(two),
          notes: `${sizes}; ${two.secondsPerStep.toFixed(2)} s/step, ${two.cpuPerStep.toFixed(2)} CPU-s/step; **${ratio.toFixed(2)}x workers 1** (${pr.name} pair: the median of the rounds' ratios ${ratios.map((x) => x.toFixed(2)).join(' / ')}; fastest round against fastest round ${(tpsOf(two) / tpsOf(one)).toFixed(2)}x); ${common}; ${roundsNote(r.many)}; ${split(two)}`,
        });
      }
      if (first?.threads !== undefined && first.blasThreads !== undefined)
        peers.push(await torchPeer(s, steps, { threads: first.threads, blasThreads: first.blasThreads }));
      const got = peers.filter((x): x is NonNullable<typeof x> => x !== null);
      const peer = got.length ? got.reduce((a, b) => (b.tokensPerSecond > a.tokensPerSecond ? b : a)) : null;
      const peerNote =
        got.length > 1
          ? `; peer rounds (first, between and after ours): ${got.map((x) => Math.round(x.tokensPerSecond)).join(' / ')} tokens/s, the fastest counts`
          : '';
      const rows: BenchRow[] = measured.map((m) => ({
        bench: 'train',
        name: m.name,
        value: m.tps,
        unit: 'tokens/s',
        ...(peer ? { peer: peer.detail, peerValue: peer.tokensPerSecond, ratio: m.tps / peer.tokensPerSecond } : {}),
        notes: `${m.notes}${peer ? peerNote : '; PyTorch peer not available'}`,
      }));
      const prefix = await timePrefixExpansion(s, s.batch, options.quick ? 1 : 3);
      const ptps = prefix.tokensPerStep / prefix.secondsPerStep;
      rows.push({
        bench: 'train',
        name: `prefix-expansion ${engine}`,
        value: ptps,
        unit: 'tokens/s',
        peer: 'whole-caption (main thread)',
        peerValue: tps,
        ratio: ptps / tps,
        notes: `${sizes}; ${s.batch} prefixes per step`,
      });
      rows.push(...(await attentionRows(options)));
      rows.push(...(await transformerRows(options)));
      return rows;
    } finally {
      if (prev) await tf.setBackend(prev);
    }
  },
};

/** A measurement run where the addon is off in every thread (see withoutAddon). */
type AddonFreeJob =
  | { job: 'whole'; sizes: TrainBenchSizes; steps: number }
  | { job: 'scaling'; sizes: TrainBenchSizes; workers: number; steps: number; rounds: number; warmup: number };

/**
 * What a machine without the native addon measures: `job` (timeWholeCaption or timeScaling on the merge
 * workload) in a child process of this file with CAPTIONER_NATIVE=0, so its main thread and its workers run
 * wasm's own kernels and the JS copies, reduction and Adam. The result comes back as JSON on stdout.
 */
function withoutAddon<T>(job: AddonFreeJob): Promise<T> {
  const child = spawn(process.execPath, [fileURLToPath(import.meta.url), '--without-addon', JSON.stringify(job)], {
    env: { ...process.env, CAPTIONER_NATIVE: '0' },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  let out = '';
  child.stdout.on('data', (d) => (out += d));
  return new Promise<T>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code) =>
      code === 0
        ? resolve(JSON.parse(out) as T)
        : reject(new Error(`bench train --without-addon ${job.job}: exit code ${code}`)),
    );
  });
}

if (process.argv[2] === '--without-addon' && import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const job = JSON.parse(process.argv[3]) as AddonFreeJob;
  await initBackend('wasm', { quiet: true });
  if (addonActive()) throw new Error('bench train --without-addon: the addon is active despite CAPTIONER_NATIVE=0');
  const w = mergeWorkload(job.sizes);
  const result =
    job.job === 'whole'
      ? await timeWholeCaption(w, job.steps)
      : await timeScaling(w, job.workers, job.steps, job.rounds, job.warmup);
  process.stdout.write(JSON.stringify(result));
}
