// Image features -> captions: the one decoding entry point for eval, caption and serve. Batches images
// (cfg.batchSize), drives the pure beam search (src/decode/beam.ts) with a TF.js step function built on
// the model's one-step decoder, and frees every tensor it makes (tf.memory().numTensors is unchanged
// afterwards, also when it throws). The padding, unknown and start tokens are never generated.
//
// The decoder is reached only through the Decoder interface (src/model/decoders/types.ts), so every
// decoder type decodes the same way. With `attention: true` (attention decoders only) each caption also
// gets the attention rows of its hypothesis: one [P] row per word (P image positions).
//
// TF states. The beam search sees one opaque state per hypothesis; here a state is a row of a batch
// state (every tensor [N, ...]) that one decoder step produced for all live hypotheses at once. The
// batch state is freed when the beam search has released all its rows. A step gathers the rows it needs
// into one [N', units] batch (no gather when they are the batch's rows in order), runs the decoder once,
// and copies the [N', V] log-probabilities to the host.
import type { DecodeConfig } from '../config/schema.js';
import { ModelError } from '../errors.js';
import type { Decoder, DecoderState } from '../model/decoders/types.js';
import { concatStates, disposeState, gatherState } from '../model/decoders/state.js';
import type { Vocab } from '../text/vocab.js';
import type { tf } from '../tf/tf.js';
import { beamSearch, type StepFn } from './beam.js';

/** What decoding needs of a trained model (a TrainedModel fits). */
export interface DecodeModel {
  decoder: Decoder;
  vocab: Vocab;
}

export type DecodeSettings = Pick<DecodeConfig, 'beam' | 'maxLength' | 'lengthPenalty' | 'alpha'> & {
  batchSize?: number;
  /** Return each caption's attention rows (attention decoders only; ModelError otherwise). */
  attention?: boolean;
};

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
  /** With `attention`: one row of P attention weights per word (the step that generated it). */
  attention?: Float32Array[];
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

function release(s: RowState): void {
  if (--s.batch.refs === 0) disposeState(s.batch.state);
}

/** One batched decoder step over arbitrary rows of earlier batch states. */
function stepFunction(decoder: Decoder, attention: boolean): StepFn<RowState> {
  const V = decoder.spec.vocabSize;
  return async (states, lastTokens) => {
    const n = states.length;
    // the rows this step reads, as one state [n, units]
    let input: DecoderState;
    let owned = false;
    const first = states[0].batch;
    if (states.every((s) => s.batch === first)) {
      const inOrder = n === first.rows && states.every((s, i) => s.row === i);
      input = inOrder
        ? first.state
        : gatherState(
            first.state,
            states.map((s) => s.row),
          );
      owned = !inOrder;
    } else {
      // rows from several batch states (not produced by beamSearch today, but allowed): gather each, concat
      const parts = states.map((s) => gatherState(s.batch.state, [s.row]));
      try {
        input = concatStates(parts);
      } finally {
        parts.forEach(disposeState);
      }
      owned = true;
    }
    let logProbs: tf.Tensor2D | null = null;
    let alpha: tf.Tensor2D | undefined;
    let next: DecoderState | null = null;
    try {
      const r = decoder.step(input, lastTokens, attention ? { attention: true } : undefined);
      logProbs = r.logProbs;
      alpha = r.attention;
      next = r.state;
      if (attention && !alpha)
        throw new ModelError(`decode: the ${decoder.type} decoder has no attention weights to return`);
      const flat = (await r.logProbs.data()) as Float32Array; // [n * V]
      let rows: Float32Array[] | undefined;
      if (alpha) {
        const P = alpha.shape[1];
        const a = (await alpha.data()) as Float32Array; // [n * P]
        rows = Array.from({ length: n }, (_, i) => a.slice(i * P, (i + 1) * P));
      }
      const batch: BatchState = { state: next, rows: n, refs: 0 };
      next = null; // owned by the row handles now
      return {
        logProbs: Array.from({ length: n }, (_, i) => flat.subarray(i * V, (i + 1) * V)),
        states: rowsOf(batch),
        ...(rows ? { attention: rows } : {}),
      };
    } finally {
      logProbs?.dispose();
      alpha?.dispose();
      if (next) disposeState(next);
      if (owned) disposeState(input);
    }
  };
}

/** Caption every feature vector; results in input order. */
export async function decodeFeatures(
  model: DecodeModel,
  features: Float32Array[],
  cfg: DecodeSettings,
): Promise<DecodedCaption[]> {
  const { decoder, vocab } = model;
  if (decoder.spec.vocabSize !== vocab.size)
    throw new ModelError(
      `decode: the decoder has ${decoder.spec.vocabSize} output words, the vocabulary ${vocab.size}`,
    );
  if (!Number.isInteger(cfg.beam) || cfg.beam < 1)
    throw new ModelError(`decode: beam must be a positive integer, got ${cfg.beam}`);
  if (!Number.isInteger(cfg.maxLength) || cfg.maxLength < 1)
    throw new ModelError(`decode: maxLength must be a positive integer, got ${cfg.maxLength}`);
  const batchSize = Math.max(1, cfg.batchSize ?? 32);
  const step = stepFunction(decoder, !!cfg.attention);
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
        disposeState: release,
        attention: !!cfg.attention,
      });
    } catch (e) {
      if (init.refs > 0) {
        init.refs = 0; // the search failed before taking the initial states
        disposeState(init.state);
      }
      throw e;
    }
    for (const r of results) {
      const words = r.tokens.map((t) => vocab.word(t));
      out.push({
        tokens: r.tokens,
        words,
        caption: words.join(' '),
        logprob: r.logprob,
        finished: r.finished,
        ...(r.attention ? { attention: r.attention } : {}),
      });
    }
  }
  return out;
}
