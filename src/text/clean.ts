// Caption cleaning and tokenization (pure): the classic recipe, each step configurable.
// Shared by prep (vocabulary and encoded captions) and the metrics' `basic` tokenizer.

export interface CleanOptions {
  lowercase: boolean;
  stripPunctuation: boolean;
  dropDigitTokens: boolean;
  /** Drop tokens shorter than this many characters (1 keeps "a"). */
  minWordLength: number;
}

export const basicClean: CleanOptions = {
  lowercase: true,
  stripPunctuation: true,
  dropDigitTokens: false,
  minWordLength: 1,
};

// Unicode punctuation and symbols are deleted, not replaced by a space, as the classic recipe's
// str.translate does: "don't" -> "dont", "t-shirt" -> "tshirt"; a lone "-" between spaces disappears.
const PUNCT = /[\p{P}\p{S}]/gu;

/** Clean one caption into tokens (no start/end tokens). */
export function cleanTokens(caption: string, o: CleanOptions): string[] {
  let s = caption.normalize('NFC');
  if (o.lowercase) s = s.toLowerCase();
  if (o.stripPunctuation) s = s.replace(PUNCT, '');
  let tokens = s.split(/\s+/).filter((t) => t.length > 0);
  if (o.dropDigitTokens) tokens = tokens.filter((t) => !/\p{N}/u.test(t));
  if (o.minWordLength > 1) tokens = tokens.filter((t) => [...t].length >= o.minWordLength);
  return tokens;
}
