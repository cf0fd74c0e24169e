// How caption output shows a path (src/caption/pathname.ts): ordinary paths unchanged, a name that is not
// UTF-8 escaped as \xNN, and the shown string always standing for exactly one byte string.
import { describe, expect, it } from 'vitest';
import { displayPath, isEscaped, parseDisplayPath } from '../../src/caption/pathname.js';
import { rng } from '../../src/util/random.js';

const b = (...parts: (string | number[])[]) =>
  Buffer.concat(parts.map((p) => (typeof p === 'string' ? Buffer.from(p, 'utf8') : Buffer.from(p))));

describe('displayPath', () => {
  it('leaves valid UTF-8 paths as they are, backslashes included (Windows paths too)', () => {
    expect(displayPath('photos/café.jpg')).toBe('photos/café.jpg');
    expect(displayPath(b('photos/café.jpg'))).toBe('photos/café.jpg');
    expect(displayPath('C:\\photos\\a.jpg')).toBe('C:\\photos\\a.jpg');
    expect(displayPath('odd\ufffdname.jpg')).toBe('odd\ufffdname.jpg'); // a real U+FFFD is text, not an escape
  });

  it('gives two names that differ only in bytes that are not UTF-8 two different strings', () => {
    const e9 = displayPath(b('caf', [0xe9], '.jpg'));
    const e8 = displayPath(b('caf', [0xe8], '.jpg'));
    expect(e9).toBe('caf\\xe9.jpg');
    expect(e8).toBe('caf\\xe8.jpg');
    expect(e9).not.toBe(e8);
  });

  it('escapes backslashes wherever an escape could be confused with one, so the mapping stays reversible', () => {
    // a valid name that reads like an escape, and the invalid byte it reads like
    const literal = displayPath('caf\\xe9.jpg');
    const raw = displayPath(b('caf', [0xe9], '.jpg'));
    expect(literal).toBe('caf\\\\xe9.jpg');
    expect(literal).not.toBe(raw);
    expect(displayPath(b('a\\b', [0xff]))).toBe('a\\\\b\\xff');
    expect(isEscaped(literal) && isEscaped(raw)).toBe(true);
    expect(isEscaped('C:\\photos\\a.jpg')).toBe(false);
  });

  it('round-trips any byte string (parseDisplayPath inverts it) and never maps two byte strings to one string', () => {
    const r = rng(11);
    const alphabet = [
      0x61, 0x2f, 0x5c, 0x78, 0x65, 0x39, 0xc3, 0xa9, 0xe9, 0xff, 0x80, 0xed, 0xa0, 0xf0, 0x9f, 0x98, 0x80,
    ];
    const seen = new Map<string, string>();
    for (let n = 0; n < 2000; n++) {
      const bytes = Buffer.from(
        Array.from({ length: 1 + Math.floor(r() * 8) }, () => alphabet[Math.floor(r() * alphabet.length)]),
      );
      const shown = displayPath(bytes);
      expect(parseDisplayPath(shown).equals(bytes), `${bytes.toString('hex')} -> ${shown}`).toBe(true);
      const hex = bytes.toString('hex');
      expect(seen.get(shown) ?? hex).toBe(hex);
      seen.set(shown, hex);
      expect(() => Buffer.from(shown, 'utf8').toString('utf8')).not.toThrow();
    }
  });
});
