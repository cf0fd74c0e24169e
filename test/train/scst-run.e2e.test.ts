// Self-critical fine-tuning runs (src/train/scst-run.ts) on tiny synthetic data, from a short cross-entropy
// run: a loadable run folder with provenance, validation CIDEr-D per epoch, exact resume, refusals.
import { describe, it, expect, beforeAll } from 'vitest';
import { promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { tf } from '../../src/tf/tf.js';
import { ConfigSchema, type Config } from '../../src/config/schema.js';
import { train, type FeatureInfo } from '../../src/train/run.js';
import { defaultScstOut, trainScst } from '../../src/train/scst-run.js';
import { loadTrainedModel, readRunManifest } from '../../src/model/runfolder.js';
import { decodeFeatures } from '../../src/decode/decode.js';
import { UsageError } from '../../src/errors.js';
import { synthetic } from './synthetic.js';

beforeAll(async () => {
  await tf.setBackend('cpu');
  process.env.CAPTIONER_QUIET = '1';
});

function cfg(scst: Record<string, unknown> = {}): Config {
  return ConfigSchema.parse({
    model: { embedDim: 12, units: 16, imageUnits: 16, hiddenUnits: 16, dropout: 0.1 },
    train: {
      epochs: 3,
      batchSize: 8,
      learningRate: 0.01,
      patience: 0,
      seed: 7,
      scst: { k: 3, epochs: 2, maxLength: 8, learningRate: 1e-3, patience: 0, ...scst },
    },
  });
}

const info: FeatureInfo = {
  dir: '/synthetic/features',
  fingerprint: 'c'.repeat(64),
  encoder: { name: 'vgg16', layer: 'fc2' },
  shape: [12],
  dtype: 'float32',
};

const tmp = () => fs.mkdtemp(path.join(os.tmpdir(), 'captioner-scst-'));

/** A tiny cross-entropy run to start from (shared by the tests). */
let s: ReturnType<typeof synthetic>;
let init: string;
beforeAll(async () => {
  s = synthetic({ train: 16, val: 8 });
  init = path.join(await tmp(), 'ce');
  await train({
    config: cfg(),
    prepared: s.prepared,
    features: s.features,
    featureInfo: info,
    out: init,
    backend: 'cpu',
  });
});

const run = (out: string, extra: Partial<Parameters<typeof trainScst>[0]> = {}, c = cfg()) =>
  trainScst({
    config: c,
    prepared: s.prepared,
    features: s.features,
    featureInfo: info,
    init,
    out,
    backend: 'cpu',
    ...extra,
  });

describe('trainScst', () => {
  it('fine-tunes for 2 epochs into a loadable run folder that records where it came from', async () => {
    const out = defaultScstOut(init);
    expect(out).toBe(path.resolve(init) + '-scst');
    const before = tf.memory().numTensors;
    const r = await run(out);
    expect(tf.memory().numTensors).toBe(before);
    expect(r.status).toBe('completed');
    expect(r.epochs).toBe(2);
    expect(r.steps).toBe(4); // 16 images / batch 8, 2 epochs
    // validation CIDEr-D per epoch, epoch 0 being the init model
    const hist = (await fs.readFile(path.join(out, 'history.jsonl'), 'utf8'))
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    expect(hist.map((h) => h.epoch)).toEqual([0, 1, 2]);
    for (const h of hist) expect(typeof h.valCider).toBe('number');
    expect(hist[0].reward).toBeNull();
    expect(typeof hist[1].reward).toBe('number');
    expect(r.initValCider).toBe(hist[0].valCider);
    expect(r.bestValCider).toBe(Math.max(...hist.map((h) => h.valCider)));
    expect(await fs.readFile(path.join(out, 'loss.svg'), 'utf8')).toContain('val CIDEr-D');
    // provenance
    const m = await readRunManifest(out);
    expect(m.fineTuned).toMatchObject({
      method: 'scst',
      from: { dir: path.resolve(init), checkpoint: 'best' },
      reward: { metric: 'CIDEr-D', bleuWeight: 0, documentFrequencies: 'training references', images: 16 },
      k: 3,
      baseline: 'mean',
    });
    expect(m.best).toBe('highest-validation-cider');
    expect(m.model.type).toBe('merge');
    // loadable and decodes, as caption and eval load it
    const t = await loadTrainedModel(out);
    try {
      const caps = await decodeFeatures(
        t,
        s.prepared.splits.val.map((v) => s.features.get(v.image)),
        { beam: 2, maxLength: 8, lengthPenalty: 'none', alpha: 0.7 },
      );
      expect(caps).toHaveLength(8);
    } finally {
      t.decoder.dispose();
    }
    // the init run is untouched and refused as --out; a second start in the same folder asks for --resume
    await expect(run(init)).rejects.toThrow(/is the run being fine-tuned/);
    await expect(run(out)).rejects.toThrow(/--resume/);
    // another stage's folder is refused
    const prepDir = await tmp();
    await fs.writeFile(path.join(prepDir, 'manifest.json'), JSON.stringify({ kind: 'captioner.prepared' }));
    await expect(run(prepDir)).rejects.toBeInstanceOf(UsageError);
  });

  it('resumes an interrupted run to exactly the same weights as an uninterrupted one', async () => {
    const a = path.join(await tmp(), 'a');
    const b = path.join(await tmp(), 'b');
    const c = cfg({ epochs: 2, baseline: 'greedy' });
    await run(a, {}, c);
    const ctl = new AbortController();
    const part = await run(b, { signal: ctl.signal, onStep: (n) => n >= 3 && ctl.abort() }, c);
    expect(part.status).toBe('interrupted');
    expect(part.steps).toBe(3);
    await expect(run(b, { resume: true }, cfg({ epochs: 2, k: 4, baseline: 'greedy' }))).rejects.toThrow(/k: 3 -> 4/);
    const done = await run(b, { resume: true }, c);
    expect(done.status).toBe('completed');
    expect(done.history.map((h) => h.epoch)).toEqual([0, 1, 2]);
    for (const dir of ['last', 'best']) {
      const wa = await fs.readFile(path.join(a, dir, 'weights.bin'));
      const wb = await fs.readFile(path.join(b, dir, 'weights.bin'));
      expect(Buffer.compare(wa, wb)).toBe(0);
    }
    const oa = await fs.readFile(path.join(a, 'last', 'optimizer.bin'));
    const ob = await fs.readFile(path.join(b, 'last', 'optimizer.bin'));
    expect(Buffer.compare(oa, ob)).toBe(0);
  });

  it('refuses --resume of a cross-entropy run folder', async () => {
    await expect(run(path.join(await tmp(), 'none'), { resume: true })).rejects.toThrow(/no checkpoint/);
  });
});

describe('captioner train --scst (built CLI)', () => {
  it('fine-tunes a run made by the real stages into <init>-scst, which eval scores; refuses bad folders', async () => {
    const { buildTrainedRun } = await import('../eval/run-fixture.js');
    const { runCli } = await import('../helpers/cli.js');
    const fx = await buildTrainedRun(path.join(await tmp(), 'run'));
    const cli = (...more: string[]) =>
      runCli([
        'train',
        '--scst',
        '--set',
        `workdir=${fx.dir}`,
        '--backend',
        'cpu',
        '--set',
        'train.scst={k: 2, maxLength: 8}',
        ...more,
      ]);
    const r = await cli('--init', fx.model, '--epochs', '1');
    expect(r.code).toBe(0);
    const out = `${fx.model}-scst`;
    const m = await readRunManifest(out);
    expect(m.fineTuned?.from.dir).toBe(path.resolve(fx.model));
    expect(m.status).toBe('completed');
    expect(m.metrics.epochs).toBe(1); // --epochs sets train.scst.epochs
    const ev = await runCli(['eval', '--model', out, '--set', 'backend=cpu', '--json']);
    expect(ev.code).toBe(0);
    expect(typeof JSON.parse(ev.stdout).metrics.CIDEr).toBe('number');
    expect((await cli('--init', fx.model, '--out', fx.model)).code).toBe(2); // the init run itself
    expect((await cli('--init', fx.model, '--out', fx.prepared)).code).toBe(2); // another stage's folder
    expect((await runCli(['train', '--init', fx.model])).code).toBe(2); // --init without --scst

    // Ctrl-C saves a checkpoint and exits 130; --resume continues from it
    const { spawn } = await import('node:child_process');
    const { bin, repoRoot } = await import('../helpers/cli.js');
    const out2 = path.join(fx.dir, 'tuned');
    const child = spawn(
      process.execPath,
      [
        bin,
        'train',
        '--scst',
        '--set',
        `workdir=${fx.dir}`,
        '--backend',
        'cpu',
        '--set',
        'train.scst={k: 2, maxLength: 8, patience: 0}',
        '--init',
        fx.model,
        '--out',
        out2,
        '--epochs',
        '10000',
      ],
      {
        cwd: repoRoot,
        env: { ...process.env, CAPTIONER_QUIET: '1' },
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += d));
    const exited = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
    const history = path.join(out2, 'history.jsonl');
    const epochsIn = async () =>
      (await fs.readFile(history, 'utf8').catch(() => ''))
        .trim()
        .split('\n')
        .filter((l) => l)
        .map((l) => JSON.parse(l).epoch as number);
    for (let i = 0; i < 600 && (await epochsIn()).length < 2; i++) await new Promise((r) => setTimeout(r, 100)); // epoch 0 and 1
    child.kill('SIGINT');
    expect(await exited).toBe(130);
    expect(stderr).toMatch(/interrupt: finishing the current step and saving a checkpoint/);
    const done = Math.max(...(await epochsIn()));
    const resumed = await runCli([
      'train',
      '--scst',
      '--set',
      `workdir=${fx.dir}`,
      '--backend',
      'cpu',
      '--set',
      'train.scst={k: 2, maxLength: 8, patience: 0}',
      '--init',
      fx.model,
      '--out',
      out2,
      '--epochs',
      String(done + 1),
      '--resume',
    ]);
    expect(resumed.code).toBe(0);
    expect(Math.max(...(await epochsIn()))).toBe(done + 1);
  });
});
