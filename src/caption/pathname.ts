// How an image's path is shown in caption output ("image"), reversibly (pure, no I/O). File names on Linux
// are bytes, not text: a name that is not valid UTF-8 cannot be written into JSON as it is, and replacing
// its bad bytes with U+FFFD would give two photos that differ only there the same "image", so --resume
// would take one for the other. Rule:
//  - a path that is valid UTF-8 and holds no `\x` is shown as it is (every ordinary path, on every OS);
//  - any other path is escaped: each byte that is not part of valid UTF-8 becomes `\xNN` (two lower-case hex
//    digits) and each backslash becomes `\\`.
// Escaped strings always contain `\x` (an escaped byte, or a doubled backslash before an x) and plain ones
// never do, so the shown string determines the bytes: parseDisplayPath(displayPath(b)) equals b.
import { isUtf8 } from 'node:buffer';

/** The bytes of a path (a string is UTF-8). */
export function pathBytes(p: string | Uint8Array): Buffer {
  return typeof p === 'string' ? Buffer.from(p, 'utf8') : Buffer.from(p.buffer, p.byteOffset, p.byteLength);
}

/** Length of the valid UTF-8 sequence at bytes[i] (1-4), or 0 when the byte there does not start one. */
function utf8Length(b: Uint8Array, i: number): number {
  const c = b[i];
  if (c < 0x80) return 1;
  const cont = (k: number) => i + k < b.length && (b[i + k] & 0xc0) === 0x80;
  if (c >= 0xc2 && c <= 0xdf) return cont(1) ? 2 : 0;
  if (c >= 0xe0 && c <= 0xef) {
    if (!cont(1) || !cont(2)) return 0;
    const c1 = b[i + 1];
    if (c === 0xe0 && c1 < 0xa0) return 0; // overlong
    if (c === 0xed && c1 >= 0xa0) return 0; // surrogates
    return 3;
  }
  if (c >= 0xf0 && c <= 0xf4) {
    if (!cont(1) || !cont(2) || !cont(3)) return 0;
    const c1 = b[i + 1];
    if (c === 0xf0 && c1 < 0x90) return 0; // overlong
    if (c === 0xf4 && c1 >= 0x90) return 0; // past U+10FFFF
    return 4;
  }
  return 0;
}

/** The path as caption output shows it (see the rule above). */
export function displayPath(p: string | Uint8Array): string {
  const bytes = pathBytes(p);
  const text = typeof p === 'string' ? p : isUtf8(bytes) ? bytes.toString('utf8') : null;
  if (text !== null && !text.includes('\\x')) return text;
  let out = '';
  let run = 0; // start of the pending run of valid UTF-8
  let i = 0;
  const flush = (end: number) => {
    if (end > run) out += bytes.toString('utf8', run, end).replace(/\\/g, '\\\\');
  };
  while (i < bytes.length) {
    const n = utf8Length(bytes, i);
    if (n > 0) {
      i += n;
      continue;
    }
    flush(i);
    out += `\\x${bytes[i].toString(16).padStart(2, '0')}`;
    i++;
    run = i;
  }
  flush(bytes.length);
  return out;
}

/** Whether displayPath changed the path (it must then be opened by its bytes, not by the shown string). */
export function isEscaped(shown: string): boolean {
  return shown.includes('\\x');
}

/** The bytes a shown path stands for (the inverse of displayPath). */
export function parseDisplayPath(shown: string): Buffer {
  if (!isEscaped(shown)) return Buffer.from(shown, 'utf8');
  const parts: Buffer[] = [];
  let text = '';
  for (let i = 0; i < shown.length; i++) {
    const ch = shown[i];
    if (ch === '\\' && shown[i + 1] === '\\') {
      text += '\\';
      i++;
    } else if (ch === '\\' && shown[i + 1] === 'x' && /^[0-9a-f]{2}$/.test(shown.slice(i + 2, i + 4))) {
      parts.push(Buffer.from(text, 'utf8'), Buffer.from([parseInt(shown.slice(i + 2, i + 4), 16)]));
      text = '';
      i += 3;
    } else text += ch;
  }
  parts.push(Buffer.from(text, 'utf8'));
  return Buffer.concat(parts);
}
