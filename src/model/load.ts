// Opening a trained run folder (written by `captioner train`) for decoding: manifest, vocabulary and the
// best (or last) weights. Used by eval, caption and serve.
import * as path from 'node:path';
import { promises as fs } from 'node:fs';
import YAML from 'yaml';
import { ModelError } from '../errors.js';
import { Vocab } from '../text/vocab.js';
import type { CaptionDecoder } from './decoder.js';
import { loadDecoder } from './io.js';

export interface ModelManifest {
  kind: 'captioner.model';
  version: 1;
  name: string;
  status: string;
  backend: string;
  dataset: { dir: string; fingerprint: string; vocabSize: number };
  /** Copied from the feature cache manifest: enough to rebuild the same image encoder. */
  features: { dir: string; fingerprint: string; encoder: unknown; shape: number[]; dtype: string };
  model: Record<string, unknown>;
  files: { best: string; last: string; vocab: string; config: string; history: string; chart: string };
  metrics: Record<string, number | null>;
}

export interface TrainedModel {
  dir: string;
  manifest: ModelManifest;
  vocab: Vocab;
  decoder: CaptionDecoder;
}

async function readJsonModel<T>(file: string, what: string): Promise<T> {
  let text: string;
  try {
    text = await fs.readFile(file, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new ModelError(`${file}: cannot read ${what}${code === 'ENOENT' ? ': no such file (is this a folder written by `captioner train`?)' : `: ${code}`}`);
  }
  try {
    return JSON.parse(text) as T;
  } catch (e) {
    throw new ModelError(`${file}: not valid JSON: ${(e as Error).message}`);
  }
}

/** Load a run folder. `which`: best (default; lowest validation loss) or last (latest checkpoint). */
export async function loadTrainedModel(dir: string, which: 'best' | 'last' = 'best'): Promise<TrainedModel> {
  const manifest = await readJsonModel<ModelManifest>(path.join(dir, 'manifest.json'), 'the model manifest');
  if (manifest?.kind !== 'captioner.model') throw new ModelError(`${path.join(dir, 'manifest.json')}: not a captioner model manifest (kind ${JSON.stringify(manifest?.kind)})`);
  const vocabJson = await readJsonModel<{ tokens: string[] }>(path.join(dir, 'vocab.json'), 'the vocabulary');
  let vocab: Vocab;
  try {
    vocab = new Vocab(vocabJson.tokens);
  } catch (e) {
    throw new ModelError(`${path.join(dir, 'vocab.json')}: ${(e as Error).message}`);
  }
  const decoder = await loadDecoder(path.join(dir, which));
  if (decoder.spec.vocabSize !== vocab.size) {
    decoder.dispose();
    throw new ModelError(`${dir}: the weights expect ${decoder.spec.vocabSize} words, vocab.json has ${vocab.size}`);
  }
  return { dir, manifest, vocab, decoder };
}

/** The run's config.yaml as a plain object ({} when absent: older or hand-made runs). */
export async function readRunConfig(runDir: string): Promise<Record<string, unknown>> {
  const file = path.join(runDir, 'config.yaml');
  let text: string;
  try {
    text = await fs.readFile(file, 'utf8');
  } catch {
    return {}; // older or hand-made runs: the manifest alone must do
  }
  try {
    const v = YAML.parse(text) as unknown;
    return v && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : {};
  } catch (e) {
    throw new ModelError(`${file}: not valid YAML: ${(e as Error).message.split('\n')[0]}`);
  }
}

/** The decode settings a run records (its config.yaml `decode`), the lowest layer of caption/eval configs. */
export async function runDecodeSettings(runDir: string): Promise<Record<string, unknown>> {
  const d = (await readRunConfig(runDir)).decode;
  return d && typeof d === 'object' && !Array.isArray(d) ? (d as Record<string, unknown>) : {};
}
