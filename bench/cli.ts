// Benchmark group 'cli': start-up time of `captioner --help` and `captioner caption --help` (the CLI
// loads its stages on use, so help must not pay for TensorFlow.js, sharp or onnxruntime), against a bare
// `node -e 0` in the same run: the ratio is how many times an empty Node start the help costs
// (target: under 4x). Medians of interleaved runs, so both see the same machine load.
import { execFileSync } from 'node:child_process';
import * as path from 'node:path';
import { repoRoot } from './paths.js';
import type { BenchModule, BenchRow } from './types.js';
import { median } from './stats.js';

const bin = path.join(repoRoot, 'bin', 'captioner.js');

function ms(args: string[]): number {
  const t0 = performance.now();
  execFileSync(process.execPath, args, { stdio: 'ignore' });
  return performance.now() - t0;
}

export const bench: BenchModule = {
  group: 'cli',
  async run({ quick }) {
    const runs = quick ? 5 : 15;
    const rows: BenchRow[] = [];
    for (const args of [['--help'], ['caption', '--help']]) {
      const node: number[] = [];
      const ours: number[] = [];
      ms([bin, ...args]); // warm the file cache
      for (let i = 0; i < runs; i++) {
        node.push(ms(['-e', '0']));
        ours.push(ms([bin, ...args]));
      }
      const o = median(ours);
      const n = median(node);
      // a time: lower is better, so the ratio is ours / node (target: under 4)
      rows.push({
        bench: 'cli',
        name: `captioner ${args.join(' ')}`,
        value: o,
        unit: 'ms',
        peer: 'node -e 0',
        peerValue: n,
        ratio: o / n,
        notes: `median of ${runs}; ratio = times an empty Node start (target < 4x)`,
      });
    }
    return rows;
  },
};
