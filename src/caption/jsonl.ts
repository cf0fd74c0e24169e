// The caption command's JSONL output: reading back what an earlier (possibly killed) run wrote, so
// `--resume` can skip finished images and retry failed ones. Only a half-written LAST line (no newline,
// and the start of one of our lines) is tolerated and cut off; any other line that is not a caption
// line is a DataError naming the file and line, so a wrong --output (an image, a CSV) is never
// truncated. Linear in the file size (byte offsets are counted line by line, on the raw bytes).
import { promises as fs } from 'node:fs';
import { DataError } from '../errors.js';

export interface ResumeState {
  /** Images whose latest line is a caption: skipped by a resumed run. */
  done: Set<string>;
  /** Images whose latest line is an error (and that have no caption line): retried by a resumed run. */
  failed: Set<string>;
  /** Byte length of the complete lines (everything but a half-written last line). */
  validBytes: number;
  /** [start, end) byte ranges of the complete lines, with the image each is about (blank lines left out). */
  lines: { image: string; error: boolean; start: number; end: number }[];
}

const NL = 0x0a;
/** Every line we write starts with this (JSON.stringify of an object whose first key is image). */
const LINE_START = '{"image":';

/** Could `tail` (no newline) be the start of a line we wrote, cut by a kill? */
function isPartialLine(tail: Buffer): boolean {
  const head = tail.toString('latin1', 0, Math.min(tail.length, LINE_START.length));
  if (!LINE_START.startsWith(head)) return false;
  for (const b of tail) if (b < 0x20) return false; // JSON.stringify escapes control characters
  return true;
}

/** Parse JSONL output; throws DataError (naming `file` and the line) for anything but our lines and a cut last line. */
export function parseResume(input: string | Uint8Array, file = 'output'): ResumeState {
  const bytes =
    typeof input === 'string'
      ? Buffer.from(input, 'utf8')
      : Buffer.from(input.buffer, input.byteOffset, input.byteLength);
  const latest = new Map<string, boolean>(); // image -> has a caption line (a caption anywhere wins over errors)
  const lines: ResumeState['lines'] = [];
  let validBytes = 0;
  let pos = 0;
  let lineNo = 0;
  const bad = (why: string) =>
    new DataError(
      `${file}: line ${lineNo}: ${why}; this does not look like a caption output file, so --resume leaves it untouched (check --output, or move the file away)`,
    );
  while (pos < bytes.length) {
    lineNo++;
    const nl = bytes.indexOf(NL, pos);
    if (nl < 0) {
      // unterminated last line: a killed run's partial write, or not our file at all
      if (!isPartialLine(bytes.subarray(pos)))
        throw bad('the last line is neither a complete caption line nor the start of one');
      break;
    }
    const line = bytes.toString('utf8', pos, nl);
    if (line.trim() !== '') {
      type Line = { image?: unknown; caption?: unknown; error?: unknown } | null;
      let obj: Line;
      try {
        obj = JSON.parse(line) as Line;
      } catch {
        throw bad('not a JSON line');
      }
      if (
        !obj ||
        typeof obj !== 'object' ||
        typeof obj.image !== 'string' ||
        (typeof obj.caption !== 'string' && typeof obj.error !== 'string')
      ) {
        throw bad('not a caption line ({"image", "caption"} or {"image", "error"})');
      }
      const ok = typeof obj.caption === 'string';
      latest.set(obj.image, ok || latest.get(obj.image) === true);
      lines.push({ image: obj.image, error: !ok, start: pos, end: nl + 1 });
    }
    validBytes = nl + 1;
    pos = nl + 1;
  }
  const done = new Set<string>();
  const failed = new Set<string>();
  for (const [image, ok] of latest) (ok ? done : failed).add(image);
  return { done, failed, validBytes, lines };
}

/** Read an existing output file for `--resume` (a missing file means nothing is done yet). */
export async function readResume(file: string): Promise<ResumeState> {
  let bytes: Buffer;
  try {
    bytes = await fs.readFile(file);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return { done: new Set(), failed: new Set(), validBytes: 0, lines: [] };
    throw new DataError(`${file}: cannot read the output file to resume it (${code ?? (e as Error).message})`);
  }
  return parseResume(bytes, file);
}
