// The word <-> id mapping shared by prep, training and decoding (pure). Ids 0..3 are fixed:
// 0 = "<pad>", 1 = the unknown token, 2 = the start token, 3 = the end token; words follow by
// descending training count, ties in code-point order. Serialised as vocab.json `{"tokens": [...]}`.
import { DataError } from '../errors.js';

export const PAD_TOKEN = '<pad>';

export interface VocabBuildOptions {
  unkToken: string;
  startToken: string;
  endToken: string;
  /** Words seen fewer times than this are left out (and become the unknown token). */
  minCount: number;
}

/** Code-point order, independent of the locale. */
const byCodePoint = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);

export class Vocab {
  readonly tokens: readonly string[];
  readonly pad = 0;
  readonly unk = 1;
  readonly start = 2;
  readonly end = 3;
  private readonly index: Map<string, number>;

  /** Throws DataError when `tokens` is not a valid vocabulary (see the header). */
  constructor(tokens: readonly string[]) {
    if (!Array.isArray(tokens)) throw new DataError('vocabulary: "tokens" must be a list of strings');
    if (tokens.length < 4)
      throw new DataError(`vocabulary: needs at least the 4 special tokens, got ${tokens.length} tokens`);
    if (tokens[0] !== PAD_TOKEN)
      throw new DataError(`vocabulary: tokens[0] must be "${PAD_TOKEN}", got ${JSON.stringify(tokens[0])}`);
    const index = new Map<string, number>();
    tokens.forEach((t, i) => {
      if (typeof t !== 'string' || t.length === 0)
        throw new DataError(`vocabulary: tokens[${i}] must be a non-empty string, got ${JSON.stringify(t)}`);
      if (index.has(t))
        throw new DataError(`vocabulary: tokens[${i}] ${JSON.stringify(t)} repeats tokens[${index.get(t)}]`);
      index.set(t, i);
    });
    this.tokens = Object.freeze([...tokens]);
    this.index = index;
  }

  get size(): number {
    return this.tokens.length;
  }
  get unkToken(): string {
    return this.tokens[this.unk];
  }
  get startToken(): string {
    return this.tokens[this.start];
  }
  get endToken(): string {
    return this.tokens[this.end];
  }

  has(word: string): boolean {
    return this.index.has(word);
  }

  /** The id of `word`, or the unknown token's id. */
  id(word: string): number {
    return this.index.get(word) ?? this.unk;
  }

  /** The word of `id`; throws RangeError for ids outside the vocabulary. */
  word(id: number): string {
    const w = Number.isInteger(id) ? this.tokens[id] : undefined;
    if (w === undefined) throw new RangeError(`token id ${id} is outside the vocabulary (size ${this.size})`);
    return w;
  }

  /** Ids of `words` (no start/end tokens added). */
  encode(words: readonly string[]): number[] {
    return words.map((w) => this.id(w));
  }

  /**
   * Ids of a caption with its start and end tokens: [start, ...words, end]. A word spelled like a
   * special token (pad, start, end) inside the caption becomes the unknown token.
   */
  encodeCaption(words: readonly string[]): number[] {
    const out = new Array<number>(words.length + 2);
    out[0] = this.start;
    for (let i = 0; i < words.length; i++) {
      const id = this.id(words[i]);
      out[i + 1] = id === this.start || id === this.end || id === this.pad ? this.unk : id;
    }
    out[words.length + 1] = this.end;
    return out;
  }

  /** Words of `ids`: stops at the end token, skips start and pad tokens. */
  decode(ids: readonly number[]): string[] {
    const out: string[] = [];
    for (const id of ids) {
      if (id === this.end) break;
      if (id === this.start || id === this.pad) continue;
      out.push(this.word(id));
    }
    return out;
  }

  toJSON(): { tokens: string[] } {
    return { tokens: [...this.tokens] };
  }

  /** Read a parsed vocab.json value; `where` (the file) prefixes error messages. */
  static fromJSON(value: unknown, where: string): Vocab {
    const tokens = (value as { tokens?: unknown } | null)?.tokens;
    if (!Array.isArray(tokens)) throw new DataError(`${where}: not a vocabulary: expected {"tokens": [...]}`);
    try {
      return new Vocab(tokens as string[]);
    } catch (e) {
      throw new DataError(`${where}: ${(e as Error).message}`);
    }
  }

  /** Build from word counts: words with count >= minCount, by descending count then code-point order. */
  static build(counts: ReadonlyMap<string, number>, o: VocabBuildOptions): Vocab {
    const specials = [PAD_TOKEN, o.unkToken, o.startToken, o.endToken];
    const special = new Set(specials);
    if (special.size !== 4)
      throw new DataError(
        `vocabulary: the special tokens must differ: ${specials.map((s) => JSON.stringify(s)).join(', ')}`,
      );
    const words = [...counts].filter(([w, c]) => c >= o.minCount && !special.has(w));
    words.sort((a, b) => b[1] - a[1] || byCodePoint(a[0], b[0]));
    return new Vocab([...specials, ...words.map(([w]) => w)]);
  }
}
