// Benchmark group 'demo': wall time of the whole default `captioner demo` (1000 images: render, prep,
// random-weight VGG16 features, training with early stopping, eval, captioning a folder), from an empty
// folder, in this process; `--quick` times `captioner demo --quick` instead. One row for the total and
// one per stage; the notes carry the test BLEU-4 against the image-blind baseline. No peer: this is the
// "under 5 minutes on 2 cores" promise, read it with the machine's load in mind.
import * as os from 'node:os';
import * as path from 'node:path';
import { runDemo } from '#dist/demo/run.js';
import { inScratch } from './scratch.js';
import type { BenchModule, BenchOptions, BenchRow } from './types.js';

export const bench: BenchModule = {
  group: 'demo',
  async run(o: BenchOptions): Promise<BenchRow[]> {
    return inScratch('demo', async (tmp) => {
      const load = os.loadavg()[0];
      const r = await runDemo({ out: path.join(tmp, 'demo'), quick: o.quick });
      const m = r.eval.report.metrics;
      const b = r.eval.report.baseline;
      const what = o.quick ? 'demo --quick' : 'demo (default)';
      const rows: BenchRow[] = [
        {
          bench: 'demo',
          name: `${what}: ${r.images} images, total`,
          value: r.seconds.total,
          unit: 's',
          notes: `${os.availableParallelism()} cores, load ${load.toFixed(1)} at start; ${r.train.epochs} epochs (${r.train.status}); test BLEU-4 ${m.Bleu_4.toFixed(3)} vs image-blind ${b ? b.metrics.Bleu_4.toFixed(3) : '?'}; weights ${r.weights}`,
        },
      ];
      for (const [k, v] of Object.entries(r.seconds))
        if (k !== 'total') rows.push({ bench: 'demo', name: `${what}: ${k}`, value: v, unit: 's' });
      return rows;
    });
  },
};
