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
    expect(outs.map((o) => (o.ok ? o.caption : o.error))).toEqual(Array.from({ length: 10 }, (_, i) => `caption i${i}`));
    expect(r.calls.map((c) => c.ids.length)).toEqual([4, 4, 2]);
    expect(r.calls.flatMap((c) => c.ids)).toEqual(Array.from({ length: 10 }, (_, i) => `i${i}`));
    expect(q.batchSizes).toEqual([4, 4, 2]);
  });

  it('keeps different beams in different batches and passes the beam on', async () => {
    const r = runner();
    const q = new BatchQueue(r.run, { maxBatch: 8, queueSize: 100, windowMs: 5 });
    await Promise.all([q.submit(input('a'), 1), q.submit(input('b'), 3), q.submit(input('c'), 1), q.submit(input('d'))]);
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
    const b = q.submit(input('b'), undefined, ctl.signal);
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
