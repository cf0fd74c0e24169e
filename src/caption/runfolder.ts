// A minimal self-describing run folder, written the way `captioner train` lays it out (manifest.json,
// vocab.json, config.yaml, best/ weights), for a decoder that did not come out of training: benchmarks
// and tests use it to exercise loading and captioning without a training run.
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import YAML from 'yaml';
import { ConfigSchema, type Config } from '../config/schema.js';
import type { EncoderInfo } from '../features/encoder.js';
import type { CaptionDecoder } from '../model/decoder.js';
import { saveDecoder } from '../model/io.js';
import { ensureDir, writeFileAtomic, writeJsonAtomic } from '../util/fsx.js';

export interface RunFolderSpec {
  decoder: CaptionDecoder;
  /** Vocabulary tokens: <pad>, unknown, start, end, then words. */
  tokens: string[];
  /** The encoder whose features the decoder reads. */
  encoder: EncoderInfo;
  /** Resolved config to record (default: defaults). */
  config?: Config;
  name?: string;
}

/** Write `dir` as a run folder (best/ and last/ hold the same weights). */
export async function writeRunFolder(dir: string, spec: RunFolderSpec): Promise<void> {
  const e = spec.encoder;
  const config = spec.config ?? ConfigSchema.parse({});
  await ensureDir(dir);
  await saveDecoder(path.join(dir, 'best'), spec.decoder);
  await saveDecoder(path.join(dir, 'last'), spec.decoder);
  await writeFileAtomic(path.join(dir, 'vocab.json'), JSON.stringify({ tokens: spec.tokens }) + '\n');
  await writeFileAtomic(path.join(dir, 'config.yaml'), YAML.stringify(config));
  await writeJsonAtomic(path.join(dir, 'manifest.json'), {
    kind: 'captioner.model',
    version: 1,
    name: spec.name ?? config.name,
    updatedAt: new Date().toISOString(),
    status: 'untrained',
    backend: 'n/a',
    dataset: { dir: '', fingerprint: '', vocabSize: spec.tokens.length },
    features: {
      dir: '',
      fingerprint: '',
      encoder: { name: e.name, fingerprint: e.fingerprint, runtime: e.runtime, detail: e.detail, weights: e.weights, weightsFingerprint: e.weightsFingerprint, layer: e.layer, preprocessing: e.preprocessing },
      shape: e.shape,
      dtype: 'float32',
    },
    model: spec.decoder.spec,
    files: { best: 'best/weights.json', last: 'last/weights.json', vocab: 'vocab.json', config: 'config.yaml', history: 'history.jsonl', chart: 'loss.svg' },
    metrics: {},
  });
}
