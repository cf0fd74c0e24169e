// A fake Captioner for the worker tests, loaded INSIDE the model worker (plain JS, as a user's own module
// would be). Each batch BLOCKS its thread in a busy loop, as a real model's
// compute does, until the test opens the shared gate (or `blockMs` passed, or 30 s as a safety net).
// Shared Int32Array slots: [0] gate (0 hold, 1 open, 2 crash: open for later batches and throw an
// uncaught error), [1] batches started, [2] captioners built (counts restarts), [3] captioners disposed.
export const GATE = 0,
  STARTED = 1,
  LOADS = 2,
  DISPOSED = 3;

export async function createBlockingCaptioner({ shared, blockMs = 0, failLoad, failReload } = {}) {
  const s = new Int32Array(shared);
  if (failLoad || (failReload && Atomics.load(s, LOADS) > 0)) {
    const e = new Error(failLoad ?? failReload);
    e.name = 'ModelError';
    throw e;
  }
  Atomics.add(s, LOADS, 1);
  return {
    info: { name: 'blocking-fake', encoder: 'none', backend: 'busy loop' },
    async captionBatch(inputs, options = {}) {
      Atomics.add(s, STARTED, 1);
      const until = Date.now() + (blockMs || 30_000);
      // busy: this thread's event loop cannot run while a batch is in progress
      while (Date.now() < until && (blockMs || Atomics.load(s, GATE) === 0)) {
        /* spin */
      }
      if (Atomics.load(s, GATE) === 2) {
        Atomics.store(s, GATE, 1);
        setImmediate(() => {
          throw new Error('fake native crash');
        });
        await new Promise(() => {}); // never answers: the thread dies first
      }
      return inputs.map((i) => ({
        ok: true,
        caption: `a ${i.bytes.length} byte image`,
        tokens: ['a', 'image'],
        logprob: -(options.beam ?? 3),
      }));
    },
    async dispose() {
      Atomics.add(s, DISPOSED, 1);
    },
  };
}
