// The run folder module: writes format version 2 (model.type recorded in the manifest and the weights),
// reads version-1 folders (all merge models) so existing trained models keep working, refuses newer or
// damaged folders with a ModelError, and loads any registered decoder type.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { tf } from '../../src/tf/tf.js';
import { ModelError } from '../../src/errors.js';
import { AttentionDecoder } from '../../src/model/decoders/attention.js';
import { disposeState } from '../../src/model/decoders/state.js';
import { ConfigSchema } from '../../src/config/schema.js';
import * as runfolder from '../../src/model/runfolder.js';
import { loadTrainedModel, readRunManifest, RUN_VERSION } from '../../src/model/runfolder.js';
import { writeUntrainedRun } from '../helpers/untrained-run.js';
import type { EncoderInfo } from '../../src/features/types.js';

const V1 = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'fixtures', 'run-v1');
/** What the version-1 code computed for features [1, 2, 3, 4] after the start token (see the fixture's README). */
const V1_LOGPROBS = [
  -2.044243335723877, -1.7801496982574463, -2.7870631217956543, -2.4451022148132324, -1.355018973350525,
  -2.291973114013672, -2.5681238174438477, -2.1379075050354004,
];

let work: string;
beforeAll(async () => {
  await tf.setBackend('cpu');
  work = await fs.mkdtemp(path.join(os.tmpdir(), 'captioner-runfolder-'));
});
afterAll(async () => {
  await fs.rm(work, { recursive: true, force: true });
});

const encoder: EncoderInfo = {
  name: 'onnx:tiny',
  fingerprint: 'sha256:e',
  runtime: 'onnx',
  detail: 'test',
  weights: 'tiny.onnx',
  weightsFingerprint: 'sha256:w',
  layer: 'grid',
  preprocessing: {
    size: 32,
    resize: 'fill',
    interpolation: 'bilinear',
    alpha: 'white',
    mode: 'custom',
    mean: [0, 0, 0],
  },
  shape: [2, 3, 4],
} as unknown as EncoderInfo;
const TOKENS = ['<pad>', '<unk>', 'startseq', 'endseq', 'a', 'b'];

describe('run folder', () => {
  it('reads a version-1 run folder (written by the old code) as a merge model that decodes as before', async () => {
    const m = await loadTrainedModel(V1);
    try {
      expect(m.manifest.version).toBe(1);
      expect(m.manifest.model.type).toBe('merge');
      expect(m.manifest.model.spec).toMatchObject({ featureDim: 4, units: 5 });
      expect(m.decoder.type).toBe('merge');
      expect(m.decoder.featureShape).toEqual([4]);
      const s = m.decoder.initState([Float32Array.from([1, 2, 3, 4])]);
      const r = m.decoder.step(s, [2]);
      const got = Array.from(r.logProbs.dataSync());
      got.forEach((v, i) => expect(v).toBeCloseTo(V1_LOGPROBS[i], 5));
      r.logProbs.dispose();
      disposeState(s);
      disposeState(r.state);
    } finally {
      m.decoder.dispose();
    }
  });

  it('writes version 2 with the decoder type, and loads an attention model back', async () => {
    const dir = path.join(work, 'att');
    const d = AttentionDecoder.create(
      {
        vocabSize: TOKENS.length,
        positions: 6,
        channels: 4,
        embedDim: 3,
        units: 5,
        attentionDim: 4,
        dropout: 0,
        alphaReg: 1,
      },
      2,
    );
    try {
      await writeUntrainedRun(runfolder, dir, { decoder: d, tokens: TOKENS, encoder, config: ConfigSchema.parse({}) });
    } finally {
      d.dispose();
    }
    const raw = JSON.parse(await fs.readFile(path.join(dir, 'manifest.json'), 'utf8'));
    expect(raw).toMatchObject({
      kind: 'captioner.model',
      version: RUN_VERSION,
      model: { type: 'attention', spec: { positions: 6, channels: 4 } },
    });
    expect(RUN_VERSION).toBe(2);
    const m = await loadTrainedModel(dir, 'last');
    try {
      expect(m.decoder.type).toBe('attention');
      expect(m.decoder.featureShape).toEqual([6, 4]);
      expect(m.vocab.size).toBe(TOKENS.length);
    } finally {
      m.decoder.dispose();
    }
  });

  it('refuses a newer format, a damaged type and a manifest that disagrees with the weights', async () => {
    const dir = path.join(work, 'bad');
    await fs.cp(V1, dir, { recursive: true });
    const file = path.join(dir, 'manifest.json');
    const m = JSON.parse(await fs.readFile(file, 'utf8'));
    await fs.writeFile(file, JSON.stringify({ ...m, version: 3 }));
    await expect(readRunManifest(dir)).rejects.toThrow(
      /format version 3 is newer than this captioner reads \(upgrade captioner\)/,
    );
    await fs.writeFile(file, JSON.stringify({ ...m, version: 2 }));
    await expect(readRunManifest(dir)).rejects.toThrow(/model\.type is missing/);
    await fs.writeFile(file, JSON.stringify({ ...m, version: 2, model: { type: 'attention', spec: {} } }));
    const e = await loadTrainedModel(dir).catch((x) => x);
    expect(e).toBeInstanceOf(ModelError);
    expect(e.message).toMatch(/the manifest says model.type attention, best\/weights\.json holds a merge decoder/);
    const wfile = path.join(dir, 'best', 'weights.json');
    const w = JSON.parse(await fs.readFile(wfile, 'utf8'));
    await fs.writeFile(wfile, JSON.stringify({ ...w, meta: { ...w.meta, type: 'lstm-v9' } }));
    await expect(loadTrainedModel(dir)).rejects.toThrow(/weights\.json: unknown decoder type "lstm-v9"/);
    expect(tf.memory().numTensors).toBe(0);
  });
});
