// A stand-in Captioner for tests, benchmarks and page development: it really decodes each image (sharp)
// and "captions" it by its dominant colour, reports undecodable bytes as kind 'corrupt' (and images over
// `maxPixels` as 'too_large', as the real loader does), logs every captionBatch call, and can be slowed
// down or held shut (a gate) to exercise queueing and draining. The serve benchmark (bench/serve.ts)
// measures the server against it too, so it imports nothing from src/ but types (the benchmarks run the
// built package in dist/; see tsconfig.bench.json).
import sharp from 'sharp';
import type { CaptionOptions, CaptionOutcome, Captioner, ImageInput } from '../../src/caption/types.js';

export interface FakeOptions {
  /** Extra delay per captionBatch call, in ms (simulates a model's fixed cost per batch). */
  delayMs?: number;
  /** Extra delay per image, in ms. */
  perImageMs?: number;
  /** captionBatch waits for this before it starts (tests hold it to fill the queue). */
  gate?: Promise<void>;
  /** Called at the start of every captionBatch call, which waits for it (tests step the model batch by batch). */
  beforeBatch?: (inputs: ImageInput[]) => Promise<void>;
  /** Throw instead of answering (simulates a broken model). */
  fail?: boolean;
  /** Images with more pixels are refused as kind 'too_large' (default: sharp's own limit). */
  maxPixels?: number;
  /** Override the reported model name, encoder or backend (e.g. long strings, to test the page layout). */
  info?: Partial<Captioner['info']>;
}

export interface FakeCaptioner extends Captioner {
  /** One entry per captionBatch call: the ids it received and the options. */
  readonly calls: { ids: string[]; options: CaptionOptions }[];
  disposed: boolean;
}

const COLOURS: [string, [number, number, number]][] = [
  ['black', [0, 0, 0]],
  ['white', [255, 255, 255]],
  ['grey', [128, 128, 128]],
  ['red', [220, 30, 30]],
  ['green', [30, 170, 50]],
  ['blue', [30, 60, 220]],
  ['yellow', [240, 220, 40]],
  ['orange', [245, 140, 20]],
  ['purple', [130, 40, 160]],
  ['pink', [245, 150, 190]],
  ['brown', [120, 75, 35]],
];

/** The nearest named colour to an RGB triple. */
export function colourName(rgb: [number, number, number]): string {
  let best = COLOURS[0][0];
  let bestD = Infinity;
  for (const [name, c] of COLOURS) {
    const d = (c[0] - rgb[0]) ** 2 + (c[1] - rgb[1]) ** 2 + (c[2] - rgb[2]) ** 2;
    if (d < bestD) [best, bestD] = [name, d];
  }
  return best;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export function createFakeCaptioner(opts: FakeOptions = {}): FakeCaptioner {
  const calls: FakeCaptioner['calls'] = [];
  const fake: FakeCaptioner = {
    info: { name: 'fake-colours', encoder: 'sharp-stats', backend: 'cpu', ...opts.info },
    calls,
    disposed: false,
    async captionBatch(inputs: ImageInput[], options: CaptionOptions = {}): Promise<CaptionOutcome[]> {
      calls.push({ ids: inputs.map((i) => i.id), options: { ...options } });
      if (opts.gate) await opts.gate;
      if (opts.beforeBatch) await opts.beforeBatch(inputs);
      if (opts.delayMs) await sleep(opts.delayMs);
      if (opts.fail) throw new Error('fake model failure');
      const out: CaptionOutcome[] = [];
      for (const input of inputs) {
        if (opts.perImageMs) await sleep(opts.perImageMs);
        try {
          const { dominant } = await sharp(input.bytes, {
            failOn: 'error',
            ...(opts.maxPixels ? { limitInputPixels: opts.maxPixels } : {}),
          }).stats();
          const colour = colourName([dominant.r, dominant.g, dominant.b]);
          const tokens = ['a', colour, 'image'];
          out.push({ ok: true, caption: tokens.join(' '), tokens, logprob: -1.5 - (options.beam ?? 3) / 10 });
        } catch (e) {
          const message = (e as Error).message;
          if (/pixel limit/i.test(message))
            out.push({ ok: false, kind: 'too_large', error: `image has more than ${opts.maxPixels} pixels` });
          else out.push({ ok: false, kind: 'corrupt', error: `cannot decode image: ${message}` });
        }
      }
      return out;
    },
    async dispose() {
      fake.disposed = true;
    },
  };
  return fake;
}
