// Metric tokenization (pure): `basic` is the prep recipe's lowercase + strip punctuation (src/text/clean.ts),
// `none` splits on whitespace only. Both metrics sides (candidates and references) use the same one.
import { basicClean, cleanTokens } from '../../text/clean.js';

export type TokenizeMode = 'basic' | 'none';

export const tokenizeModes: readonly TokenizeMode[] = ['basic', 'none'];

/** Split a caption into metric tokens. Tokens never contain whitespace. */
export function tokenize(caption: string, mode: TokenizeMode): string[] {
  if (mode === 'basic') return cleanTokens(caption, basicClean);
  return caption.split(/\s+/).filter((t) => t.length > 0);
}
