// Runs the PyTorch training peer (bench/train-peer.py) with /usr/bin/python3 and returns its
// JSON: the same caption model (merge, or attention or the transformer over a feature grid) trained on the CPU, for
// `npm run bench` to compare against.
// A peer is timed at its best: peerEnv() drops OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE for the peer's
// process only (they slow a current OpenBLAS) and pins torch and BLAS threads, and runTrainPeer sweeps
// torch intra-op threads x BLAS threads and keeps the fastest configuration.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import * as os from 'node:os';
import { peerScript } from './paths.js';

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
  /** torch intra-op threads (torch.set_num_threads). */
  threads?: number;
  /** OpenBLAS threads (OPENBLAS_NUM_THREADS); default: the same as `threads`. */
  blasThreads?: number;
  seed?: number;
  /** LSTM only up to the longest caption, output layer only on real tokens (a stronger peer). */
  packed?: boolean;
  /** The decoder (default merge); attention and transformer run packed over a grid of positions x channels. */
  model?: 'merge' | 'attention' | 'transformer';
  positions?: number;
  channels?: number;
  attentionDim?: number;
  /** transformer: blocks, heads and feed-forward width (its model size is `units`). */
  layers?: number;
  heads?: number;
  ffnDim?: number;
  /** Steps timed per configuration of the thread sweep (default 3; after 1 warm-up step). */
  sweepSteps?: number;
  python?: string;
  timeoutMs?: number;
}

export interface TorchPeerResult {
  peer: 'pytorch-cpu' | 'pytorch-cpu-packed';
  torch: string;
  threads: number;
  blasThreads: number;
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

/** Path of train-peer.py (from bench/ and bench-dist/bench/ alike). */
export const TRAIN_PEER = peerScript('train-peer.py');

/**
 * The environment of a peer process: the machine's OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE removed (set
 * here for older OpenBLAS builds, they slow a current one; tests and CI keep them), and the thread
 * counts pinned so that torch and OpenBLAS do not oversubscribe the cores between them.
 */
export function peerEnv(
  torchThreads: number,
  blasThreads: number,
  base: NodeJS.ProcessEnv = process.env,
): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...base };
  delete env.OPENBLAS_CORETYPE;
  delete env.OPENBLAS_L2_SIZE;
  env.OMP_NUM_THREADS = String(torchThreads);
  env.OPENBLAS_NUM_THREADS = String(blasThreads);
  env.MKL_NUM_THREADS = String(blasThreads);
  return env;
}

/** The thread configurations a peer is swept over: torch {1, 2, cores} x BLAS {1, cores}, deduplicated. */
export function threadSweep(cores = os.availableParallelism()): { threads: number; blasThreads: number }[] {
  const torch = [...new Set([1, Math.min(2, cores), cores])];
  const blas = [...new Set([1, cores])];
  return torch.flatMap((threads) => blas.map((blasThreads) => ({ threads, blasThreads })));
}

/** Run the peer; resolves to its result, or to { error } when Python/PyTorch is unavailable. */
export function runTorchPeer(opts: TorchPeerOptions = {}): Promise<TorchPeerResult | { error: string }> {
  const python = opts.python ?? '/usr/bin/python3';
  if (!existsSync(python)) return Promise.resolve({ error: `${python} not found` });
  const flags: [string, number | undefined][] = [
    ['--steps', opts.steps],
    ['--warmup', opts.warmup],
    ['--batch', opts.batch],
    ['--vocab', opts.vocab],
    ['--length', opts.length],
    ['--units', opts.units],
    ['--feature-dim', opts.featureDim],
    ['--min-len', opts.minLen],
    ['--max-len', opts.maxLen],
    ['--threads', opts.threads ?? 2],
    ['--blas-threads', opts.blasThreads ?? opts.threads ?? 2],
    ['--seed', opts.seed],
    ['--positions', opts.positions],
    ['--channels', opts.channels],
    ['--attention-dim', opts.attentionDim],
    ['--layers', opts.layers],
    ['--heads', opts.heads],
    ['--ffn-dim', opts.ffnDim],
  ];
  const args = [
    TRAIN_PEER,
    ...flags.filter(([, v]) => v !== undefined).flatMap(([k, v]) => [k, String(v)]),
    ...(opts.model ? ['--model', opts.model] : []),
    ...(opts.packed ? ['--packed'] : []),
  ];
  return new Promise((resolve) => {
    const child = spawn(python, args, {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: peerEnv(opts.threads ?? 2, opts.blasThreads ?? opts.threads ?? 2),
    });
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
        resolve(
          code === 0 || 'error' in parsed
            ? parsed
            : { error: `train-peer.py exited ${code}: ${err.trim().split('\n').pop()}` },
        );
      } catch {
        resolve({ error: `train-peer.py exited ${code}: ${(err.trim().split('\n').pop() ?? '').slice(0, 300)}` });
      }
    });
  });
}

/**
 * Adapter for bench/train.ts: the peer at its best. With `threads` given it runs that one
 * configuration; otherwise it sweeps threadSweep() (torch x BLAS threads, a short run each), then
 * times the fastest configuration with the full step count. Returns the peer's real tokens per second
 * and a description naming the configuration and the sweep, or null (with a warning on stderr) when
 * PyTorch cannot run. Token counts are real (unpadded) targets; caption lengths are uniform in
 * [minLen, maxLen] (default 8..20, about Flickr8k's).
 */
export async function runTrainPeer(opts: TorchPeerOptions = {}): Promise<
  | (TorchPeerResult & {
      tokensPerSecond: number;
      detail: string;
      sweep: { threads: number; blasThreads: number; tokensPerSec: number }[];
    })
  | null
> {
  const fail = (error: string) => {
    process.stderr.write(`warning: PyTorch train peer unavailable: ${error}\n`);
    return null;
  };
  let best = { threads: opts.threads ?? 2, blasThreads: opts.blasThreads ?? opts.threads ?? 2 };
  const sweep: { threads: number; blasThreads: number; tokensPerSec: number }[] = [];
  if (opts.threads === undefined) {
    let bestRate = -1;
    for (const c of threadSweep()) {
      const r = await runTorchPeer({
        ...opts,
        ...c,
        steps: Math.min(opts.steps ?? 20, opts.sweepSteps ?? 3),
        warmup: 1,
      });
      if ('error' in r) return fail(r.error);
      sweep.push({ ...c, tokensPerSec: r.tokensPerSec });
      if (r.tokensPerSec > bestRate) {
        bestRate = r.tokensPerSec;
        best = c;
      }
    }
  }
  const r = await runTorchPeer({ ...opts, ...best });
  if ('error' in r) return fail(r.error);
  const swept = sweep.length
    ? `; best of ${sweep.map((c) => `${c.threads}x${c.blasThreads}: ${Math.round(c.tokensPerSec)}`).join(', ')} (torch x BLAS threads, tokens/s)`
    : '';
  return {
    ...r,
    sweep,
    tokensPerSecond: r.tokensPerSec,
    detail: `${r.peer} (torch ${r.torch}, ${r.threads} torch / ${r.blasThreads} BLAS threads${swept})`,
  };
}
