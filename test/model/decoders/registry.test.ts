// Every registered decoder kind honours the Decoder interface the same way (what training, beam search
// and the run folder rely on): specs from the config, shapes, loss terms, teacher forcing vs one-step
// decoding, save/load through the run folder module, and flat memory. Plus the registry's own errors.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { tf } from '../../../src/tf/tf.js';
import { ConfigSchema, DECODER_FEATURES } from '../../../src/config/schema.js';
import { ModelError } from '../../../src/errors.js';
import { DECODERS, decoderKind, specForConfig, type Decoder } from '../../../src/model/decoders/index.js';
import { makeBatch } from '../../../src/model/decoders/batch.js';
import { disposeState, gatherState } from '../../../src/model/decoders/state.js';
import { loadDecoder, saveDecoder } from '../../../src/model/runfolder.js';
import { rng } from '../../../src/util/random.js';

let work: string;
beforeAll(async () => {
  await tf.setBackend('cpu');
  work = await fs.mkdtemp(path.join(os.tmpdir(), 'captioner-registry-'));
});
afterAll(async () => {
  await fs.rm(work, { recursive: true, force: true });
});

const V = 12;
const GRID = [6, 5]; // 6 positions x 5 channels
const model = (type: string) =>
  ConfigSchema.parse({
    model: { type, embedDim: 6, units: 8, imageUnits: 8, hiddenUnits: 7, dropout: 0.2, attention: { attentionDim: 9 } },
  }).model;

function items(n: number, size: number, seed: number) {
  const r = rng(seed);
  return Array.from({ length: n }, () => ({
    features: Float32Array.from({ length: size }, () => r() * 2),
    tokens: [2, ...Array.from({ length: 1 + Math.floor(r() * 4) }, () => 4 + Math.floor(r() * (V - 4))), 3],
  }));
}

function build(type: string, seed = 1): Decoder {
  const { kind, spec } = specForConfig(model(type), V, GRID);
  const its = items(6, GRID[0] * GRID[1], seed);
  return kind.create(
    spec,
    kind.initialWeights(spec, seed),
    kind.featureNorm(
      spec,
      its.map((i) => i.features),
    ),
  );
}

describe('decoder registry', () => {
  it('registers merge, attention and transformer, and names the known types for an unknown one', () => {
    expect(Object.keys(DECODERS).sort()).toEqual(['attention', 'merge', 'transformer']);
    for (const [type, kind] of Object.entries(DECODERS)) expect(kind.type).toBe(type);
    expect(() => decoderKind('lstm')).toThrow(ModelError);
    expect(() => decoderKind('lstm')).toThrow(/unknown decoder type "lstm" \(known: merge, attention, transformer\)/);
    expect(() => decoderKind('toString')).toThrow(/unknown decoder type/);
  });

  it('every model.type of the config schema is registered', () => {
    const types = (ConfigSchema.shape.model.unwrap().shape.type.unwrap() as unknown as { options: string[] }).options;
    expect([...types].sort()).toEqual(Object.keys(DECODERS).sort());
  });

  it('DECODER_FEATURES (what the schema says each type reads) matches each kind', () => {
    for (const [type, kind] of Object.entries(DECODERS))
      expect(DECODER_FEATURES[type as keyof typeof DECODER_FEATURES]).toBe(kind.features);
  });

  it("takes the kind's own config section (model.attention) over the common fields", () => {
    const { spec } = specForConfig(model('attention'), V, GRID);
    expect(spec).toMatchObject({
      positions: 6,
      channels: 5,
      embedDim: 6,
      units: 8,
      attentionDim: 9,
      alphaReg: 1,
      dropout: 0.2,
    });
    const dflt = specForConfig(ConfigSchema.parse({ model: { type: 'attention', units: 16 } }).model, V, GRID).spec;
    expect(dflt).toMatchObject({ attentionDim: 16, alphaReg: 1 });
  });

  it('merge reads vectors, or pools a grid; attention and transformer need a grid', () => {
    expect(specForConfig(model('merge'), V, [10]).spec).toMatchObject({ featureDim: 10 });
    expect(specForConfig(model('merge'), V, [10]).spec).not.toHaveProperty('positions');
    expect(specForConfig(model('merge'), V, GRID).spec).toMatchObject({ featureDim: 5, positions: 6 });
    expect(() => specForConfig(model('attention'), V, [10])).toThrow(
      /needs grid features.*block5_conv3 or block5_pool/,
    );
    expect(() => specForConfig(model('transformer'), V, [10])).toThrow(
      /needs grid or token features.*block5_conv3 or block5_pool/,
    );
  });

  it('takes model.transformer over the common fields; model.units is the default model size', () => {
    const { spec } = specForConfig(
      ConfigSchema.parse({
        model: { type: 'transformer', units: 16, dropout: 0.5, transformer: { heads: 4, layers: 2 } },
      }).model,
      V,
      GRID,
    );
    expect(spec).toMatchObject({
      positions: 6,
      channels: 5,
      modelDim: 16,
      ffnDim: 64,
      heads: 4,
      layers: 2,
      dropout: 0.1,
      positionEncoding: 'sinusoidal',
      imagePositions: 'learned',
      tieEmbeddings: true,
    });
    const own = specForConfig(
      ConfigSchema.parse({
        model: {
          type: 'transformer',
          transformer: {
            modelDim: 12,
            ffnDim: 20,
            heads: 3,
            dropout: 0,
            positionEncoding: 'learned',
            tieEmbeddings: false,
          },
        },
      }).model,
      V,
      GRID,
    ).spec;
    expect(own).toMatchObject({
      modelDim: 12,
      ffnDim: 20,
      heads: 3,
      dropout: 0,
      positionEncoding: 'learned',
      tieEmbeddings: false,
    });
  });
});

