// Tiny synthetic captioning data: each image's feature vector encodes a class (at a tiny scale, like
// random-weight VGG16 features), and its captions name that class.
import { Vocab } from '../../src/text/vocab.js';
import type { Prepared, PreparedImage, PreparedManifest, SplitName } from '../../src/prep/prepared.js';
import { rng } from '../../src/util/random.js';
import type { FeatureSource } from '../../src/train/data.js';

export const CLASSES = ['dog', 'cat', 'bird', 'horse'];

export interface Synthetic {
  prepared: Prepared;
  features: FeatureSource & { map: Map<string, Float32Array> };
  classOf: Map<string, number>;
}

export function synthetic(
  opts: { train?: number; val?: number; dim?: number; seed?: number; fingerprint?: string } = {},
): Synthetic {
  const dim = opts.dim ?? 12;
  const r = rng(opts.seed ?? 1);
  const vocab = new Vocab(['<pad>', '<unk>', 'startseq', 'endseq', 'a', 'photo', 'of', 'the', ...CLASSES]);
  const map = new Map<string, Float32Array>();
  const classOf = new Map<string, number>();
  const mk = (split: SplitName, n: number): PreparedImage[] =>
    Array.from({ length: n }, (_, i) => {
      const key = `${split}_${String(i).padStart(4, '0')}.jpg`;
      const c = i % CLASSES.length;
      const f = new Float32Array(dim);
      for (let k = 0; k < dim; k++) f[k] = (r() * 0.3 + (k % CLASSES.length === c ? 1 : 0)) * 1e-3;
      map.set(key, f);
      classOf.set(key, c);
      const w = CLASSES[c];
      const caps = [`a photo of the ${w}`, `the ${w}`];
      return {
        image: key,
        file: key,
        captions: caps,
        tokens: caps.map((s) => [2, ...s.split(' ').map((x) => vocab.id(x)), 3]),
      };
    });
  const splits = { train: mk('train', opts.train ?? 48), val: mk('val', opts.val ?? 16), test: mk('test', 8) };
  const manifest = {
    kind: 'captioner.prepared',
    version: 1,
    fingerprint: opts.fingerprint ?? 'f'.repeat(64),
  } as unknown as PreparedManifest;
  return {
    prepared: { dir: '/synthetic/prepared', manifest, vocab, splits },
    features: {
      dim,
      map,
      has: (k) => map.has(k),
      get: (k) => {
        const v = map.get(k);
        if (!v) throw new Error(`no ${k}`);
        return v;
      },
    },
    classOf,
  };
}
