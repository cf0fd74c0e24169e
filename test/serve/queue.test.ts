import { describe, expect, it } from 'vitest';
import type { CaptionOptions, CaptionOutcome, ImageInput } from '../../src/caption/types.js';
import { BatchQueue, CancelledError, QueueFullError } from '../../src/serve/queue.js';

const input = (id: string): ImageInput => ({ id, bytes: Buffer.from(id) });
const ok = (caption: string): CaptionOutcome => ({ ok: true, caption, tokens: caption.split(' '), logprob: -1 });

/** A runner that records its calls and answers when `release()` is called (or at once when open). */
function runner(open = true) {
  const calls: { ids: string[]; options: CaptionOptions }[] = [];
  let releases: (() => void)[] = [];
  const run = async (inputs: ImageInput[], options: CaptionOptions) => {
    calls.push({ ids: inputs.map((i) => i.id), options });
    if (!open) await new Promise<void>((r) => releases.push(r));
    return inputs.map((i) => ok(`caption ${i.id}`));
  };
  const release = () => {
    const r = releases;
    releases = [];
    r.forEach((f) => f());
  };
  return { run, calls, release, open: () => ((open = true), release()) };
}

const tick = (ms = 0) => new Promise((r) => setTimeout(r, ms));

describe('BatchQueue', () => {
  it('batches requests that arrive together, up to maxBatch, in order', async () => {
    const r = runner();
    const q = new BatchQueue(r.run, { maxBatch: 4, queueSize: 100, windowMs: 5 });
    const outs = await Promise.all(Array.from({ length: 10 }, (_, i) => q.submit(input(`i${i}`))));
    expect(outs.map((o) => (o.ok ? o.caption : o.error))).toEqual(
      Array.from({ length: 10 }, (_, i) => `caption i${i}`),
    );
    expect(r.calls.map((c) => c.ids.length)).toEqual([4, 4, 2]);
    expect(r.calls.flatMap((c) => c.ids)).toEqual(Array.from({ length: 10 }, (_, i) => `i${i}`));
    expect(q.batchSizes).toEqual([4, 4, 2]);
  });

  it('keeps different beams in different batches and passes the beam on', async () => {
    const r = runner();
    const q = new BatchQueue(r.run, { maxBatch: 8, queueSize: 100, windowMs: 5 });
    await Promise.all([
      q.submit(input('a'), { beam: 1 }),
      q.submit(input('b'), { beam: 3 }),
      q.submit(input('c'), { beam: 1 }),
      q.submit(input('d')),
    ]);
    expect(r.calls).toEqual([
      { ids: ['a', 'c'], options: { beam: 1 } },
      { ids: ['b'], options: { beam: 3 } },
      { ids: ['d'], options: {} },
    ]);
  });

  it('refuses beyond queueSize waiting requests, and recovers', async () => {
    const r = runner(false);
    const q = new BatchQueue(r.run, { maxBatch: 2, queueSize: 3, windowMs: 0 });
    const first = [q.submit(input('a')), q.submit(input('b'))];
    await tick();
    expect(r.calls).toHaveLength(1); // a+b are being captioned (held)
    const waiting = [q.submit(input('c')), q.submit(input('d')), q.submit(input('e'))];
    expect(q.waiting).toBe(3);
    await expect(q.submit(input('f'))).rejects.toBeInstanceOf(QueueFullError);
    r.open();
    const all = await Promise.all([...first, ...waiting]);
    expect(all).toHaveLength(5);
    await q.idle();
    expect(q.waiting).toBe(0);
    await expect(q.submit(input('g'))).resolves.toMatchObject({ ok: true });
  });

  it('drops a waiting request whose signal aborts', async () => {
    const r = runner(false);
    const q = new BatchQueue(r.run, { maxBatch: 1, queueSize: 10, windowMs: 0 });
    const a = q.submit(input('a'));
    await tick();
    const ctl = new AbortController();
    const b = q.submit(input('b'), { signal: ctl.signal });
    const c = q.submit(input('c'));
    ctl.abort();
    await expect(b).rejects.toBeInstanceOf(CancelledError);
    r.open();
    await Promise.all([a, c]);
    expect(r.calls.map((x) => x.ids)).toEqual([['a'], ['c']]);
  });

  it('rejects the whole batch when the model throws or miscounts, and keeps going', async () => {
    let mode: 'throw' | 'short' | 'ok' = 'throw';
    const q = new BatchQueue(
      async (inputs) => {
        if (mode === 'throw') throw new Error('boom');
        if (mode === 'short') return [ok('only one')];
        return inputs.map((i) => ok(i.id));
      },
      { maxBatch: 4, queueSize: 10, windowMs: 1 },
    );
    await expect(Promise.all([q.submit(input('a')), q.submit(input('b'))])).rejects.toThrow('boom');
    mode = 'short';
    await expect(Promise.all([q.submit(input('a')), q.submit(input('b'))])).rejects.toThrow(/1 outcomes for 2 images/);
    mode = 'ok';
    await expect(q.submit(input('z'))).resolves.toMatchObject({ caption: 'z' });
  });

  it('idle() waits for the running batch', async () => {
    const r = runner(false);
    const q = new BatchQueue(r.run, { maxBatch: 2, queueSize: 10, windowMs: 0 });
    const a = q.submit(input('a'));
    let idle = false;
    void q.idle().then(() => (idle = true));
    await tick(5);
    expect(idle).toBe(false);
    r.open();
    await a;
    await tick();
    expect(idle).toBe(true);
  });
});

