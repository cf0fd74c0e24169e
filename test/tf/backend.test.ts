// Backend selection (src/tf/backend.ts): explicit requests that cannot be met fail with a reason,
// auto picks the first available backend, init is idempotent, and load errors become advice.
import { describe, expect, it } from 'vitest';
import { ConfigError } from '../../src/errors.js';
import { backendReport, initBackend, loadFailure } from '../../src/tf/backend.js';
import { tf } from '../../src/tf/tf.js';

describe('backendReport', () => {
  it('lists the four backends in auto order; wasm and cpu work here', async () => {
    const probes = await backendReport();
    expect(probes.map((p) => p.request)).toEqual(['gpu', 'node', 'wasm', 'cpu']);
    const wasm = probes.find((p) => p.request === 'wasm')!;
    expect(wasm.available).toBe(true);
    expect(wasm.version).toBe('4.22.0');
    expect(wasm.detail).toMatch(/SIMD/);
    expect(probes.find((p) => p.request === 'cpu')!.available).toBe(true);
    for (const p of probes) if (!p.available) expect(p.reason).toBeTruthy();
  });
});

describe('initBackend logging', () => {
  it('logs the chosen backend on stderr once, unless quiet', async () => {
    const writes: string[] = [];
    const orig = process.stderr.write.bind(process.stderr);
    process.stderr.write = ((s: string) => (writes.push(String(s)), true)) as typeof process.stderr.write;
    const env = process.env.CAPTIONER_QUIET;
    delete process.env.CAPTIONER_QUIET;
    try {
      await initBackend('cpu');
      expect(writes.join('')).toMatch(/^backend: cpu \(plain JavaScript/);
      writes.length = 0;
      await initBackend('cpu'); // cached: no second line
      expect(writes.join('')).toBe('');
    } finally {
      process.stderr.write = orig;
      if (env !== undefined) process.env.CAPTIONER_QUIET = env;
    }
  });
});

describe('initBackend', () => {
  it('auto picks the first available backend and is idempotent', async () => {
    const probes = await backendReport();
    const first = probes.find((p) => p.available)!;
    const a = await initBackend('auto', { quiet: true });
    expect(a.name).toBe(first.backend);
    expect(tf.getBackend()).toBe(a.name);
    const b = await initBackend('auto', { quiet: true });
    expect(b).toBe(a);
  });

  it('switches between cpu and wasm on request', async () => {
    expect((await initBackend('cpu', { quiet: true })).name).toBe('cpu');
    expect(tf.getBackend()).toBe('cpu');
    const w = await initBackend('wasm', { quiet: true });
    expect(w).toMatchObject({ name: 'wasm', device: 'cpu' });
    expect(tf.getBackend()).toBe('wasm');
    expect(tf.getKernel('UnsortedSegmentSum', 'wasm')).toBeDefined();
  });

  it('explicit gpu / node fail with a ConfigError saying why, when their module is unusable', async () => {
    const probes = await backendReport();
    for (const req of ['gpu', 'node'] as const) {
      const probe = probes.find((p) => p.request === req)!;
      if (probe.available) continue; // a machine with tfjs-node(-gpu) installed
      const err = await initBackend(req, { quiet: true }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(ConfigError);
      expect((err as Error).message).toContain(probe.reason!);
      expect((err as Error).message).toMatch(req === 'gpu' ? /tfjs-node-gpu/ : /tfjs-node/);
    }
  });
});

describe('loadFailure', () => {
  it('explains missing CUDA, cuDNN, libtensorflow and absent modules', () => {
    expect(
      loadFailure('gpu', 'Error: libcudart.so.11.0: cannot open shared object file: No such file or directory'),
    ).toMatch(/CUDA runtime libcudart\.so\.11\.0 missing.*CUDA 11\.2 and cuDNN 8\.1/);
    expect(loadFailure('gpu', 'libcudnn.so.8: cannot open shared object file')).toMatch(
      /cuDNN libcudnn\.so\.8 missing/,
    );
    expect(loadFailure('node', 'libtensorflow.so.2: cannot open shared object file: No such file')).toMatch(
      /npm rebuild @tensorflow\/tfjs-node$/,
    );
    expect(loadFailure('node', "Cannot find package '@tensorflow/tfjs-node' imported from /x.js")).toMatch(
      /^not installed: npm install @tensorflow\/tfjs-node/,
    );
    expect(loadFailure('gpu', "Cannot find package '@tensorflow/tfjs-node-gpu' imported from /x.js")).toMatch(
      /npm install @tensorflow\/tfjs-node-gpu \(needs CUDA 11\.2 and cuDNN 8\.1/,
    );
    expect(loadFailure('node', 'something odd\nstack')).toBe('failed to load: something odd');
  });
});
