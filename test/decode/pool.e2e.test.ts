// The decoding pool (src/decode/pool.ts): N worker threads give exactly what decodeFeatures gives on the
// main thread (captions, log-probabilities, attention rows; in input order), on cpu and on wasm; no tensor
// is left on the main thread; a crashed worker, a model error in a worker and an abort all end every worker
// with a clear error instead of a hang; an idle pool nobody disposed lets the process exit. The workers run
// src/decode/worker.ts (test/helpers/ts-hooks.mjs), the code this file imports.
import { describe, it, expect, beforeAll, vi } from 'vitest';
import { availableParallelism } from 'node:os';
import { decodeFeatures, type DecodeSettings } from '../../src/decode/decode.js';
import { resolveDecodeWorkers, startDecoder } from '../../src/decode/pool.js';
import { loadConfig } from '../../src/config/load.js';
import { ConfigError, ModelError } from '../../src/errors.js';
import { Vocab } from '../../src/text/vocab.js';
import { initBackend } from '../../src/tf/backend.js';
import { tf } from '../../src/tf/tf.js';
import { attnSpec, mergeSpec, randomFeatures, tinyAttention, tinyMerge } from '../helpers/tiny-decoders.js';
import { settleWorkers, type WorkerHandle } from '../helpers/worker-threads.js';

// every worker thread started, and which of them still run
const threads = vi.hoisted(() => ({ started: 0, all: [] as WorkerHandle[], live: new Set<object>() }));
vi.mock('node:worker_threads', async (orig) =>
  (await import('../helpers/worker-threads.js')).trackWorkers(await orig(), threads),
);

const settle = () => settleWorkers(threads);

const vocab = new Vocab(['<pad>', '<unk>', 'startseq', 'endseq', 'a', 'b', 'c', 'd', 'e', 'f', 'g']); // 11 = the tiny specs' vocabSize
const cfg: DecodeSettings = { beam: 3, maxLength: 6, lengthPenalty: 'none', alpha: 0.7, batchSize: 3 };

describe.each(['cpu', 'wasm'] as const)('workers 2 on %s', (backend) => {
  beforeAll(async () => {
    if (backend === 'wasm') await initBackend('wasm', { quiet: true });
    else await tf.setBackend('cpu');
  });

  it('a merge decoder: the same captions and log-probabilities as the main thread, in input order; no tensors left', async () => {
    const { decoder } = tinyMerge(3);
    const features = randomFeatures(10, mergeSpec.featureDim, 5); // 4 batches of 3, 3, 3, 1
    try {
      const one = await decodeFeatures({ decoder, vocab }, features, cfg);
      const n0 = tf.memory().numTensors;
      const pool = await startDecoder({ decoder, vocab }, { workers: 2 });
      expect(pool.workers).toBe(2);
      expect(pool.backend).toBe(backend);
      try {
        const two = await pool.decode(features, cfg);
        expect(two).toEqual(one);
        // several calls at once share the workers and each comes back in order (slices at batch boundaries)
        const [a, b] = await Promise.all([pool.decode(features.slice(0, 6), cfg), pool.decode(features.slice(6), cfg)]);
        expect([...a, ...b]).toEqual(one);
      } finally {
        await pool.dispose(); // resolves once every thread has exited
      }
      expect(tf.memory().numTensors).toBe(n0);
      expect(threads.live.size).toBe(0);
    } finally {
      decoder.dispose();
    }
  });

  it('an attention decoder: identical attention rows too', async () => {
    const decoder = tinyAttention(4);
    const features = randomFeatures(7, attnSpec.positions * attnSpec.channels, 8);
    const settings = { ...cfg, attention: true };
    try {
      const one = await decodeFeatures({ decoder, vocab }, features, settings);
      const pool = await startDecoder({ decoder, vocab }, { workers: 2 });
      try {
        const two = await pool.decode(features, settings);
        expect(two).toEqual(one);
        expect(two[0].attention?.[0]).toBeInstanceOf(Float32Array);
      } finally {
        await pool.dispose();
      }
    } finally {
      decoder.dispose();
    }
  });
});

