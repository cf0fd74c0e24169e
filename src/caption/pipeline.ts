// The batch-captioning pipeline: image files in, one result per file out, in input order, in bounded
// memory. Three stages overlap, connected by small bounded queues (src/caption/stream.ts):
//   read + decode  (a few files in flight; sharp decodes on libuv's thread pool)
//   -> encode      (batches of `encodeBatch` images; onnxruntime runs on its own threads)
//   -> caption     (batches of `decodeBatch` feature vectors; beam search on the tfjs backend)
// A file that cannot be read or decoded becomes an error result and travels on with the others; only
// encoder/decoder failures (model errors) stop the run.
import type { ImageErrorKind } from './types.js';
import { batched, buffered, mapOrdered } from './stream.js';

/** What the pipeline needs from a loaded model (injectable: tests use fakes). */
export interface CaptionStages {
  /** Read one image file and decode it into the encoder's input pixels; throws (ImageError) for bad files. */
  load(file: string | Buffer): Promise<Uint8Array>;
  encode(images: Uint8Array[]): Promise<Float32Array[]>;
  caption(
    features: Float32Array[],
  ): Promise<{ caption: string; logprob: number; words?: string[]; attention?: Float32Array[] }[]>;
}

export interface PipelineInput {
  path: string;
  /** The raw path to open, when `path` (for display) cannot be (a name that is not UTF-8). */
  file?: Buffer;
  /** Known to be unusable before reading (e.g. a broken symlink). */
  error?: string;
}

export type CaptionResult =
  | { image: string; caption: string; logprob: number; words?: string[]; attention?: Float32Array[] }
  | { image: string; error: string; kind?: ImageErrorKind | 'unreadable' };

export interface PipelineOptions {
  /** Files read and decoded concurrently. */
  readAhead: number;
  encodeBatch: number;
  decodeBatch: number;
  /** Images waiting between encoder and decoder (default: one decode batch). */
  queue?: number;
}

interface Slot<T> {
  image: string;
  value?: T;
  error?: string;
  kind?: ImageErrorKind | 'unreadable';
}

function failureOf(e: unknown): { error: string; kind?: ImageErrorKind | 'unreadable' } {
  const err = e as { reason?: unknown; kind?: unknown; message?: unknown };
  const kind = err && typeof err.kind === 'string' ? (err.kind as ImageErrorKind) : undefined;
  const reason = err && typeof err.reason === 'string' ? err.reason : String(err?.message ?? e);
  return { error: reason, kind };
}

/** Caption `inputs` in order; yields one result per input as soon as its batch is done (batches never wait
 * for more input: whatever is ready is run, so results stream when images arrive slowly). */
export async function* captionFiles(
  inputs: Iterable<PipelineInput> | AsyncIterable<PipelineInput>,
  stages: CaptionStages,
  opts: PipelineOptions,
): AsyncGenerator<CaptionResult> {
  const decoded = mapOrdered(
    inputs,
    async (f): Promise<Slot<Uint8Array>> => {
      if (f.error) return { image: f.path, error: f.error, kind: 'unreadable' };
      try {
        return { image: f.path, value: await stages.load(f.file ?? f.path) };
      } catch (e) {
        return { image: f.path, ...failureOf(e) };
      }
    },
    opts.readAhead,
  );
  const encoded = batched(
    buffered(decoded, Math.max(1, opts.encodeBatch)),
    opts.encodeBatch,
    (s: Slot<Uint8Array>) => s.value,
    (images) => stages.encode(images),
    (s, features): Slot<Float32Array> =>
      features ? { image: s.image, value: features } : { image: s.image, error: s.error, kind: s.kind },
  );
  const captioned = batched(
    buffered(encoded, Math.max(1, opts.queue ?? opts.decodeBatch)),
    opts.decodeBatch,
    (s: Slot<Float32Array>) => s.value,
    (features) => stages.caption(features),
    (s, r): CaptionResult =>
      r
        ? {
            image: s.image,
            caption: r.caption,
            logprob: r.logprob,
            ...(r.attention ? { words: r.words ?? [], attention: r.attention } : {}),
          }
        : { image: s.image, error: s.error ?? 'unknown error', ...(s.kind ? { kind: s.kind } : {}) },
  );
  yield* captioned;
}
