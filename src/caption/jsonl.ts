// The caption command's JSONL output: reading back what an earlier (possibly killed) run wrote, so
// `--resume` can skip finished images; a half-written last line is tolerated and cut off.
import { promises as fs } from 'node:fs';

export interface ResumeState {
  /** Images that already have a line (success or error). */
  done: Set<string>;
  /** Byte length of the complete lines: the file is truncated here before appending. */
  validBytes: number;
}

/** Parse JSONL text; lines that do not parse are ignored only when they are the last, unterminated line. */
export function parseResume(text: string): ResumeState {
  const done = new Set<string>();
  let validBytes = 0;
  let pos = 0;
  while (pos < text.length) {
    const nl = text.indexOf('\n', pos);
    if (nl < 0) break; // unterminated last line: a killed run's partial write
    const line = text.slice(pos, nl);
    pos = nl + 1;
    if (line.trim() === '') {
      validBytes = Buffer.byteLength(text.slice(0, pos));
      continue;
    }
    try {
      const obj = JSON.parse(line) as { image?: unknown; error?: unknown };
      // Any line for an image counts (errors too), so a resumed run writes each image once.
      if (typeof obj.image === 'string') done.add(obj.image);
    } catch {
      break; // corrupt line: keep what came before it
    }
    validBytes = Buffer.byteLength(text.slice(0, pos));
  }
  return { done, validBytes };
}

/** Read an existing output file for `--resume` (a missing file means nothing is done yet). */
export async function readResume(file: string): Promise<ResumeState> {
  let text: string;
  try {
    text = await fs.readFile(file, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return { done: new Set(), validBytes: 0 };
    throw e;
  }
  return parseResume(text);
}
