// The caption command's JSONL output: reading back what an earlier (possibly killed) run wrote, so
// `--resume` can skip finished images; a half-written last line is tolerated and cut off. Linear in the
// file size (byte offsets are counted line by line, on the raw bytes).
import { promises as fs } from 'node:fs';
import { DataError } from '../errors.js';

export interface ResumeState {
  /** Images that already have a line (success or error). */
  done: Set<string>;
  /** Byte length of the complete lines: the file is truncated here before appending. */
  validBytes: number;
}

const NL = 0x0a;

/** Parse JSONL text; lines that do not parse are ignored only when they are the last, unterminated line. */
export function parseResume(input: string | Uint8Array): ResumeState {
  const bytes = typeof input === 'string' ? Buffer.from(input, 'utf8') : Buffer.from(input.buffer, input.byteOffset, input.byteLength);
  const done = new Set<string>();
  let validBytes = 0;
  let pos = 0;
  while (pos < bytes.length) {
    const nl = bytes.indexOf(NL, pos);
    if (nl < 0) break; // unterminated last line: a killed run's partial write
    const line = bytes.toString('utf8', pos, nl);
    const next = nl + 1;
    if (line.trim() !== '') {
      try {
        const obj = JSON.parse(line) as { image?: unknown; error?: unknown };
        // Any line for an image counts (errors too), so a resumed run writes each image once.
        if (typeof obj.image === 'string') done.add(obj.image);
      } catch {
        break; // corrupt line: keep what came before it
      }
    }
    validBytes = next;
    pos = next;
  }
  return { done, validBytes };
}

/** Read an existing output file for `--resume` (a missing file means nothing is done yet). */
export async function readResume(file: string): Promise<ResumeState> {
  let bytes: Buffer;
  try {
    bytes = await fs.readFile(file);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return { done: new Set(), validBytes: 0 };
    throw new DataError(`${file}: cannot read the output file to resume it (${code ?? (e as Error).message})`);
  }
  return parseResume(bytes);
}