for (const type of Object.keys(DECODERS)) {
  describe(`Decoder interface: ${type}`, () => {
    it('has the type, feature shape, weights and norm it was built with', () => {
      const kind = decoderKind(type);
      const { spec } = specForConfig(model(type), V, GRID);
      const m = build(type);
      try {
        expect(m.type).toBe(type);
        expect(m.spec.vocabSize).toBe(V);
        expect(m.featureShape.reduce((a, b) => a * b, 1)).toBe(GRID[0] * GRID[1]);
        expect(Object.keys(m.weights)).toEqual(Object.keys(kind.weightShapes(spec)));
        expect(m.variables.length).toBe(Object.keys(m.weights).length);
        expect(m.norm.mean.length).toBe(kind.normDim(spec));
      } finally {
        m.dispose();
        m.dispose(); // idempotent
      }
    });

    it('loss is the sum of its terms, which include the cross-entropy; memory stays flat', () => {
      const m = build(type);
      try {
        const batch = makeBatch(items(3, GRID[0] * GRID[1], 5), GRID[0] * GRID[1]);
        const before = tf.memory().numTensors;
        const terms = m.lossTerms(batch, { training: false });
        const loss = m.loss(batch, { training: false });
        expect(Object.keys(terms)).toContain('crossEntropy');
        const sum = Object.values(terms).reduce((a, t) => a + t.dataSync()[0], 0);
        expect(loss.dataSync()[0]).toBeCloseTo(sum, 5);
        tf.dispose([loss, ...Object.values(terms)]);
        const { value, grads } = tf.variableGrads(() => m.loss(batch, { training: true, seed: 3 }), m.variables);
        expect(Object.keys(grads).length).toBe(m.variables.length);
        tf.dispose([value, ...Object.values(grads)]);
        expect(tf.memory().numTensors).toBe(before);
      } finally {
        m.dispose();
      }
    });

    it('teacher forcing agrees with initState/step, and states reorder generically', () => {
      const m = build(type);
      const its = items(3, GRID[0] * GRID[1], 9);
      try {
        const batch = makeBatch(its, GRID[0] * GRID[1]);
        const all = m.logProbsAll(batch);
        const allV = all.arraySync();
        all.dispose();
        const before = tf.memory().numTensors;
        let state = m.initState(its.map((i) => i.features));
        for (let t = 0; t < batch.steps; t++) {
          const tokens = its.map((_, b) => batch.inputs[b * batch.steps + t]);
          const r = m.step(state, tokens);
          const lp = r.logProbs.arraySync();
          for (let b = 0; b < its.length; b++)
            if (t < its[b].tokens.length - 1)
              for (let v = 0; v < V; v++) expect(lp[b][v]).toBeCloseTo(allV[b][t][v], 4);
          r.logProbs.dispose();
          r.attention?.dispose();
          disposeState(state);
          state = r.state;
        }
        const g = gatherState(state, [2, 0, 0]);
        disposeState(g);
        disposeState(state);
        expect(tf.memory().numTensors).toBe(before);
      } finally {
        m.dispose();
      }
    });

    it('saves and loads through the run folder module with the same outputs', async () => {
      const m = build(type, 4);
      const dir = path.join(work, type, 'best');
      try {
        await saveDecoder(dir, m);
        const meta = JSON.parse(await fs.readFile(path.join(dir, 'weights.json'), 'utf8')).meta;
        expect(meta.type).toBe(type);
        const back = await loadDecoder(dir);
        try {
          expect(back.type).toBe(type);
          expect(back.spec).toEqual(m.spec);
          const f = items(2, GRID[0] * GRID[1], 2).map((i) => i.features);
          const [a, b] = [m, back].map((d) => {
            const s = d.initState(f);
            const r = d.step(s, [2, 2]);
            const v = r.logProbs.dataSync().slice();
            tf.dispose([r.logProbs]);
            disposeState(s);
            disposeState(r.state);
            return v;
          });
          expect(Array.from(b)).toEqual(Array.from(a));
        } finally {
          back.dispose();
        }
      } finally {
        m.dispose();
      }
    });
  });
}
