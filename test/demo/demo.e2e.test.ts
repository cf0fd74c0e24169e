// `captioner demo` end to end through the built CLI, with the real random-weight VGG16 on onnxruntime
// (the e2e tier: npm run test:e2e). Each test has its own --out and depends on no other: a tiny run that
// must produce every artifact it prints, then fine-tunes it (--scst) and switches it to --scenes multi in
// the same --out (which must recompute the features: both kinds name their images alike); the product
// promise at --quick size (300 images: the model's test BLEU-4 beats the image-blind baseline); and the
// attention model on grid features.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { runCli } from '../helpers/cli.js';

let work: string;

beforeAll(async () => {
  work = await fs.mkdtemp(path.join(os.tmpdir(), 'captioner-demo-'));
});

afterAll(async () => {
  await fs.rm(work, { recursive: true, force: true });
});

/** The paths listed under "artifacts:" in the closing summary. */
function artifactPaths(stdout: string): string[] {
  const lines = stdout.split('\n');
  const start = lines.indexOf('artifacts:');
  expect(start).toBeGreaterThan(0);
  const paths: string[] = [];
  for (const l of lines.slice(start + 1)) {
    if (!l.startsWith('  ')) break;
    paths.push(
      l
        .trim()
        .split(/\s{2,}/)
        .pop()!,
    );
  }
  return paths;
}

