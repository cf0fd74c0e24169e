// Benchmark group 'serve': N caption requests at concurrency C over loopback HTTP against startServer
// with a given Captioner: a real model (random-weight VGG16 fc2 on onnxruntime + a random decoder,
// loaded with loadCaptioner), and the fake colour captioner, which decodes each image but runs no model.
// Reports answered count, p50/p95 latency and requests/s, and the p50/p95 latency of GET /api/health
// polled while the load runs (what a monitor sees from a busy server). The real model runs twice: in a
// worker thread (as `captioner serve` runs it, src/serve/threaded-captioner.ts) and on the server's own
// thread (before the worker); the in-thread run is the peer of the worker's health latency. The peer of
// the batching row is the same server with batching off (serve.maxBatch 1), against a fake with a fixed
// per-batch cost like a model's forward pass, so the ratio shows what batching buys.
import { performance } from 'node:perf_hooks';
import sharp from 'sharp';
import { loadCaptioner } from '#dist/caption/load.js';
import type { Captioner } from '#dist/caption/types.js';
import { randomVgg16Weights, type LoadedVgg16Weights } from '#dist/features/vgg16/weights.js';
import { benchRunFolder } from './caption.js';
import { ServeSchema, type ServeConfig } from '#dist/config/schema.js';
import { createFakeCaptioner } from '../test/serve/fake.js';
import { startServer } from '#dist/serve/server.js';
import { startModelWorker } from '#dist/serve/threaded-captioner.js';
import { inScratch } from './scratch.js';
import type { BenchModule, BenchRow } from './types.js';

export interface ServeLoadOptions {
  requests?: number;
  concurrency?: number;
  /** Server settings over the defaults (host/port are always loopback/any). */
  serve?: Partial<ServeConfig>;
  /** Images sent round-robin (default: four 320x240 JPEGs). */
  images?: Buffer[];
}

export interface ServeLoadResult {
  requests: number;
  answered: number;
  failed: number;
  p50Ms: number;
  p95Ms: number;
  reqPerSec: number;
  /** Mean images per captionBatch call. */
  meanBatch: number;
  /** GET /api/health answers during the load (polled one after another). */
  healthChecks: number;
  healthP50Ms: number;
  healthP95Ms: number;
}

export async function benchImages(): Promise<Buffer[]> {
  const colours = ['#c0392b', '#2980b9', '#27ae60', '#f1c40f'];
  return Promise.all(
    colours.map((c) =>
      sharp({ create: { width: 320, height: 240, channels: 3, background: c } })
        .jpeg()
        .toBuffer(),
    ),
  );
}

