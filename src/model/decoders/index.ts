// The decoder registry: config `model.type` -> the kind that builds, sizes and loads that decoder.
// Training, beam search, the run folder, eval, caption and serve reach decoders only through this and
// the Decoder interface (./types.ts). Adding a decoder: one file in this folder exporting its
// DecoderKind, and one line below (plus its name in ModelSchema's `type` enum, src/config/schema.ts).
import { ModelError } from '../../errors.js';
import { attentionKind } from './attention.js';
import { mergeKind } from './merge.js';
import { transformerKind } from './transformer.js';
import type { DecoderKind, Recipe } from './types.js';
import type { InitScheme } from '../spec.js';

/** A kind of any spec and config type (the registry is keyed by name, read at run time). */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type AnyKind = DecoderKind<any, any>;

export const DECODERS: Record<string, AnyKind> = {
  merge: mergeKind,
  attention: attentionKind,
  transformer: transformerKind,
};

/** The kind registered as `type`; ModelError naming the known ones otherwise. */
export function decoderKind(type: string): AnyKind {
  const k = Object.hasOwn(DECODERS, type) ? DECODERS[type] : undefined;
  if (!k)
    throw new ModelError(`unknown decoder type ${JSON.stringify(type)} (known: ${Object.keys(DECODERS).join(', ')})`);
  return k;
}

/**
 * A validated spec for `model.type` from the model config section: the common fields (embedDim, units,
 * dropout, ...) with the kind's own section (model.<type>, e.g. model.attention) laid over them.
 */
export function specForConfig(
  model: { type: string } & Record<string, unknown>,
  vocabSize: number,
  featureShape: readonly number[],
): { kind: AnyKind; spec: unknown } {
  const kind = decoderKind(model.type);
  const own = model[model.type];
  const cfg = own && typeof own === 'object' && !Array.isArray(own) ? { ...model, ...own } : model;
  return { kind, spec: kind.specFromConfig(cfg, vocabSize, featureShape) };
}

/**
 * The recipe a config asks for: model.init, train.labelSmoothing and train.warmupSteps, each 'auto' taken
 * from `base` (by default the decoder's measured recipe; a resumed run passes its own recorded one).
 */
export function resolveRecipe(
  model: { type: string; init: InitScheme | 'auto' },
  train: { labelSmoothing: number | 'auto'; warmupSteps: number | 'auto' },
  base: Recipe = decoderKind(model.type).recipe,
): Recipe {
  return {
    init: model.init === 'auto' ? base.init : model.init,
    labelSmoothing: train.labelSmoothing === 'auto' ? base.labelSmoothing : train.labelSmoothing,
    warmupSteps: train.warmupSteps === 'auto' ? base.warmupSteps : train.warmupSteps,
  };
}

export type { Recipe } from './types.js';
export type { Decoder, DecoderKind, DecoderState, StepResult, LossOptions, LossTerms } from './types.js';
export type { CaptionBatch, FeatureNorm } from './batch.js';
