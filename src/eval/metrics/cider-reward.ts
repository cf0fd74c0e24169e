// Per-caption CIDEr-D reward for self-critical sequence training (pure, no TF, no I/O). The document
// frequencies come ONCE from the training references (coco-caption's CiderD with precomputed corpus
// df, as in Rennie et al. 2017): idf(g) = log(images) - log(max(1, df(g))), images = number of
// reference sets given. Each image's cooked references and their tf-idf vectors are kept, so one reward
// costs one candidate cooking and a few merge joins. The arithmetic is cider.ts's own (ciderVec,
// ciderDImage): with df taken from the very set being scored it equals ciderD's per-image scores.
// Optionally reward = CIDEr-D + bleuWeight * sentence BLEU-4 (bleu.ts, NLTK without smoothing).
import { addBleuStats, bleuFromStats, emptyBleuStats } from './bleu.js';
import { ciderDImage, ciderIdf, ciderVec, documentFrequencies, type CiderVec, type Idf } from './cider.js';
import { NgramIndex, type Cooked } from './ngrams.js';

export interface CiderRewardOptions {
  /** Highest n-gram order (default 4). */
  n?: number;
  /** Length penalty's standard deviation (default 6). */
  sigma?: number;
  /** Weight of sentence BLEU-4 added to CIDEr-D (default 0: CIDEr-D alone). */
  bleuWeight?: number;
}

/** References of one image: its id and its tokenized captions (at least one). */
export type ImageReferences = readonly [id: string, refs: readonly (readonly string[])[]];

export class CiderDReward {
  readonly n: number;
  readonly sigma: number;
  readonly bleuWeight: number;
  /** Number of reference sets the document frequencies count. */
  readonly images: number;
  private readonly index: NgramIndex;
  private readonly cooked = new Map<string, Cooked[]>();
  private readonly vecs = new Map<string, CiderVec[]>();
  private readonly idf: Idf;

  /** Throws on an image without references or a repeated image id. */
  constructor(references: Iterable<ImageReferences>, opts: CiderRewardOptions = {}) {
    this.n = opts.n ?? 4;
    this.sigma = opts.sigma ?? 6;
    this.bleuWeight = opts.bleuWeight ?? 0;
    if (!(Number.isInteger(this.n) && this.n >= 1))
      throw new Error(`CIDEr reward: n must be a positive integer, got ${this.n}`);
    if (!(this.sigma > 0 && Number.isFinite(this.sigma)))
      throw new Error(`CIDEr reward: sigma must be > 0, got ${this.sigma}`);
    if (!(this.bleuWeight >= 0 && Number.isFinite(this.bleuWeight)))
      throw new Error(`CIDEr reward: bleuWeight must be >= 0, got ${this.bleuWeight}`);
    const all = [...references];
    let tokens = 0;
    for (const [, rs] of all) for (const r of rs) tokens += r.length;
    this.index = new NgramIndex(Math.max(this.n, 4), tokens);
    for (const [id, rs] of all) {
      if (rs.length === 0) throw new Error(`CIDEr reward: image ${id} has no references`);
      if (this.cooked.has(id)) throw new Error(`CIDEr reward: image ${id} appears twice`);
      this.cooked.set(
        id,
        rs.map((r) => this.index.cook(r)),
      );
    }
    this.images = all.length;
    // ids 1..index.size are every n-gram the references hold; candidates are cooked frozen after this
    this.idf = ciderIdf(documentFrequencies(this.cooked.values(), this.index.size, this.n), this.images);
  }

  has(imageId: string): boolean {
    return this.cooked.has(imageId);
  }

  private refs(imageId: string): { cooked: Cooked[]; vecs: CiderVec[] } {
    const cooked = this.cooked.get(imageId);
    if (!cooked) throw new Error(`CIDEr reward: no references for image ${imageId}`);
    let vecs = this.vecs.get(imageId);
    if (!vecs) {
      vecs = cooked.map((r) => ciderVec(r, this.idf, this.n));
      this.vecs.set(imageId, vecs);
    }
    return { cooked, vecs };
  }

  /** CIDEr-D of one tokenized candidate against the image's references. */
  cider(imageId: string, candidate: readonly string[]): number {
    const r = this.refs(imageId);
    return ciderDImage(this.index.cook(candidate, true), r.cooked, r.vecs, this.idf, this.n, this.sigma);
  }

  /** The reward: CIDEr-D + bleuWeight * sentence BLEU-4. */
  reward(imageId: string, candidate: readonly string[]): number {
    const r = this.refs(imageId);
    const hyp = this.index.cook(candidate, true);
    let score = ciderDImage(hyp, r.cooked, r.vecs, this.idf, this.n, this.sigma);
    if (this.bleuWeight > 0) {
      const s = emptyBleuStats(4);
      addBleuStats(s, hyp, r.cooked);
      score += this.bleuWeight * bleuFromStats(s)[3];
    }
    return score;
  }
}