describe('failures', () => {
  beforeAll(async () => {
    await tf.setBackend('cpu');
  });

  it('a worker that dies mid-decode fails the call with its cause, ends the other workers and refuses later calls', async () => {
    const { decoder } = tinyMerge(3);
    const pool = await startDecoder({ decoder, vocab }, { workers: 2 });
    try {
      const started = threads.all.slice(-2);
      const p = pool.decode(randomFeatures(60, mergeSpec.featureDim, 1), { ...cfg, maxLength: 30 });
      await started[1].terminate(); // as if it crashed: exit code 1 without being asked to stop
      const err = await p.catch((e: Error) => e);
      expect(err).toBeInstanceOf(Error);
      expect((err as Error).message).toMatch(/parallel decoding: worker 1 crashed \(exit code 1\)/);
      await expect(pool.decode(randomFeatures(1, mergeSpec.featureDim, 2), cfg)).rejects.toThrow(/crashed/);
      await settle();
      expect(threads.live.size).toBe(0);
    } finally {
      await pool.dispose();
      decoder.dispose();
    }
  });

  it('a model error in a worker stays a ModelError (exit 4); features of mixed sizes are refused before any work', async () => {
    const { decoder } = tinyMerge(3);
    const pool = await startDecoder({ decoder, vocab }, { workers: 2 });
    try {
      await expect(pool.decode(randomFeatures(2, mergeSpec.featureDim + 1, 1), cfg)).rejects.toThrow(ModelError);
      await expect(
        pool.decode([...randomFeatures(1, mergeSpec.featureDim, 1), ...randomFeatures(1, 3, 1)], cfg),
      ).rejects.toThrow(/image feature 1 has 3 values/);
      // the pool is still usable after a batch's own error
      expect(await pool.decode(randomFeatures(2, mergeSpec.featureDim, 1), cfg)).toHaveLength(2);
    } finally {
      await pool.dispose();
      decoder.dispose();
    }
    expect(threads.live.size).toBe(0);
  });

  it('an abort rejects the calls in flight with an AbortError and ends the workers at once', async () => {
    const { decoder } = tinyMerge(3);
    const ac = new AbortController();
    const pool = await startDecoder({ decoder, vocab }, { workers: 2, signal: ac.signal });
    try {
      const p = pool.decode(randomFeatures(90, mergeSpec.featureDim, 1), { ...cfg, maxLength: 30 });
      ac.abort(); // decode() has handed the first batches to the workers: they are in flight
      const err = await p.catch((e: Error) => e);
      expect((err as Error).name).toBe('AbortError');
      await settle(); // the pool ends its workers by itself
      expect(threads.live.size).toBe(0);
      // an already-aborted signal: the pool does not start a thread
      const started = threads.started;
      await expect(startDecoder({ decoder, vocab }, { workers: 2, signal: ac.signal })).rejects.toMatchObject({
        name: 'AbortError',
      });
      expect(threads.started).toBe(started);
    } finally {
      await pool.dispose();
      decoder.dispose();
    }
  });

  it('an abort while the workers start: an AbortError, and the threads started are ended', async () => {
    const { decoder } = tinyMerge(3);
    const ac = new AbortController();
    const started = threads.started;
    try {
      const p = startDecoder({ decoder, vocab }, { workers: 2, signal: ac.signal });
      while (threads.started < started + 2) await new Promise((r) => setImmediate(r)); // both threads exist
      ac.abort();
      await expect(p).rejects.toMatchObject({ name: 'AbortError' });
      await settle();
      expect(threads.live.size).toBe(0);
    } finally {
      decoder.dispose();
    }
  });

  it('workers 1 decodes on the main thread (no worker) and leaves no tensors', async () => {
    const { decoder } = tinyMerge(3);
    const n = threads.all.length;
    const features = randomFeatures(4, mergeSpec.featureDim, 1);
    const n0 = tf.memory().numTensors;
    const pool = await startDecoder({ decoder, vocab }, { workers: 1 });
    expect(await pool.decode(features, cfg)).toEqual(await decodeFeatures({ decoder, vocab }, features, cfg));
    await pool.dispose();
    expect(tf.memory().numTensors).toBe(n0);
    expect(threads.all.length).toBe(n);
    decoder.dispose();
  });
});

describe('decode.workers in the config', () => {
  it('defaults to auto; 0, 257 and words are config errors naming the key', async () => {
    expect((await loadConfig({})).config.decode.workers).toBe('auto');
    expect((await loadConfig({ sets: ['decode.workers=3'] })).config.decode.workers).toBe(3);
    for (const bad of [0, 257, 'many', 1.5]) {
      await expect(loadConfig({ overrides: { decode: { workers: bad } } })).rejects.toThrow(
        /decode\.workers: expected ("auto" or )?an integer from 1 to 256/,
      );
    }
  });
});

describe('resolveDecodeWorkers', () => {
  it('auto: one per core, 1 on the native backends, never more than the batches', () => {
    expect(resolveDecodeWorkers('auto', { backend: 'wasm', cores: 8 })).toBe(8);
    expect(resolveDecodeWorkers('auto', { backend: 'cpu' })).toBe(availableParallelism());
    expect(resolveDecodeWorkers('auto', { backend: 'tensorflow', cores: 8 })).toBe(1);
    expect(resolveDecodeWorkers('auto', { backend: 'wasm', cores: 8, batches: 3 })).toBe(3);
    expect(resolveDecodeWorkers(4, { backend: 'tensorflow', batches: 10 })).toBe(4);
    expect(resolveDecodeWorkers(4, { batches: 0 })).toBe(1);
    expect(() => resolveDecodeWorkers(0)).toThrow(ConfigError);
  });
});
