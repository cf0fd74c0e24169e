// Runs the PyTorch training peer (src/bench/train-peer.py) with /usr/bin/python3 and returns its
// JSON: the same merge caption model trained on the CPU, for `npm run bench` to compare against.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

export interface TorchPeerOptions {
  steps?: number;
  warmup?: number;
  batch?: number;
  vocab?: number;
  length?: number;
  units?: number;
  featureDim?: number;
  /** Real target tokens per caption, uniform in [minLen, maxLen]. */
  minLen?: number;
  maxLen?: number;
  threads?: number;
  seed?: number;
  /** LSTM only up to the longest caption, output layer only on real tokens (a stronger peer). */
  packed?: boolean;
  python?: string;
  timeoutMs?: number;
}

export interface TorchPeerResult {
  peer: 'pytorch-cpu' | 'pytorch-cpu-packed';
  torch: string;
  threads: number;
  batch: number;
  length: number;
  vocab: number;
  units: number;
  steps: number;
  warmup: number;
  realTokens: number;
  seconds: number;
  msPerStep: number;
  /** Real (unpadded) target tokens per second. */
  tokensPerSec: number;
  paddedTokensPerSec: number;
  lossFirst: number;
  lossLast: number;
}

/** Path of train-peer.py (works from src/bench and dist/bench). */
export const TRAIN_PEER = fileURLToPath(new URL('../../src/bench/train-peer.py', import.meta.url));

/** Run the peer; resolves to its result, or to { error } when Python/PyTorch is unavailable. */
export function runTorchPeer(opts: TorchPeerOptions = {}): Promise<TorchPeerResult | { error: string }> {
  const python = opts.python ?? '/usr/bin/python3';
  if (!existsSync(python)) return Promise.resolve({ error: `${python} not found` });
  const flags: [string, number | undefined][] = [
    ['--steps', opts.steps], ['--warmup', opts.warmup], ['--batch', opts.batch], ['--vocab', opts.vocab],
    ['--length', opts.length], ['--units', opts.units], ['--feature-dim', opts.featureDim], ['--min-len', opts.minLen], ['--max-len', opts.maxLen],
    ['--threads', opts.threads ?? 2], ['--seed', opts.seed],
  ];
  const args = [TRAIN_PEER, ...flags.filter(([, v]) => v !== undefined).flatMap(([k, v]) => [k, String(v)]), ...(opts.packed ? ['--packed'] : [])];
  return new Promise((resolve) => {
    const child = spawn(python, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, OMP_NUM_THREADS: String(opts.threads ?? 2) } });
    let out = '';
    let err = '';
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 600_000);
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (err += d));
    child.on('error', (e) => {
      clearTimeout(timer);
      resolve({ error: `cannot run ${python}: ${e.message}` });
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      const line = out.trim().split('\n').pop() ?? '';
      try {
        const parsed = JSON.parse(line) as TorchPeerResult | { error: string };
        resolve(code === 0 || 'error' in parsed ? parsed : { error: `train-peer.py exited ${code}: ${err.trim().split('\n').pop()}` });
      } catch {
        resolve({ error: `train-peer.py exited ${code}: ${(err.trim().split('\n').pop() ?? '').slice(0, 300)}` });
      }
    });
  });
}

/**
 * Adapter for src/bench/train.ts: the peer's real tokens per second plus a one-line description,
 * or null (with a warning on stderr) when PyTorch cannot run. Token counts are real (unpadded)
 * targets; caption lengths are uniform in [minLen, maxLen] (default 8..20, about Flickr8k's).
 */
export async function runTrainPeer(opts: TorchPeerOptions = {}): Promise<(TorchPeerResult & { tokensPerSecond: number; detail: string }) | null> {
  const r = await runTorchPeer(opts);
  if ('error' in r) {
    process.stderr.write(`warning: PyTorch train peer unavailable: ${r.error}\n`);
    return null;
  }
  return { ...r, tokensPerSecond: r.tokensPerSec, detail: `${r.peer} (torch ${r.torch}, ${r.threads} threads)` };
}
