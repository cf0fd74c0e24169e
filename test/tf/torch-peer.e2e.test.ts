// The PyTorch training peer (bench/train-peer.py via bench/torch.ts) runs and reports
// tokens/s; a tiny configuration keeps it to a few seconds. Skipped loudly without PyTorch.
import { execFileSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { peerEnv, runTorchPeer, runTrainPeer, threadSweep } from '../../bench/torch.js';

function hasTorch(): boolean {
  try {
    execFileSync('/usr/bin/python3', ['-c', 'import torch'], { stdio: 'ignore', timeout: 60_000 });
    return true;
  } catch {
    return false;
  }
}

const torchOk = hasTorch();
if (!torchOk) console.warn('SKIP test/tf/torch-peer.e2e.test.ts: /usr/bin/python3 cannot import torch');

describe('PyTorch train peer', () => {
  it.skipIf(!torchOk)('trains a tiny merge model and reports real tokens per second', async () => {
    const r = await runTorchPeer({
      steps: 2,
      warmup: 1,
      batch: 4,
      vocab: 50,
      length: 10,
      units: 8,
      featureDim: 16,
      minLen: 3,
      maxLen: 5,
      threads: 1,
    });
    if ('error' in r) throw new Error(r.error);
    expect(r.peer).toBe('pytorch-cpu');
    expect(r.realTokens).toBeGreaterThanOrEqual(2 * 4 * 3);
    expect(r.realTokens).toBeLessThanOrEqual(2 * 4 * 5);
    expect(r.tokensPerSec).toBeGreaterThan(0);
    expect(r.threads).toBe(1);
  });

  it.skipIf(!torchOk)('the packed variant trains on real tokens only', async () => {
    const r = await runTorchPeer({
      steps: 2,
      warmup: 1,
      batch: 4,
      vocab: 50,
      length: 10,
      units: 8,
      featureDim: 16,
      minLen: 3,
      maxLen: 5,
      threads: 1,
      packed: true,
    });
    if ('error' in r) throw new Error(r.error);
    expect(r.peer).toBe('pytorch-cpu-packed');
    expect(Number.isFinite(r.lossLast)).toBe(true);
  });

  it.skipIf(!torchOk)(
    'the attention variant trains the parity reference over a feature grid, on real tokens only',
    async () => {
      const r = await runTorchPeer({
        model: 'attention',
        steps: 2,
        warmup: 1,
        batch: 4,
        vocab: 50,
        length: 6,
        units: 8,
        positions: 4,
        channels: 6,
        minLen: 5,
        maxLen: 5,
        threads: 1,
      });
      if ('error' in r) throw new Error(r.error);
      expect(r.peer).toBe('pytorch-cpu-packed');
      expect(r.realTokens).toBe(2 * 4 * 5);
      expect(Number.isFinite(r.lossLast)).toBe(true);
    },
  );

  it.skipIf(!torchOk)('runTrainPeer gives tokensPerSecond for the train benchmark', async () => {
    const r = await runTrainPeer({
      steps: 1,
      warmup: 1,
      batch: 2,
      vocab: 20,
      length: 6,
      units: 4,
      featureDim: 8,
      minLen: 2,
      maxLen: 3,
      threads: 1,
    });
    expect(r?.tokensPerSecond).toBeGreaterThan(0);
    expect(r?.detail).toMatch(/^pytorch-cpu \(torch /);
  });

  it.skipIf(!torchOk)(
    'without a thread count, runTrainPeer sweeps torch x BLAS threads and keeps the fastest',
    async () => {
      const r = await runTrainPeer({
        steps: 1,
        warmup: 1,
        batch: 2,
        vocab: 20,
        length: 6,
        units: 4,
        featureDim: 8,
        minLen: 2,
        maxLen: 3,
      });
      expect(r).not.toBeNull();
      expect(r!.sweep.map((c) => [c.threads, c.blasThreads])).toEqual(
        threadSweep().map((c) => [c.threads, c.blasThreads]),
      );
      const fastest = r!.sweep.reduce((a, b) => (b.tokensPerSec > a.tokensPerSec ? b : a));
      expect([r!.threads, r!.blasThreads]).toEqual([fastest.threads, fastest.blasThreads]);
      expect(r!.detail).toMatch(/torch \/ \d+ BLAS threads; best of /);
    },
  );

  it('peerEnv unsets the OpenBLAS core settings for the peer only and pins both thread pools', () => {
    const base = { PATH: '/bin', OPENBLAS_CORETYPE: 'Haswell', OPENBLAS_L2_SIZE: '1048576', OMP_NUM_THREADS: '8' };
    const env = peerEnv(2, 1, base);
    expect(env.OPENBLAS_CORETYPE).toBeUndefined();
    expect(env.OPENBLAS_L2_SIZE).toBeUndefined();
    expect(env).toMatchObject({ PATH: '/bin', OMP_NUM_THREADS: '2', OPENBLAS_NUM_THREADS: '1', MKL_NUM_THREADS: '1' });
    expect(base.OPENBLAS_CORETYPE).toBe('Haswell'); // the caller's environment is untouched
  });

  it('threadSweep covers torch {1, 2, cores} x BLAS {1, cores} without repeats', () => {
    expect(threadSweep(2)).toEqual([
      { threads: 1, blasThreads: 1 },
      { threads: 1, blasThreads: 2 },
      { threads: 2, blasThreads: 1 },
      { threads: 2, blasThreads: 2 },
    ]);
    expect(threadSweep(8)).toHaveLength(6);
    expect(threadSweep(1)).toEqual([{ threads: 1, blasThreads: 1 }]);
  });

  it('reports an error when python is missing', async () => {
    const r = await runTorchPeer({ python: '/nonexistent/python3' });
    expect(r).toEqual({ error: '/nonexistent/python3 not found' });
  });
});
