// Where caption results go: stdout or an output file, one JSON line per image, written with one write
// call per line (O_APPEND: a line is never interleaved or split by another writer), with backpressure so
// a slow reader of stdout does not make us buffer results. `--resume` first cuts a half-written last
// line left by a killed run (readResume's validBytes).
import { once } from 'node:events';
import { promises as fs } from 'node:fs';
import { DataError, UsageError } from '../errors.js';
import type { CaptionResult } from './pipeline.js';
import { readResume, type ResumeState } from './jsonl.js';

export interface LineSink {
  write(line: string): Promise<void>;
  close(): Promise<void>;
}

/** The JSON line for a result: {"image","caption","logprob"} or {"image","error"}. */
export function resultLine(r: CaptionResult): string {
  if ('error' in r) return JSON.stringify({ image: r.image, error: r.error }) + '\n';
  return JSON.stringify({ image: r.image, caption: r.caption, logprob: Number(r.logprob.toFixed(6)) }) + '\n';
}

export function streamSink(stream: NodeJS.WritableStream): LineSink {
  let broken: Error | null = null;
  const onError = (e: Error) => {
    broken = e;
  };
  stream.on('error', onError);
  return {
    async write(line) {
      if (broken) throw new DataError(`cannot write the output: ${(broken as NodeJS.ErrnoException).code ?? broken.message}`);
      if (!stream.write(line)) await Promise.race([once(stream, 'drain'), once(stream, 'error')]);
    },
    async close() {
      stream.off('error', onError);
    },
  };
}

/**
 * Open `file` for appending results. With `resume`, what it holds is read back (the finished images are
 * returned) and a partial last line is cut off; without, a non-empty existing file is refused.
 */
export async function openOutputFile(file: string, resume: boolean): Promise<{ sink: LineSink; resumed: ResumeState }> {
  let resumed: ResumeState = { done: new Set(), validBytes: 0 };
  let size = 0;
  try {
    const st = await fs.stat(file);
    if (st.isDirectory()) throw new UsageError(`--output ${file}: is a folder`);
    size = st.size;
  } catch (e) {
    if (e instanceof UsageError) throw e;
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw new DataError(`--output ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  if (size > 0) {
    if (!resume) throw new UsageError(`--output ${file} already holds results; add --resume to continue it (finished images are skipped), or delete it`);
    resumed = await readResume(file);
    if (resumed.validBytes < size) await fs.truncate(file, resumed.validBytes);
  }
  let handle: fs.FileHandle;
  try {
    handle = await fs.open(file, 'a');
  } catch (e) {
    throw new DataError(`--output ${file}: cannot open for writing (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  let closed = false;
  return {
    resumed,
    sink: {
      async write(line) {
        await handle.write(line);
      },
      async close() {
        if (closed) return;
        closed = true;
        try {
          await handle.sync();
        } finally {
          await handle.close();
        }
      },
    },
  };
}
