// One row of benchmark output. `npm run bench` collects rows from every bench/*.ts module.

export interface BenchRow {
  /** Benchmark group: prep, features, train, decode, score, caption, serve. */
  bench: string;
  /** What was measured, e.g. "onnx batch 8". */
  name: string;
  value: number;
  unit: string;
  /** The peer measured in the same run (e.g. "pytorch-cpu") and its value, when there is one. */
  peer?: string;
  peerValue?: number;
  /** value / peerValue for throughputs (higher is better). */
  ratio?: number;
  notes?: string;
}

export interface BenchOptions {
  /** Smaller sizes for a quick look; docs/benchmarks.md quotes full runs. */
  quick: boolean;
}

/** Each bench/<group>.ts exports `bench: BenchModule`. */
export interface BenchModule {
  group: string;
  run(options: BenchOptions): Promise<BenchRow[]>;
}
