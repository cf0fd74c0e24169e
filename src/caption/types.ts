// The contract between a loaded model and its users (caption command, serve): bytes in, captions out.
import type { ImageErrorKind } from '../features/image.js';

export interface ImageInput {
  /** Caller's identifier (a path, a request id); echoed back, never interpreted. */
  id: string;
  bytes: Buffer;
}

/** Why an image could not be captioned; defined by the image decoder (features/image.ts), which finds out. */
export type { ImageErrorKind };

/** Where an attention model looked for each word (issue #13): grid [H, W], one row of H * W weights per word. */
export interface OutcomeAttention {
  grid: [number, number];
  words: string[];
  rows: number[][];
}

export type CaptionOutcome =
  | { ok: true; caption: string; tokens: string[]; logprob: number; attention?: OutcomeAttention }
  | { ok: false; error: string; kind: ImageErrorKind };

export interface CaptionOptions {
  /** Beam size; the model's configured default when absent. */
  beam?: number;
  /** Also return each caption's attention rows (attention models only; a ModelError otherwise). */
  attention?: boolean;
}

export interface Captioner {
  /** The model's name and how it runs, for health checks and logs. */
  readonly info: { name: string; encoder: string; backend: string };
  /** Caption a batch of encoded image files (JPEG, PNG, ...). One outcome per input, in order. */
  captionBatch(inputs: ImageInput[], options?: CaptionOptions): Promise<CaptionOutcome[]>;
  dispose(): Promise<void>;
}