/** Fire `requests` POST /api/caption at `concurrency` against a fresh server wrapping `captioner`. */
export async function loadTest(captioner: Captioner, opts: ServeLoadOptions = {}): Promise<ServeLoadResult> {
  const requests = opts.requests ?? 200;
  const concurrency = opts.concurrency ?? 8;
  const images = opts.images ?? (await benchImages());
  // every request comes from this one address: give it as many upload slots and connections as requests in flight
  const cfg: ServeConfig = {
    ...ServeSchema.parse({}),
    maxUploadsPerClient: Math.max(concurrency, 4),
    maxConnectionsPerClient: Math.max(2 * concurrency, 32),
    ...opts.serve,
    host: '127.0.0.1',
    port: 0,
  };
  const server = await startServer(captioner, cfg);
  const url = `${server.url}/api/caption`;
  const bodies = images.map((b) => Uint8Array.from(b)); // fetch wants ArrayBuffer-backed views
  const latencies: number[] = [];
  let failed = 0;
  let next = 0;
  try {
    // one warm-up request (JIT, sharp's first decode)
    await (
      await fetch(url, { method: 'POST', body: bodies[0], headers: { 'content-type': 'image/jpeg' } })
    ).arrayBuffer();
    const batchesBefore = server.stats().batchSizes.length;
    const start = performance.now();
    const worker = async () => {
      while (next < requests) {
        const i = next++;
        const t0 = performance.now();
        try {
          const res = await fetch(url, {
            method: 'POST',
            body: bodies[i % bodies.length],
            headers: { 'content-type': 'image/jpeg' },
          });
          const body = (await res.json()) as { caption?: string };
          if (res.status === 200 && typeof body.caption === 'string') latencies.push(performance.now() - t0);
          else failed++;
        } catch {
          failed++;
        }
      }
    };
    // A monitor polling health while the load runs: one check at a time, 10 ms apart.
    const health: number[] = [];
    let loading = true;
    const monitor = (async () => {
      while (loading) {
        const t0 = performance.now();
        try {
          const res = await fetch(`${server.url}/api/health`);
          await res.arrayBuffer();
          if (res.status === 200 && loading) health.push(performance.now() - t0);
        } catch {
          // counted as missing
        }
        await new Promise((r) => setTimeout(r, 10));
      }
    })();
    await Promise.all(Array.from({ length: concurrency }, worker));
    const seconds = (performance.now() - start) / 1000;
    loading = false;
    await monitor;
    health.sort((a, b) => a - b);
    const sizes = server.stats().batchSizes.slice(batchesBefore);
    latencies.sort((a, b) => a - b);
    return {
      requests,
      answered: latencies.length,
      failed,
      p50Ms: quantile(latencies, 0.5),
      p95Ms: quantile(latencies, 0.95),
      reqPerSec: latencies.length / seconds,
      meanBatch: sizes.reduce((a, b) => a + b, 0) / Math.max(1, sizes.length),
      healthChecks: health.length,
      healthP50Ms: quantile(health, 0.5),
      healthP95Ms: quantile(health, 0.95),
    };
  } finally {
    await server.close();
  }
}

function quantile(sorted: number[], q: number): number {
  if (!sorted.length) return NaN;
  const pos = (sorted.length - 1) * q;
  const lo = Math.floor(pos);
  const hi = Math.ceil(pos);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo);
}

/** Rows for one server measurement, with an optional peer for the throughput ratio. */
export function rowsFor(
  label: string,
  r: ServeLoadResult,
  concurrency: number,
  peer?: { name: string; result: ServeLoadResult },
  healthPeer?: { name: string; result: ServeLoadResult },
): BenchRow[] {
  const notes = `${r.requests} requests, concurrency ${concurrency}, ${r.answered} answered, ${r.failed} failed, mean batch ${r.meanBatch.toFixed(1)}`;
  return [
    { bench: 'serve', name: `${label}: answered`, value: r.answered, unit: 'requests', notes },
    { bench: 'serve', name: `${label}: p50 latency`, value: r.p50Ms, unit: 'ms' },
    { bench: 'serve', name: `${label}: p95 latency`, value: r.p95Ms, unit: 'ms' },
    {
      bench: 'serve',
      name: `${label}: throughput`,
      value: r.reqPerSec,
      unit: 'req/s',
      ...(peer
        ? { peer: peer.name, peerValue: peer.result.reqPerSec, ratio: r.reqPerSec / peer.result.reqPerSec }
        : {}),
    },
    {
      bench: 'serve',
      name: `${label}: health p50 while loaded`,
      value: r.healthP50Ms,
      unit: 'ms',
      notes: `${r.healthChecks} health checks during the load`,
    },
    {
      bench: 'serve',
      name: `${label}: health p95 while loaded`,
      value: r.healthP95Ms,
      unit: 'ms',
      ...(healthPeer
        ? {
            peer: healthPeer.name,
            peerValue: healthPeer.result.healthP95Ms,
            ratio: r.healthP95Ms / healthPeer.result.healthP95Ms,
          }
        : {}),
    },
  ];
}

