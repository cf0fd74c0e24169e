// Image features -> captions: the one decoding entry point for eval, caption and serve. Batches images
// (cfg.batchSize), drives the pure beam search (src/decode/beam.ts) with a TF.js step function built on
// the model's one-step decoder, and frees every tensor it makes (tf.memory().numTensors is unchanged
// afterwards, also when it throws). The padding, unknown and start tokens are never generated.
//
// TF states. The beam search sees one opaque state per hypothesis; here a state is a row of a batch
// state (h, c, image: [N, units]) that one decoder step produced for all live hypotheses at once. The
// batch state is freed when the beam search has released all its rows. A step gathers the rows it needs
// into one [N', units] batch (no gather when they are the batch's rows in order), runs the decoder once,
// and copies the [N', V] log-probabilities to the host.
import type { DecodeConfig } from '../config/schema.js';
import { ModelError } from '../errors.js';
import type { CaptionDecoder, DecoderState } from '../model/decoder.js';
import type { Vocab } from '../text/vocab.js';
import { tf } from '../tf/tf.js';
import { beamSearch, type StepFn } from './beam.js';

/** What decoding needs of a trained model (a TrainedModel fits). */
export interface DecodeModel {
  decoder: CaptionDecoder;
  vocab: Vocab;
}

export type DecodeSettings = Pick<DecodeConfig, 'beam' | 'maxLength' | 'lengthPenalty' | 'alpha'> & { batchSize?: number };

export interface DecodedCaption {
  /** Generated token ids, without start and end tokens. */
  tokens: number[];
  words: string[];
  /** Words joined by single spaces. */
  caption: string;
  /** Sum of the log-probabilities of the generated tokens (end token included when finished). */
  logprob: number;
  /** False when cut at maxLength without an end token. */
  finished: boolean;
}

interface BatchState {
  state: DecoderState;
  rows: number;
  /** Row handles still held by the beam search. */
  refs: number;
}

interface RowState {
  batch: BatchState;
  row: number;
}

function rowsOf(batch: BatchState): RowState[] {
  batch.refs = batch.rows;
  return Array.from({ length: batch.rows }, (_, row) => ({ batch, row }));
}

function release(decoder: CaptionDecoder, s: RowState): void {
  if (--s.batch.refs === 0) decoder.disposeState(s.batch.state);
}

/** One batched decoder step over arbitrary rows of earlier batch states. */
function stepFunction(decoder: CaptionDecoder): StepFn<RowState> {
  const V = decoder.spec.vocabSize;
  return async (states, lastTokens) => {
    const n = states.length;
    // the rows this step reads, as one state [n, units]
    let input: DecoderState;
    let owned = false;
    const first = states[0].batch;
    if (states.every((s) => s.batch === first)) {
      const inOrder = n === first.rows && states.every((s, i) => s.row === i);
      input = inOrder ? first.state : decoder.gatherState(first.state, states.map((s) => s.row));
      owned = !inOrder;
    } else {
      // rows from several batch states (not produced by beamSearch today, but allowed): gather each, concat
      input = tf.tidy(() => {
        const parts = states.map((s) => decoder.gatherState(s.batch.state, [s.row]));
        const cat = (k: keyof DecoderState) => tf.concat(parts.map((p) => p[k]), 0) as tf.Tensor2D;
        return { h: cat('h'), c: cat('c'), image: cat('image') };
      });
      owned = true;
    }
    let logProbs: tf.Tensor2D | null = null;
    let next: DecoderState | null = null;
    try {
      const r = decoder.step(input, lastTokens);
      logProbs = r.logProbs;
      next = r.state;
      const flat = (await logProbs.data()) as Float32Array; // [n * V]
      const batch: BatchState = { state: next, rows: n, refs: 0 };
      next = null; // owned by the row handles now
      return { logProbs: Array.from({ length: n }, (_, i) => flat.subarray(i * V, (i + 1) * V)), states: rowsOf(batch) };
    } finally {
      logProbs?.dispose();
      if (next) decoder.disposeState(next);
      if (owned) decoder.disposeState(input);
    }
  };
}

/** Caption every feature vector; results in input order. */
export async function decodeFeatures(model: DecodeModel, features: Float32Array[], cfg: DecodeSettings): Promise<DecodedCaption[]> {
  const { decoder, vocab } = model;
  if (decoder.spec.vocabSize !== vocab.size) throw new ModelError(`decode: the decoder has ${decoder.spec.vocabSize} output words, the vocabulary ${vocab.size}`);
  if (!Number.isInteger(cfg.beam) || cfg.beam < 1) throw new ModelError(`decode: beam must be a positive integer, got ${cfg.beam}`);
  if (!Number.isInteger(cfg.maxLength) || cfg.maxLength < 1) throw new ModelError(`decode: maxLength must be a positive integer, got ${cfg.maxLength}`);
  const batchSize = Math.max(1, cfg.batchSize ?? 32);
  const step = stepFunction(decoder);
  const out: DecodedCaption[] = [];
  for (let i = 0; i < features.length; i += batchSize) {
    const chunk = features.slice(i, i + batchSize);
    const init: BatchState = { state: decoder.initState(chunk), rows: chunk.length, refs: 0 };
    let results;
    try {
      results = await beamSearch(rowsOf(init), step, {
        beam: cfg.beam,
        maxLength: cfg.maxLength,
        startId: vocab.start,
        endId: vocab.end,
        lengthPenalty: cfg.lengthPenalty,
        alpha: cfg.alpha,
        vocabSize: vocab.size,
        bannedIds: [vocab.pad, vocab.unk, vocab.start],
        disposeState: (s) => release(decoder, s),
      });
    } catch (e) {
      if (init.refs > 0) {
        init.refs = 0; // the search failed before taking the initial states
        decoder.disposeState(init.state);
      }
      throw e;
    }
    for (const r of results) {
      const words = r.tokens.map((t) => vocab.word(t));
      out.push({ tokens: r.tokens, words, caption: words.join(' '), logprob: r.logprob, finished: r.finished });
    }
  }
  return out;
}
