// Benchmark group 'features': VGG16 (random weights, up to fc2) images per second at batch 8, on
// onnxruntime (our ONNX graph) and on TensorFlow.js wasm, against PyTorch on the CPU (bench/vgg16-peer.py,
// Debian python3-torch, at its best thread split: see bestPeer) in the same run; ratio = ours / PyTorch (higher is better).
// The peer runs as a server process and its batches are interleaved with ours (ours, peer, ours, peer...),
// so both see the same machine load. Ours is timed through ImageEncoder.encode (preprocessing, packing
// and splitting included); the peer times only its forward pass. ONNX uses 2 intra-op threads like the
// peer; tfjs wasm in Node is single-threaded.
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { existsSync } from 'node:fs';
import * as readline from 'node:readline';
import { EncoderSchema } from '#dist/config/schema.js';
import { createEncoder } from '#dist/features/encoder.js';
import type { ImageEncoder } from '#dist/features/types.js';
import { randomVgg16Weights, type LoadedVgg16Weights } from '#dist/features/vgg16/weights.js';
import { rng } from '#dist/util/random.js';
import { peerEnv, threadSweep } from './torch.js';
import { peerScript } from './paths.js';
import type { BenchModule, BenchRow } from './types.js';
import { median } from './stats.js';

const BATCH = 8;
const THREADS = 2;
const PEER = peerScript('vgg16-peer.py');
const PYTHON = process.env.CAPTIONER_PYTHON ?? '/usr/bin/python3';

function images(n: number): Uint8Array[] {
  const r = rng(11);
  return Array.from({ length: n }, () => Uint8Array.from({ length: 224 * 224 * 3 }, () => Math.floor(r() * 256)));
}

/** The PyTorch peer as a long-lived process: one timed batch per `run()`. */
interface Peer {
  note: string;
  run(): Promise<number>;
  close(): void;
}

async function startPeer(threads: number, blasThreads: number): Promise<Peer | string> {
  if (!existsSync(PYTHON) || !existsSync(PEER)) return `peer unavailable (${PYTHON} or ${PEER} missing)`;
  const child: ChildProcessWithoutNullStreams = spawn(
    PYTHON,
    [PEER, '--serve', '--batch', String(BATCH), '--threads', String(threads)],
    {
      stdio: 'pipe',
      env: peerEnv(threads, blasThreads),
    },
  );
  let stderr = '';
  child.stderr.on('data', (d) => (stderr += d));
  const lines = readline.createInterface({ input: child.stdout })[Symbol.asyncIterator]();
  const next = async (): Promise<Record<string, unknown>> => {
    const { value, done } = await lines.next();
    if (done) throw new Error(`pytorch peer exited: ${stderr.trim().split('\n').pop() ?? ''}`);
    return JSON.parse(value) as Record<string, unknown>;
  };
  try {
    const hello = await next();
    return {
      note: `torch ${hello.torch}, ${hello.threads} torch / ${blasThreads} BLAS threads`,
      async run() {
        child.stdin.write('run\n');
        return (await next()).seconds as number;
      },
      close() {
        child.stdin.end('quit\n');
      },
    };
  } catch (e) {
    child.kill();
    return `peer failed: ${(e as Error).message}`;
  }
}

/**
 * The peer at its best: one process per thread split of threadSweep() (torch x BLAS threads), each timed
 * on one batch after a warm-up; the fastest stays open, the others are closed.
 */
async function bestPeer(): Promise<Peer | string> {
  let best: { peer: Peer; seconds: number } | null = null;
  const tried: string[] = [];
  for (const c of threadSweep()) {
    const p = await startPeer(c.threads, c.blasThreads);
    if (typeof p === 'string') return p;
    await p.run();
    const seconds = await p.run();
    tried.push(`${c.threads}x${c.blasThreads}: ${(BATCH / seconds).toFixed(1)}`);
    if (!best || seconds < best.seconds) {
      best?.peer.close();
      best = { peer: p, seconds };
    } else p.close();
  }
  if (!best) return 'peer unavailable (no thread configuration)';
  const chosen = best.peer;
  return { ...chosen, note: `${chosen.note}; best of ${tried.join(', ')} (torch x BLAS threads, img/s)` };
}

/** `rounds` timed batches of ours, each followed by one of the peer's (after one warm-up batch). */
async function interleaved(
  enc: ImageEncoder,
  peer: Peer | null,
  rounds: number,
): Promise<{ ours: number; peer?: number }> {
  const batch = images(BATCH);
  await enc.encode(batch);
  const ours: number[] = [];
  const theirs: number[] = [];
  for (let i = 0; i < rounds; i++) {
    const t0 = performance.now();
    await enc.encode(batch);
    ours.push((performance.now() - t0) / 1000);
    if (peer) theirs.push(await peer.run());
  }
  return { ours: BATCH / median(ours), peer: peer ? BATCH / median(theirs) : undefined };
}

export const bench: BenchModule = {
  group: 'features',
  async run({ quick }) {
    const loaded: LoadedVgg16Weights = {
      weights: randomVgg16Weights(1),
      fingerprint: 'random:seed=1',
      source: 'random',
      includeTop: true,
    };
    const cfg = (runtime: 'onnx' | 'tfjs') =>
      EncoderSchema.parse({ type: 'vgg16', runtime, weights: 'random', seed: 1, layer: 'fc2' });
    const started = await bestPeer();
    const peer = typeof started === 'string' ? null : started;
    const peerNote = typeof started === 'string' ? started : started.note;
    const rows: BenchRow[] = [];
    const row = (name: string, r: { ours: number; peer?: number }, notes: string): BenchRow => ({
      bench: 'features',
      name,
      value: r.ours,
      unit: 'img/s',
      ...(r.peer !== undefined ? { peer: 'pytorch-cpu', peerValue: r.peer, ratio: r.ours / r.peer } : {}),
      notes: `${notes}; peer: ${peerNote}`,
    });
    try {
      const onnx = await createEncoder(cfg('onnx'), { threads: THREADS, weights: loaded });
      try {
        rows.push(
          row(`vgg16 fc2 onnxruntime batch ${BATCH}`, await interleaved(onnx, peer, quick ? 2 : 5), onnx.info.detail),
        );
      } finally {
        await onnx.dispose();
      }
      const tfjs = await createEncoder(cfg('tfjs'), { threads: THREADS, backend: 'wasm', weights: loaded });
      try {
        rows.push(
          row(`vgg16 fc2 tfjs-wasm batch ${BATCH}`, await interleaved(tfjs, peer, quick ? 1 : 3), tfjs.info.detail),
        );
      } finally {
        await tfjs.dispose();
      }
    } finally {
      peer?.close();
      loaded.weights.clear();
    }
    return rows;
  },
};