describe('BatchQueue fairness between clients', () => {
  it("fills a batch with the clients in turn: a late client goes into the next batch, ahead of the first one's queue", async () => {
    const r = runner(false);
    const q = new BatchQueue(r.run, { maxBatch: 4, queueSize: 100, windowMs: 0 });
    const all: Promise<CaptionOutcome>[] = [q.submit(input('a0'), { client: 'A' })];
    await tick();
    expect(r.calls.map((c) => c.ids)).toEqual([['a0']]); // the first batch started at once
    for (let i = 1; i < 12; i++) all.push(q.submit(input(`a${i}`), { client: 'A' }));
    all.push(q.submit(input('b0'), { client: 'B' }), q.submit(input('b1'), { client: 'B' }));
    all.push(q.submit(input('c0'), { client: 'C' }));
    r.release();
    await tick();
    // A had its turn: B and C come first in the next batch, and A fills the rest in turn
    expect(r.calls[1].ids).toEqual(['a1', 'b0', 'c0', 'a2']);
    r.open();
    await Promise.all(all);
    expect(r.calls.flatMap((c) => c.ids)).toHaveLength(15);
    expect(r.calls[2].ids).toEqual(['b1', 'a3', 'a4', 'a5']);
  });

  it('keeps beams apart: the client whose turn it is chooses the beam', async () => {
    const r = runner(false);
    const q = new BatchQueue(r.run, { maxBatch: 8, queueSize: 100, windowMs: 0 });
    const all = [q.submit(input('x'), { beam: 1, client: 'A' })];
    await tick();
    all.push(
      q.submit(input('a1'), { beam: 1, client: 'A' }),
      q.submit(input('a2'), { beam: 2, client: 'A' }),
      q.submit(input('b1'), { beam: 2, client: 'B' }),
      q.submit(input('b2'), { beam: 1, client: 'B' }),
    );
    r.open();
    await Promise.all(all);
    expect(r.calls.map((c) => [c.ids, c.options.beam])).toEqual([
      [['x'], 1],
      [['a1', 'b2'], 1],
      [['a2', 'b1'], 2],
    ]);
  });

  it('a client whose beam was not chosen goes first next time', async () => {
    const r = runner(false);
    const q = new BatchQueue(r.run, { maxBatch: 2, queueSize: 100, windowMs: 0 });
    const all = [q.submit(input('x'), { beam: 1, client: 'X' })];
    await tick();
    for (const [id, beam, client] of [
      ['a1', 1, 'A'],
      ['b1', 2, 'B'],
      ['c1', 1, 'C'],
      ['a2', 1, 'A'],
      ['c2', 1, 'C'],
    ] as const)
      all.push(q.submit(input(id), { beam, client }));
    r.open();
    await Promise.all(all);
    expect(r.calls.map((c) => c.ids)).toEqual([['x'], ['a1', 'c1'], ['b1'], ['a2', 'c2']]);
  });

  it('keeps a batch within maxBatchPixels (its first image always goes), letting small images from others in', async () => {
    const r = runner(false);
    const q = new BatchQueue(r.run, { maxBatch: 8, queueSize: 100, windowMs: 0, maxBatchPixels: 100 });
    const all = [q.submit(input('big0'), { client: 'A', pixels: 150 })]; // over the budget alone: still taken
    await tick();
    for (let i = 1; i < 6; i++) all.push(q.submit(input(`big${i}`), { client: 'A', pixels: 45 }));
    all.push(q.submit(input('photo'), { client: 'B', pixels: 5 }));
    r.open();
    await Promise.all(all);
    expect(r.calls.map((c) => c.ids)).toEqual([['big0'], ['big1', 'photo', 'big2'], ['big3', 'big4'], ['big5']]);
  });

  it('a full queue takes an image from a client with fewer waiting in place of the newest of the client with the most', async () => {
    const r = runner(false);
    const q = new BatchQueue(r.run, { maxBatch: 1, queueSize: 4, windowMs: 0 });
    const running = q.submit(input('a0'), { client: 'A' });
    await tick();
    const a = [1, 2, 3, 4].map((i) => q.submit(input(`a${i}`), { client: 'A' }));
    expect(q.waiting).toBe(4);
    expect(q.accepts('A')).toBe(false);
    expect(q.accepts('B')).toBe(true);
    const b = q.submit(input('b0'), { client: 'B' });
    await expect(a[3]).rejects.toBeInstanceOf(QueueFullError); // a4, A's newest, made room
    expect(q.waitingOf('A')).toBe(3);
    // C (none waiting) displaces A's newest too: A still has two more than C would
    const c = q.submit(input('c0'), { client: 'C' });
    await expect(a[2]).rejects.toBeInstanceOf(QueueFullError);
    const d = q.submit(input('d0'), { client: 'D' });
    await expect(a[1]).rejects.toBeInstanceOf(QueueFullError);
    // now one each: nobody has two more than E would, so E is refused
    expect(q.accepts('E')).toBe(false);
    await expect(q.submit(input('e0'), { client: 'E' })).rejects.toBeInstanceOf(QueueFullError);
    r.open();
    await Promise.all([running, a[0], b, c, d]);
    // and they are served in turn
    expect(r.calls.map((x) => x.ids[0])).toEqual(['a0', 'a1', 'b0', 'c0', 'd0']);
  });
});
