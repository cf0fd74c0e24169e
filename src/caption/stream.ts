// Small async-iterator plumbing for bounded pipelines (pure, no I/O):
//  - mapOrdered: up to `concurrency` calls in flight, results in input order;
//  - batched: groups items, runs one call per batch, yields item by item in input order;
//  - buffered: a bounded queue between two stages; the upstream stage keeps working (up to `size`
//    items ahead) while the downstream one is busy.
// Every stage holds a bounded number of items, so a pipeline of them runs in constant memory however
// long the input is. When the consumer stops early (break/throw), upstream stages are closed.

type Source<T> = AsyncIterable<T> | Iterable<T>;

function iteratorOf<T>(source: Source<T>): AsyncIterator<T> | Iterator<T> {
  return Symbol.asyncIterator in source
    ? (source as AsyncIterable<T>)[Symbol.asyncIterator]()
    : (source as Iterable<T>)[Symbol.iterator]();
}

/** fn over every item with at most `concurrency` calls pending; yields in input order. */
export async function* mapOrdered<T, R>(
  source: Source<T>,
  fn: (item: T) => Promise<R>,
  concurrency: number,
): AsyncGenerator<R> {
  if (!(concurrency >= 1)) throw new RangeError(`mapOrdered: concurrency must be >= 1, got ${concurrency}`);
  const it = iteratorOf(source);
  const window: Promise<R>[] = [];
  let exhausted = false;
  const fill = async () => {
    while (!exhausted && window.length < concurrency) {
      const n = await it.next();
      if (n.done) {
        exhausted = true;
        break;
      }
      const p = fn(n.value);
      p.catch(() => {}); // surfaced when awaited in order
      window.push(p);
    }
  };
  try {
    await fill();
    while (window.length) {
      const r = await window.shift()!;
      await fill(); // keep `concurrency` calls running while the consumer handles r
      yield r;
    }
  } finally {
    if (!exhausted) await it.return?.();
    await Promise.allSettled(window);
  }
}

/**
 * Groups items into batches holding up to `size` items that `take` selects (the others ride along
 * in order), calls `run` once per batch on the selected ones and yields every item in input order,
 * transformed by `put(item, result)` for the selected ones. A batch is run when it is full OR when the
 * source has nothing ready (it does not wait for more input), so a slow source still streams results.
 */
export async function* batched<T, V, R, U>(
  source: Source<T>,
  size: number,
  take: (item: T) => V | undefined,
  run: (values: V[]) => Promise<R[]>,
  put: (item: T, result: R | undefined) => U,
): AsyncGenerator<U> {
  if (!(size >= 1)) throw new RangeError(`batched: size must be >= 1, got ${size}`);
  const it = iteratorOf(source);
  let pending: { item: T; value: V | undefined }[] = [];
  let selected = 0;
  async function* flush(): AsyncGenerator<U> {
    const batch = pending;
    pending = [];
    selected = 0;
    const values = batch.filter((b) => b.value !== undefined).map((b) => b.value as V);
    const results = values.length ? await run(values) : [];
    if (results.length !== values.length)
      throw new Error(`batched: ${results.length} results for ${values.length} items`);
    let k = 0;
    for (const b of batch) yield put(b.item, b.value !== undefined ? results[k++] : undefined);
  }
  const IDLE = Symbol('idle');
  // "nothing ready": the next item has not arrived after pending I/O callbacks ran once
  const idle = () => new Promise<typeof IDLE>((r) => setImmediate(() => r(IDLE)));
  let next: Promise<IteratorResult<T>> | null = null;
  let finished = false;
  try {
    for (;;) {
      if (!next) {
        next = Promise.resolve(it.next());
        next.catch(() => {}); // may fail while a batch runs: rethrown when awaited below, never unhandled
      }
      const n = pending.length ? await Promise.race([next, idle()]) : await next;
      if (n === IDLE) {
        yield* flush(); // `next` stays in flight while the batch runs
        continue;
      }
      next = null;
      if (n.done) {
        finished = true;
        break;
      }
      const item = n.value;
      const value = take(item);
      if (value === undefined && pending.length === 0) {
        yield put(item, undefined); // nothing waiting before it: pass straight through
        continue;
      }
      pending.push({ item, value });
      if (value !== undefined && ++selected >= size) yield* flush();
    }
    if (pending.length) yield* flush();
  } finally {
    if (!finished) {
      if (next) await next.catch(() => {});
      await it.return?.();
    }
  }
}

/** A bounded queue: pulls from `source` ahead of the consumer, holding at most `size` items. */
export async function* buffered<T>(source: AsyncIterable<T>, size: number): AsyncGenerator<T> {
  if (!(size >= 1)) throw new RangeError(`buffered: size must be >= 1, got ${size}`);
  const it = source[Symbol.asyncIterator]();
  const queue: T[] = [];
  let finished = false;
  let failure: { error: unknown } | null = null;
  let stopped = false;
  let wakeConsumer: (() => void) | null = null;
  let wakeProducer: (() => void) | null = null;
  const signal = (which: 'consumer' | 'producer') => {
    const f = which === 'consumer' ? wakeConsumer : wakeProducer;
    if (which === 'consumer') wakeConsumer = null;
    else wakeProducer = null;
    f?.();
  };
  const pump = (async () => {
    try {
      while (!stopped) {
        if (queue.length >= size) {
          await new Promise<void>((r) => (wakeProducer = r));
          continue;
        }
        const n = await it.next();
        if (n.done) break;
        queue.push(n.value);
        signal('consumer');
      }
    } catch (e) {
      failure = { error: e };
    } finally {
      finished = true;
      signal('consumer');
    }
  })();
  try {
    for (;;) {
      if (queue.length) {
        const v = queue.shift()!;
        signal('producer');
        yield v;
        continue;
      }
      if (finished) {
        if (failure) throw (failure as { error: unknown }).error;
        return;
      }
      await new Promise<void>((r) => (wakeConsumer = r));
    }
  } finally {
    stopped = true;
    signal('producer');
    await pump;
    await it.return?.();
  }
}
