// n-gram interning for the metrics (pure): every distinct n-gram of a scoring run gets a small integer id, and
// a sentence is "cooked" once into, per order, its sorted distinct n-gram ids with their counts. BLEU and
// CIDEr-D then work on integer arrays (merge joins) instead of string-keyed maps.

/**
 * One sentence: for each order k (index k-1), its distinct n-gram ids in increasing order, with their counts,
 * stored at ids[offsets[k-1] .. offsets[k]) (one flat array for all orders, fewer allocations).
 */
export interface Cooked {
  /** Number of tokens. */
  length: number;
  ids: Int32Array;
  counts: Int32Array;
  /** maxN + 1 offsets into ids/counts. */
  offsets: Int32Array;
}

/** Interns tokens and n-grams: a trie over token ids stored in an open-addressing hash table. */
export class NgramIndex {
  private tokens = new Map<string, number>();
  // hash table (parent n-gram id, token id) -> n-gram id; id 0 is the empty n-gram (root), slots with id 0 are free
  private parent: Int32Array;
  private token: Int32Array;
  private child: Int32Array;
  private mask: number;
  /** Number of n-gram ids handed out (ids are 1..size). */
  size = 0;

  /** `expectedTokens`: total tokens to be cooked, to size the table once (it grows anyway). */
  constructor(
    readonly maxN = 4,
    expectedTokens = 0,
  ) {
    let cap = 1 << 16;
    while (cap < expectedTokens * 2 && cap < 1 << 24) cap *= 2;
    this.parent = new Int32Array(cap);
    this.token = new Int32Array(cap);
    this.child = new Int32Array(cap);
    this.mask = cap - 1;
  }

  private tokenId(t: string): number {
    let id = this.tokens.get(t);
    if (id === undefined) {
      id = this.tokens.size;
      this.tokens.set(t, id);
    }
    return id;
  }

  private slot(parent: number, token: number): number {
    let h = (Math.imul(parent, 0x9e3779b1) ^ Math.imul(token + 1, 0x85ebca77)) >>> 0;
    h = (h ^ (h >>> 15)) & this.mask;
    while (this.child[h] !== 0 && (this.parent[h] !== parent || this.token[h] !== token)) h = (h + 1) & this.mask;
    return h;
  }

  private node(parent: number, token: number): number {
    const h = this.slot(parent, token);
    if (this.child[h] !== 0) return this.child[h];
    const id = ++this.size;
    this.parent[h] = parent;
    this.token[h] = token;
    this.child[h] = id;
    if (this.size * 2 > this.mask) this.grow();
    return id;
  }

  private grow(): void {
    const [p, t, c] = [this.parent, this.token, this.child];
    const cap = p.length * 2;
    this.parent = new Int32Array(cap);
    this.token = new Int32Array(cap);
    this.child = new Int32Array(cap);
    this.mask = cap - 1;
    for (let i = 0; i < c.length; i++) {
      if (c[i] === 0) continue;
      const h = this.slot(p[i], t[i]);
      this.parent[h] = p[i];
      this.token[h] = t[i];
      this.child[h] = c[i];
    }
  }

  private scratch = new Int32Array(256);

  /**
   * A sentence's n-grams. With `frozen` the index is left as it is: n-grams it does not hold get ids past
   * `size`, private to this call (distinct per distinct n-gram, so counts are right), which match nothing
   * cooked before. Scoring many candidates against fixed references (SCST rewards) then does not grow it.
   */
  cook(tokens: readonly string[], frozen = false): Cooked {
    const n = this.maxN;
    const len = tokens.length;
    if (this.scratch.length < len * (n + 1)) this.scratch = new Int32Array(len * (n + 1) * 2);
    const buf = this.scratch;
    // buf[k*len .. k*len + len-k) holds the (k+1)-gram ids at every position; buf[n*len ..) the token ids
    const tok = n * len;
    if (!frozen) {
      for (let i = 0; i < len; i++) buf[tok + i] = this.tokenId(tokens[i]);
      for (let i = 0; i < len; i++) {
        let p = 0;
        for (let k = 0; k < n && i + k < len; k++) {
          p = this.node(p, buf[tok + i + k]);
          buf[k * len + i] = p;
        }
      }
    } else {
      // unknown tokens get ids -1, -2, ...; unknown n-grams size+1, size+2, ...
      const tempTokens = new Map<string, number>();
      const tempNodes = new Map<string, number>();
      for (let i = 0; i < len; i++) {
        let id = this.tokens.get(tokens[i]);
        if (id === undefined) {
          id = tempTokens.get(tokens[i]);
          if (id === undefined) tempTokens.set(tokens[i], (id = -1 - tempTokens.size));
        }
        buf[tok + i] = id;
      }
      for (let i = 0; i < len; i++) {
        let p = 0;
        for (let k = 0; k < n && i + k < len; k++) {
          const t = buf[tok + i + k];
          let child = 0;
          if (p <= this.size && t >= 0) child = this.child[this.slot(p, t)];
          if (child === 0) {
            const key = `${p},${t}`;
            child = tempNodes.get(key) ?? 0;
            if (child === 0) tempNodes.set(key, (child = this.size + 1 + tempNodes.size));
          }
          p = child;
          buf[k * len + i] = p;
        }
      }
    }
    const offsets = new Int32Array(n + 1);
    let distinct = 0;
    const sorted: Int32Array[] = [];
    for (let k = 0; k < n; k++) {
      const m = Math.max(0, len - k);
      const a = buf.subarray(k * len, k * len + m);
      insertionSort(a);
      sorted.push(a);
      for (let j = 0; j < m; j++) if (j === 0 || a[j] !== a[j - 1]) distinct++;
      offsets[k + 1] = distinct;
    }
    const ids = new Int32Array(distinct);
    const counts = new Int32Array(distinct);
    let w = -1;
    for (let k = 0; k < n; k++) {
      const a = sorted[k];
      for (let j = 0; j < a.length; j++) {
        if (j === 0 || a[j] !== a[j - 1]) ids[++w] = a[j];
        counts[w]++;
      }
    }
    return { length: len, ids, counts, offsets };
  }
}

/** In-place ascending sort; captions are short, and TypedArray#sort costs more per call than this whole loop. */
function insertionSort(a: Int32Array): void {
  if (a.length > 64) {
    a.sort();
    return;
  }
  for (let i = 1; i < a.length; i++) {
    const x = a[i];
    let j = i - 1;
    while (j >= 0 && a[j] > x) {
      a[j + 1] = a[j];
      j--;
    }
    a[j + 1] = x;
  }
}

/** Cook hypotheses and reference sets with one shared index. */
export function cookAll(
  hyps: readonly (readonly string[])[],
  refs: readonly (readonly (readonly string[])[])[],
  maxN = 4,
): { index: NgramIndex; hyps: Cooked[]; refs: Cooked[][] } {
  let tokens = 0;
  for (const h of hyps) tokens += h.length;
  for (const rs of refs) for (const r of rs) tokens += r.length;
  const index = new NgramIndex(maxN, tokens);
  return { index, hyps: hyps.map((h) => index.cook(h)), refs: refs.map((rs) => rs.map((r) => index.cook(r))) };
}