describe('captioner demo', () => {
  it('a tiny run (--images 40 --epochs 1 --quick) produces every artifact it prints; --scst then fine-tunes it, and --scenes multi in the same --out recomputes the features', async () => {
    const out = path.join(work, 'tiny');
    const r = await runCli(['demo', '--out', out, '--images', '40', '--epochs', '1', '--quick']);
    expect(r.code).toBe(0);
    expect(r.stderr).toMatch(/VGG16 runs with RANDOM, UNTRAINED weights/);
    expect(r.stderr).not.toMatch(/^error/m);
    const rows = r.stdout.split('\n');
    const table = rows.slice(rows.findIndex((l) => l.startsWith('metric')));
    expect(table.slice(0, 8).map((l) => l.split(/\s+/)[0])).toEqual([
      'metric',
      'images',
      'BLEU-1',
      'BLEU-2',
      'BLEU-3',
      'BLEU-4',
      'CIDEr-D',
      'ROUGE_L',
    ]);
    expect(r.stdout).toMatch(/test BLEU-4: model \d\.\d{4} vs image-blind baseline \d\.\d{4}/);
    expect(r.stdout).toContain('next, try:');
    const paths = artifactPaths(r.stdout);
    expect(paths).toHaveLength(11);
    for (const p of paths)
      expect(
        await fs.stat(p).then(
          () => true,
          () => false,
        ),
        p,
      ).toBe(true);
    // the captions of the sample folder, through the caption pipeline
    const caps = (await fs.readFile(path.join(out, 'captions.jsonl'), 'utf8'))
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    const samples = await fs.readdir(path.join(out, 'samples'));
    expect(caps.map((c) => path.basename(c.image)).sort()).toEqual(samples.sort());
    for (const c of caps) expect(typeof c.caption).toBe('string');
    // and they are the captions eval gave the same images from the cached features
    const preds = new Map(
      (await fs.readFile(path.join(out, 'model', 'eval-test', 'predictions.jsonl'), 'utf8'))
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l))
        .map((p) => [p.image, p.caption]),
    );
    for (const c of caps) expect(c.caption).toBe(preds.get(path.basename(c.image)));

    // --scst in the same --out: the model is reused and fine-tuned self-critically
    const scst = await runCli([
      'demo',
      '--out',
      out,
      '--images',
      '40',
      '--epochs',
      '1',
      '--quick',
      '--scst',
      '--set',
      'train.scst={epochs: 1, k: 2}',
    ]);
    expect(scst.code).toBe(0);
    expect(scst.stdout).toMatch(
      /test CIDEr-D: cross-entropy \d+\.\d{4}, self-critical \d+\.\d{4} {3}\(test BLEU-4: cross-entropy \d\.\d{4}, self-critical \d\.\d{4}\)/,
    );
    const m = JSON.parse(await fs.readFile(path.join(out, 'model-scst', 'manifest.json'), 'utf8'));
    expect(m.fineTuned).toMatchObject({ method: 'scst', from: { dir: path.resolve(out, 'model') } });
    // each model's test report in its own folder (the self-critical one does not overwrite the other)
    const reportOf = async (m: string) =>
      JSON.parse(await fs.readFile(path.join(out, m, 'eval-test', 'report.json'), 'utf8'));
    expect((await reportOf('model')).model.dir).toMatch(/model$/);
    expect((await reportOf('model-scst')).model.dir).toMatch(/model-scst$/);

    // --scenes multi in the same --out: the data is re-rendered and the features recomputed (keyed by image name)
    const shards = async () => (await fs.readdir(path.join(out, 'features'))).filter((f) => f.endsWith('.bin'));
    const before = await shards();
    expect(before.length).toBeGreaterThan(0);
    const multi = await runCli([
      'demo',
      '--out',
      out,
      '--scenes',
      'multi',
      '--images',
      '40',
      '--epochs',
      '1',
      '--quick',
    ]);
    expect(multi.code).toBe(0);
    expect(multi.stdout).toMatch(/test BLEU-4: model \d\.\d{4} vs image-blind baseline \d\.\d{4}/);
    expect(JSON.parse(await fs.readFile(path.join(out, 'data', 'demo.json'), 'utf8'))).toMatchObject({
      scenes: 'multi',
      images: 40,
    });
    expect(JSON.parse(await fs.readFile(path.join(out, 'demo-run.json'), 'utf8'))).toMatchObject({ scenes: 'multi' });
    const after = await shards();
    expect(after.length).toBeGreaterThan(0);
    for (const f of after) expect(before).not.toContain(f);
  });

  it('the model beats the image-blind baseline on test BLEU-4 (--quick: 300 images)', async () => {
    const out = path.join(work, 'quick');
    const r = await runCli(['demo', '--out', out, '--quick', '--json']);
    expect(r.code).toBe(0);
    const j = JSON.parse(r.stdout);
    expect(j).toMatchObject({
      weights: 'random',
      images: 300,
      metrics: { images: 30 },
      baseline: { metrics: { images: 30 } },
    });
    process.stderr.write(
      `demo --quick: test BLEU-4 ${j.metrics.Bleu_4.toFixed(4)} vs image-blind ${j.baseline.metrics.Bleu_4.toFixed(4)} ("${j.baseline.caption}")\n`,
    );
    expect(j.metrics.Bleu_4).toBeGreaterThan(j.baseline.metrics.Bleu_4);
    expect(j.metrics.CIDEr).toBeGreaterThan(j.baseline.metrics.CIDEr);
  });

  it('--set model.type=attention uses block5_pool grid features (said in the log); switching back recomputes fc2', async () => {
    const att = path.join(work, 'attention');
    const r = await runCli(
      ['demo', '--out', att, '--images', '40', '--epochs', '1', '--quick', '--set', 'model.type=attention'],
      { env: { CAPTIONER_QUIET: '' } },
    );
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(
      /demo: model\.type attention attends over image positions, so the demo caches VGG16 block5_pool features/,
    );
    expect(r.stdout).toMatch(/test BLEU-4: model \d\.\d{4} vs image-blind baseline \d\.\d{4}/);
    expect(JSON.parse(await fs.readFile(path.join(att, 'features', 'manifest.json'), 'utf8'))).toMatchObject({
      layer: 'block5_pool',
      shape: [7, 7, 512],
    });
    expect(JSON.parse(await fs.readFile(path.join(att, 'model', 'manifest.json'), 'utf8')).model).toMatchObject({
      type: 'attention',
      spec: { positions: 49, channels: 512 },
    });
    expect(JSON.parse(await fs.readFile(path.join(att, 'demo-run.json'), 'utf8'))).toMatchObject({
      layer: 'block5_pool',
    });
    // the same --out with the merge model: the grid cache is replaced by fc2 vectors, not refused
    const back = await runCli(['demo', '--out', att, '--images', '40', '--epochs', '1', '--quick']);
    expect(back.code, back.stderr).toBe(0);
    expect(JSON.parse(await fs.readFile(path.join(att, 'features', 'manifest.json'), 'utf8'))).toMatchObject({
      layer: 'fc2',
      shape: [4096],
    });
    // an explicit encoder.layer wins
    const { demoConfig } = await import('../../src/demo/run.js');
    const c = await demoConfig(path.join(work, 'cfg'), {
      weights: 'random',
      sets: ['model.type=attention', 'encoder.layer=block5_conv3'],
    });
    expect(c.encoder.layer).toBe('block5_conv3');
    expect(
      (await demoConfig(path.join(work, 'cfg'), { weights: 'random', sets: ['model.type=attention'] })).encoder.layer,
    ).toBe('block5_pool');
    expect((await demoConfig(path.join(work, 'cfg'), { weights: 'random' })).encoder.layer).toBe('fc2');
    // the transformer attends over positions too, with the demo's own small model.transformer
    const t = await demoConfig(path.join(work, 'cfg'), { weights: 'random', sets: ['model.type=transformer'] });
    expect(t.encoder.layer).toBe('block5_pool');
    expect(t.model.transformer).toMatchObject({ layers: 2, heads: 4, modelDim: 64, ffnDim: 128, dropout: 0.1 });
  });
});
