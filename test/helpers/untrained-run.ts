// A run folder for a decoder that did not come out of training (random weights): what tests and benchmarks
// caption with when training would only cost time. Written through src/model/runfolder.ts's writers, so it
// is the same format `train` writes.
// It imports nothing from src/ but types: the caller hands in the run-folder module it runs (tests: src/,
// benchmarks: #dist/), so one helper serves both without loading a second copy of the code.
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import type { Config } from '../../src/config/schema.js';
import type { EncoderInfo } from '../../src/features/types.js';
import type { Decoder } from '../../src/model/decoders/index.js';
import type * as RunFolder from '../../src/model/runfolder.js';

/** The writers of src/model/runfolder.ts this helper uses. */
export type RunFolderWriters = Pick<
  typeof RunFolder,
  'saveDecoder' | 'writeRunVocab' | 'writeRunConfig' | 'writeRunManifest' | 'RUN_FILES'
>;

export interface UntrainedRun {
  decoder: Decoder;
  /** Vocabulary tokens: <pad>, unknown, start, end, then words. */
  tokens: string[];
  /** The encoder whose features the decoder reads. */
  encoder: EncoderInfo;
  /** Resolved config to record (ConfigSchema.parse({}) for the defaults). */
  config: Config;
  name?: string;
}

/** Write `dir` as a run folder for a decoder that did not come out of training (best/ and last/ hold the same weights). */
export async function writeUntrainedRun(io: RunFolderWriters, dir: string, run: UntrainedRun): Promise<void> {
  const e = run.encoder;
  const config = run.config;
  await fs.mkdir(dir, { recursive: true });
  await io.saveDecoder(path.join(dir, 'best'), run.decoder);
  await io.saveDecoder(path.join(dir, 'last'), run.decoder);
  await io.writeRunVocab(dir, JSON.stringify({ tokens: run.tokens }) + '\n');
  await io.writeRunConfig(dir, config);
  await io.writeRunManifest(dir, {
    name: run.name ?? config.name,
    updatedAt: new Date().toISOString(),
    status: 'untrained',
    backend: 'n/a',
    dataset: { dir: '', fingerprint: '', vocabSize: run.tokens.length },
    features: {
      dir: '',
      fingerprint: '',
      encoder: {
        name: e.name,
        fingerprint: e.fingerprint,
        runtime: e.runtime,
        detail: e.detail,
        weights: e.weights,
        weightsFingerprint: e.weightsFingerprint,
        layer: e.layer,
        preprocessing: e.preprocessing,
      },
      shape: e.shape,
      dtype: 'float32',
    },
    model: { type: run.decoder.type, spec: { ...run.decoder.spec } },
    files: io.RUN_FILES,
    metrics: {},
  });
}
