// Where caption results go: stdout or an output file, one JSON line per image, written with one write
// call per line as soon as the image is done (O_APPEND: a line is never interleaved or split by another
// writer), with backpressure so a slow reader of stdout does not make us buffer results.
// `--resume` reads the file back first (src/caption/jsonl.ts): a file that is not caption output is
// refused untouched; a half-written last line is cut and the error lines of images that will be retried
// are dropped, by rewriting the file atomically (temp + rename), so the file keeps one line per image.
import { promises as fs } from 'node:fs';
import { DataError, OutputClosed, UsageError } from '../errors.js';
import { ioReason, writeFileAtomic } from '../util/fsx.js';
import { writeOut } from '../util/stdout.js';
import { sniffImage } from '../util/imagetype.js';
import type { CaptionResult } from './pipeline.js';
import { readResume, type ResumeState } from './jsonl.js';

export interface LineSink {
  write(line: string): Promise<void>;
  close(): Promise<void>;
}

/** The JSON line for a result: {"image","caption","logprob"} (+ "attention": the map's path) or {"image","error"}. */
export function resultLine(r: CaptionResult, attentionMap?: string): string {
  if ('error' in r) return JSON.stringify({ image: r.image, error: r.error }) + '\n';
  return (
    JSON.stringify({
      image: r.image,
      caption: r.caption,
      logprob: Number(r.logprob.toFixed(6)),
      ...(attentionMap ? { attention: attentionMap } : {}),
    }) + '\n'
  );
}

/** Output formats: one JSON line per image (default), or `path<TAB>caption` per captioned image. */
export type OutputFormat = 'jsonl' | 'text';

/** The text line for a result: `image<TAB>caption`; nothing for a failed image (its warning is on stderr). */
export function resultText(r: CaptionResult): string {
  return 'error' in r ? '' : `${r.image}\t${r.caption}\n`;
}

/**
 * Results on a stream (stdout). Each line is awaited until written (src/util/stdout.ts): a reader that went
 * away (EPIPE) ends the run with OutputClosed, any other failure (a full disk) with a one-line DataError.
 */
export function streamSink(stream: NodeJS.WritableStream): LineSink {
  return {
    write: (line) => writeOut(line, stream),
    async close() {},
  };
}

const EMPTY: ResumeState = { done: new Set(), failed: new Set(), validBytes: 0, lines: [] };

/**
 * Check `file` as an output: a folder is refused; an existing non-empty file needs `resume` and is read
 * back (a file that is not caption output is a DataError, left untouched).
 */
export async function readOutputState(file: string, resume: boolean): Promise<ResumeState> {
  let size = 0;
  try {
    const st = await fs.stat(file);
    if (st.isDirectory()) throw new UsageError(`--output ${file}: is a folder`);
    size = st.isFile() ? st.size : 0;
  } catch (e) {
    if (e instanceof UsageError) throw e;
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw new DataError(`--output ${file}: ${ioReason(e)}`);
  }
  if (size === 0) return EMPTY;
  if (resume) return readResume(file);
  // advise --resume only for a file that --resume would continue: anything else (an image, a CSV) is refused
  const other = await notCaptionOutput(file);
  if (other)
    throw new UsageError(
      `--output ${file}: already exists and is not caption output (${other}); captioner never writes over another file: choose another --output file`,
    );
  throw new UsageError(
    `--output ${file} already holds results; add --resume to continue it (finished images are skipped, failed ones retried), or delete it`,
  );
}

/** Why `file` is not caption output (e.g. "a JPEG image", "line 1: not a JSON line"), or null when it is. */
async function notCaptionOutput(file: string): Promise<string | null> {
  const head = Buffer.alloc(64);
  const h = await fs.open(file, 'r');
  try {
    const { bytesRead } = await h.read(head, 0, head.length, 0);
    const format = sniffImage(head.subarray(0, bytesRead));
    if (format) return `it is a ${format.toUpperCase()} image`;
  } finally {
    await h.close();
  }
  try {
    await readResume(file);
    return null;
  } catch (e) {
    if (!(e instanceof DataError)) throw e;
    return /: (line \d+: [^;]*)/.exec(e.message)?.[1] ?? 'not JSON lines of captions';
  }
}

/**
 * Open `file` for appending results. `retry` are images whose error lines are dropped (they get a new
 * line); together with a half-written last line they make the file be rewritten atomically first.
 */
export async function openOutputFile(
  file: string,
  state: ResumeState,
  retry: Set<string> = new Set(),
): Promise<LineSink> {
  let size = 0;
  try {
    const st = await fs.stat(file);
    if (st.isFile()) size = st.size;
  } catch {
    /* a new file */
  }
  const keep = state.lines.filter((l) => !(l.error && retry.has(l.image)));
  if (size > 0 && (keep.length < state.lines.length || state.validBytes < size)) {
    const bytes = await fs.readFile(file);
    await writeFileAtomic(file, Buffer.concat(keep.map((l) => bytes.subarray(l.start, l.end))));
  }
  let handle: fs.FileHandle;
  try {
    handle = await fs.open(file, 'a');
  } catch (e) {
    // ENXIO: a pipe without a reader (--output /dev/stdout after `| head` is gone): quiet, as for stdout
    if ((e as NodeJS.ErrnoException).code === 'ENXIO') throw new OutputClosed();
    throw new DataError(`--output ${file}: cannot open for writing: ${ioReason(e)}`);
  }
  let closed = false;
  let failed = false;
  return {
    async write(line) {
      try {
        await handle.write(line);
      } catch (e) {
        failed = true;
        // --output /dev/stdout (or a named pipe) whose reader went away: a quiet end, as for stdout itself
        if ((e as NodeJS.ErrnoException).code === 'EPIPE') throw new OutputClosed();
        throw new DataError(`--output ${file}: cannot write: ${ioReason(e)}`);
      }
    },
    async close() {
      if (closed) return;
      closed = true;
      try {
        await handle.sync();
      } catch (e) {
        // fsync is meaningless on devices and pipes (EINVAL); after a failed write that error is the news
        const code = (e as NodeJS.ErrnoException).code;
        if (!failed && code !== 'EINVAL' && code !== 'ENOTSUP') {
          await handle.close().catch(() => {});
          throw new DataError(`--output ${file}: cannot write: ${ioReason(e)}`);
        }
      }
      await handle.close().catch(() => {});
    },
  };
}
