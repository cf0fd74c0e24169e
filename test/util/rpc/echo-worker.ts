// A thread entry for test/util/rpc.test.ts: what src/util/rpc.ts must carry both ways (results, transfers,
// errors of each kind, crashes, exits), with start-up that can fail, crash or never finish.
import { DataError, ModelError } from '../../../src/errors.js';
import { serveRequests, withTransfer } from '../../../src/util/rpc.js';

/** A DataError subclass the host does not know: it comes back as a DataError (exit code 3). */
class OddImageError extends DataError {}

export interface EchoInit {
  start?: 'ok' | 'model-error' | 'type-error' | 'crash' | 'never';
}

export type EchoApi = {
  echo(x: unknown): unknown;
  /** Resolves once `release` has been called. */
  wait(x: string): Promise<string>;
  release(): string;
  /** Resolves after a while on the thread's own timer (the host must stay alive for the answer). */
  later(x: string): Promise<string>;
  fail(kind: 'model' | 'odd' | 'type' | 'string'): never;
  /** An uncaught error in the thread, with this request never answered. */
  crash(message: string): Promise<never>;
  exit(code: number): Promise<never>;
  /** The byte length of the buffer sent, and a new buffer of n bytes moved back. */
  bytes(r: { buffer: ArrayBuffer; n: number }): unknown;
};

serveRequests<EchoApi, { pid: number; start: string }>(async ({ start = 'ok' }: EchoInit) => {
  if (start === 'model-error') throw new ModelError('no such run: x');
  if (start === 'type-error') throw new TypeError('cannot read x of undefined');
  if (start === 'crash') setImmediate(() => process.exit(7));
  if (start === 'crash' || start === 'never') await new Promise(() => {});
  let release: (() => void) | undefined;
  const released = new Promise<void>((r) => (release = r));
  return {
    info: { pid: process.pid, start },
    api: {
      echo: (x) => x,
      wait: async (x) => (await released, x),
      release: () => (release!(), 'released'),
      later: (x) => new Promise((r) => setTimeout(() => r(x), 100)),
      fail(kind) {
        if (kind === 'model') throw new ModelError('the checkpoint is corrupt');
        if (kind === 'odd') throw new OddImageError('photo.jpg: truncated');
        if (kind === 'type') throw new TypeError("reading 'maxLength'");
        throw 'a string';
      },
      async crash(message) {
        setImmediate(() => {
          throw new Error(message);
        });
        return new Promise<never>(() => {});
      },
      async exit(code) {
        setImmediate(() => process.exit(code));
        return new Promise<never>(() => {});
      },
      bytes: ({ buffer, n }) => {
        const back = new Uint8Array(n).fill(9);
        return withTransfer({ got: buffer.byteLength, back: back.buffer }, [back.buffer]);
      },
    },
  };
});