/** The benchmark: `captioner` (default: the fake) at maxBatch 8, plus the batching comparison. */
export async function runServeBench(options: { quick: boolean; captioner?: Captioner }): Promise<BenchRow[]> {
  const requests = options.quick ? 50 : 200;
  const concurrency = 8;
  const images = await benchImages();
  const rows: BenchRow[] = [];
  const results: ServeLoadResult[] = [];
  if (options.captioner) {
    const r = await loadTest(options.captioner, { requests, concurrency, images });
    rows.push(...rowsFor(`${options.captioner.info.name} maxBatch 8`, r, concurrency));
    results.push(r);
  } else {
    const { inThread, inWorker } = await realModelLoad(requests, concurrency, images);
    rows.push(
      ...rowsFor(
        'real model (VGG16 onnx + decoder, beam 3) in a worker, maxBatch 8',
        inWorker,
        concurrency,
        undefined,
        { name: 'model on the server thread', result: inThread },
      ),
    );
    rows.push(
      ...rowsFor('real model (VGG16 onnx + decoder, beam 3) on the server thread, maxBatch 8', inThread, concurrency),
    );
    const fake = createFakeCaptioner();
    const r = await loadTest(fake, { requests, concurrency, images });
    rows.push(...rowsFor(`${fake.info.name} maxBatch 8`, r, concurrency));
    results.push(inWorker, inThread, r);
  }
  // The server's own cost (HTTP, body, magic bytes, queue): a captioner that does no work.
  const noop = await loadTest(noopCaptioner(), { requests, concurrency, images });
  rows.push(...rowsFor('no-op captioner maxBatch 8', noop, concurrency));
  // Batching on vs off against a model-like fixed cost per captionBatch call (20 ms).
  const batched = await loadTest(createFakeCaptioner({ delayMs: 20 }), {
    requests,
    concurrency,
    images,
    serve: { maxBatch: 8 },
  });
  const single = await loadTest(createFakeCaptioner({ delayMs: 20 }), {
    requests,
    concurrency,
    images,
    serve: { maxBatch: 1 },
  });
  rows.push(...rowsFor('fake+20ms/batch maxBatch 8', batched, concurrency, { name: 'maxBatch 1', result: single }));
  rows.push(...rowsFor('fake+20ms/batch maxBatch 1', single, concurrency));
  const failures = [...results, noop, batched, single].reduce(
    (n, x) => n + x.failed + (x.requests - x.answered - x.failed),
    0,
  );
  if (failures) throw new Error(`serve bench: ${failures} request(s) not answered with a caption`);
  return rows;
}

/**
 * The load test against a real run folder (see benchRunFolder): in a worker thread as `captioner serve`
 * runs it (the worker makes its own random weights from the recorded seed), and on this thread.
 */
async function realModelLoad(
  requests: number,
  concurrency: number,
  images: Buffer[],
): Promise<{ inThread: ServeLoadResult; inWorker: ServeLoadResult }> {
  const loaded: LoadedVgg16Weights = {
    weights: randomVgg16Weights(1),
    fingerprint: 'random:seed=1',
    source: 'random',
    includeTop: true,
  };
  return inScratch('serve', async (tmp) => {
    try {
      const { run, config } = await benchRunFolder(tmp, loaded);
      const w = await startModelWorker(run, config, { runtime: 'onnx' });
      let inWorker: ServeLoadResult;
      try {
        inWorker = await loadTest(w, { requests, concurrency, images });
      } finally {
        await w.dispose();
      }
      const c = await loadCaptioner(run, { config, runtime: 'onnx', threads: 2, vgg16Weights: loaded });
      try {
        return { inThread: await loadTest(c, { requests, concurrency, images }), inWorker };
      } finally {
        await c.dispose();
      }
    } finally {
      loaded.weights.clear();
    }
  });
}

/** Answers at once without looking at the image: measures the server alone. */
function noopCaptioner(): Captioner {
  return {
    info: { name: 'noop', encoder: 'none', backend: 'none' },
    captionBatch: async (inputs) =>
      inputs.map(() => ({ ok: true, caption: 'a thing', tokens: ['a', 'thing'], logprob: -1 })),
    dispose: async () => {},
  };
}

export const bench: BenchModule = {
  group: 'serve',
  run: (options) => runServeBench(options),
};
