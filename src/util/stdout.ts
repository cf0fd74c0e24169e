// Data on stdout, checked to the end. Every command that prints data (JSON, tables, captions) writes through
// writeOut, which resolves only once the text was handed to the system, and otherwise rejects with:
//  - OutputClosed (exit 141, quiet) when the reader went away (`| head -1`: EPIPE), as Unix tools do;
//  - DataError "cannot write to stdout: no space left on device (ENOSPC)" (exit 3) for any other failure
//    (a full disk, an I/O error), so a redirect to a full disk never ends with exit 0 and a short file.
// Node reports a failed write once (later writes only say the stream is destroyed), so each stream's first
// error is remembered (watchStream; the CLI also checks it at exit, for output it did not write itself, such
// as --help) and named instead.
import { DataError, OutputClosed, type CaptionerError } from '../errors.js';
import { ioReason } from './fsx.js';

/** The first error each watched stream reported (a failed write is reported once; later ones say "destroyed"). */
const firstErrors = new WeakMap<NodeJS.WritableStream, NodeJS.ErrnoException>();
const watched = new WeakSet<NodeJS.WritableStream>();

/** Listen for `stream`'s errors (once per stream): remembered for stdoutError, and never an uncaught crash. */
export function watchStream(stream: NodeJS.WritableStream = process.stdout): void {
  if (watched.has(stream)) return;
  watched.add(stream);
  stream.on('error', (e: NodeJS.ErrnoException) => {
    if (!firstErrors.has(stream)) firstErrors.set(stream, e);
  });
}

/** The first error `stream` (default stdout) reported, or null. */
export function streamErrorSeen(stream: NodeJS.WritableStream = process.stdout): NodeJS.ErrnoException | null {
  return firstErrors.get(stream) ?? null;
}

/** Forget `stream`'s error (a new CLI run in the same process, tests). */
export function resetStreamError(stream: NodeJS.WritableStream = process.stdout): void {
  firstErrors.delete(stream);
}

const closedCodes = new Set(['EPIPE', 'ERR_STREAM_DESTROYED', 'ERR_STREAM_WRITE_AFTER_END']);

/** Whether a stdout error means that the reader went away (rather than a failed write). */
export function isClosedReader(e: unknown): boolean {
  return closedCodes.has((e as NodeJS.ErrnoException)?.code ?? '');
}

/** The typed error for a failed write to stdout (`e`, or the first error when `e` only says "destroyed"). */
export function stdoutError(e: unknown, stream: NodeJS.WritableStream = process.stdout): CaptionerError {
  const seen = firstErrors.get(stream);
  const err = (isClosedReader(e) && seen ? seen : e) as NodeJS.ErrnoException;
  if (isClosedReader(err)) return new OutputClosed();
  return new DataError(`cannot write to stdout: ${ioReason(err)}`);
}

/**
 * Write `text` to `stream` (default stdout) and wait until it is written: the callback of write() fires once
 * the chunk is flushed, so this also waits out a slow reader (backpressure) instead of buffering.
 */
export function writeOut(text: string, stream: NodeJS.WritableStream = process.stdout): Promise<void> {
  watchStream(stream); // a failed write must come back here, never crash the process as an unhandled 'error'
  return new Promise<void>((resolve, reject) => {
    try {
      stream.write(text, (err?: Error | null) => (err ? reject(stdoutError(err, stream)) : resolve()));
    } catch (e) {
      reject(stdoutError(e, stream));
    }
  });
}
