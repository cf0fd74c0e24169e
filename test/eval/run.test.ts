// The eval stage on a tiny trained run (real prep, real cache writer, real training, real decoding):
// the files it writes, what they hold, and the refusals (cache of other settings, missing vectors,
// dataset changed since training).
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import sharp from 'sharp';
import { runEval } from '../../src/eval/run.js';
import { DataError } from '../../src/errors.js';
import { openCacheWriter } from '../../src/features/cache.js';
import { runPrep } from '../../src/prep/run.js';
import { tf } from '../../src/tf/tf.js';
import { runCli } from '../helpers/cli.js';
import { buildTrainedRun, cocoIdOf, fakeSpec, imageName, vectorOf, type EvalFixture } from './run-fixture.js';

let work: string;
let fx: EvalFixture;

beforeAll(async () => {
  process.env.CAPTIONER_QUIET = '1';
  work = await fs.mkdtemp(path.join(os.tmpdir(), 'captioner-eval-'));
  fx = await buildTrainedRun(path.join(work, 'run'));
});

afterAll(async () => {
  await fs.rm(work, { recursive: true, force: true });
});

describe('runEval', () => {
  it('writes predictions (JSONL + COCO results), report.json and report.html; frees its tensors', async () => {
    const before = tf.memory().numTensors;
    const { report, files } = await runEval(fx.config, { model: fx.model });
    expect(tf.memory().numTensors).toBe(before);
    expect(files.dir).toBe(path.join(fx.model, 'eval-test'));

    const lines = (await fs.readFile(files.predictions, 'utf8'))
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    expect(lines.map((l) => l.image)).toEqual([12, 13, 14, 15].map(imageName));
    for (const l of lines) {
      expect(Object.keys(l).sort()).toEqual(['caption', 'image', 'logprob']);
      expect(typeof l.caption).toBe('string');
      expect(l.logprob).toBeLessThanOrEqual(0);
    }
    const coco = JSON.parse(await fs.readFile(files.results, 'utf8'));
    expect(coco).toEqual(lines.map((l) => ({ image_id: l.image, caption: l.caption })));

    const saved = JSON.parse(await fs.readFile(files.report, 'utf8'));
    expect(saved).toEqual(JSON.parse(JSON.stringify(report)));
    expect(saved).toMatchObject({
      kind: 'captioner.eval',
      split: 'test',
      tokenize: 'basic',
      decode: { beam: 2 },
      metrics: { images: 4 },
    });
    for (const k of ['Bleu_1', 'Bleu_2', 'Bleu_3', 'Bleu_4', 'CIDEr', 'ROUGE_L']) {
      expect(saved.metrics[k]).toBeGreaterThanOrEqual(0);
      expect(saved.baseline.metrics[k]).toBeGreaterThanOrEqual(0);
    }
    expect(saved.baseline.caption).toMatch(/square/);
    expect(saved.perImage).toHaveLength(4);
    expect(saved.perImage[0]).toMatchObject({
      image: imageName(12),
      file: imageName(12),
      references: ['A red square.', 'the red square', 'a picture of a red square'],
    });
    expect(saved.perImage[0].caption).toBe(lines[0].caption);
    expect(saved.dataset.fingerprint).toMatch(/^[0-9a-f]{64}$/);
    expect(saved.features.fingerprint).toMatch(/^sha256:/);

    const html = await fs.readFile(files.html, 'utf8');
    expect(html).toMatch(/^<!doctype html>/);
    expect(html.match(/src="data:image\/jpeg;base64,/g)).toHaveLength(4);
    for (const l of lines) expect(html).toContain(`data-image="${l.image}"`);
    expect(html).toContain('image-blind baseline');
    expect(html).toContain('the red square');
    expect(html).not.toContain('attn-view'); // a merge model has no attention to show
    expect(html).not.toContain('captionerAttention');
    expect(html).not.toContain(work); // folders relative to the report, for a page to be mailed around
  });

  it('an attention run: each report.html row gets its attention view (closed, summary "attention"); report.json and predictions unchanged', async () => {
    const att = await buildTrainedRun(path.join(work, 'att'), { attention: true, epochs: 12 });
    const before = tf.memory().numTensors;
    const { report, files } = await runEval(att.config, { model: att.model, noBaseline: true });
    expect(tf.memory().numTensors).toBe(before);
    const lines = (await fs.readFile(files.predictions, 'utf8'))
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    for (const l of lines) expect(Object.keys(l).sort()).toEqual(['caption', 'image', 'logprob']);
    expect(JSON.stringify(report)).not.toContain('attn');
    const html = await fs.readFile(files.html, 'utf8');
    const views =
      html.match(
        /<details class="attn-details"><summary>attention<\/summary><figure class="attn-view" data-grid="2 2">.*?<\/figure><\/details>/g,
      ) ?? [];
    expect(views).toHaveLength(4);
    expect(report.perImage.some((p) => p.caption !== '')).toBe(true); // some views have words to point at
    for (const p of report.perImage) {
      const row = html.slice(html.indexOf(`<tr data-image="${p.image}"`));
      const view = row.slice(row.indexOf('<details class="attn-details">'), row.indexOf('</details>'));
      const words = [...view.matchAll(/<span class="attn-word" tabindex="0" data-attn="([^"]*)">([^<]*)<\/span>/g)];
      expect(words.map((m) => m[2])).toEqual(p.caption.split(' ').filter(Boolean));
      for (const m of words) expect(Buffer.from(m[1], 'base64')).toHaveLength(4); // 2 x 2 weights
      const src = /<img class="attn-img" src="data:image\/jpeg;base64,([^"]+)"/.exec(view);
      expect(src).not.toBeNull();
      const meta = await sharp(Buffer.from(src![1], 'base64')).metadata();
      expect(Math.max(meta.width!, meta.height!)).toBe(360);
    }
    expect(html.match(/window\.captionerAttention/g)?.length).toBeGreaterThan(0);
    expect(html.match(/<script>/g)).toHaveLength(2); // the sort script and the attention view script, once
  });

  it('honours split, limit, beam and out; a missing image gets a placeholder', async () => {
    await fs.rename(path.join(fx.images, imageName(10)), path.join(fx.images, 'moved.png'));
    try {
      const out = path.join(work, 'val-report');
      const config = {
        ...fx.config,
        eval: { ...fx.config.eval, split: 'val' as const, limit: 1, out },
        decode: { ...fx.config.decode, beam: 1 },
      };
      const { report, files } = await runEval(config, { model: fx.model, noBaseline: true });
      expect(files.dir).toBe(out);
      expect(report.perImage.map((p) => p.image)).toEqual([imageName(10)]);
      expect(report.decode.beam).toBe(1);
      expect(report.baseline).toBeUndefined();
      const html = await fs.readFile(files.html, 'utf8');
      expect(html).toContain('image not found');
      expect(html).not.toContain('data:image/jpeg');
    } finally {
      await fs.rename(path.join(fx.images, 'moved.png'), path.join(fx.images, imageName(10)));
    }
  });

  it('refuses a feature cache computed with other settings', async () => {
    const other = path.join(work, 'other-features');
    const w = await openCacheWriter(other, fakeSpec('another-encoder'), { chunkSize: 64 });
    for (let i = 0; i < 16; i++) await w.add(imageName(i), vectorOf(i));
    await w.close();
    const config = { ...fx.config, features: { ...fx.config.features, out: other } };
    const err = await runEval(config, { model: fx.model }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(DataError);
    expect((err as Error).message).toMatch(/computed with different settings/);
  });

  it('refuses a cache that lacks vectors for the split', async () => {
    const fx2 = await buildTrainedRun(path.join(work, 'gap'), { epochs: 1, skipFeature: imageName(13) });
    const err = await runEval(fx2.config, { model: fx2.model }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(DataError);
    expect((err as Error).message).toMatch(/no vectors for 1 of 4 test images \(e\.g\. img13\.png\)/);
  });

  it('COCO data: results.json names images by their annotation ids (loadRes check), score reads it; an older set without ids gives file names', async () => {
    const cx = await buildTrainedRun(path.join(work, 'coco'), { epochs: 1, format: 'coco' });
    const annFile = path.join(cx.dir, 'data', 'coco_test.json');
    const ann = JSON.parse(await fs.readFile(annFile, 'utf8')) as { images: { id: number }[] };
    const { files } = await runEval(cx.config, { model: cx.model, noBaseline: true, noThumbnails: true });
    const results = JSON.parse(await fs.readFile(files.results, 'utf8')) as {
      image_id: number | string;
      caption: string;
    }[];
    const preds = (await fs.readFile(files.predictions, 'utf8'))
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    expect(results).toEqual(preds.map((p, k) => ({ image_id: cocoIdOf(12 + k), caption: p.caption })));
    // pycocotools COCO.loadRes: set(image_ids) <= set(coco.getImgIds())
    const imgIds = new Set(ann.images.map((i) => i.id));
    expect(results.every((r) => Number.isInteger(r.image_id) && imgIds.has(r.image_id as number))).toBe(true);
    const scored = await runCli(['score', '--candidates', files.results, '--references', annFile, '--json']);
    expect(scored.code, scored.stderr).toBe(0);
    expect(JSON.parse(scored.stdout).images).toBe(4);

    // the same set as written before ids were recorded: the fingerprint is unchanged, so it evaluates, by file name
    const testFile = path.join(cx.prepared, 'test.jsonl');
    await fs.writeFile(testFile, (await fs.readFile(testFile, 'utf8')).replace(/,"cocoId":\d+\}/g, '}'));
    const old = await runEval(cx.config, { model: cx.model, noBaseline: true, noThumbnails: true });
    const oldResults = JSON.parse(await fs.readFile(old.files.results, 'utf8')) as { image_id: string }[];
    expect(oldResults.map((r) => r.image_id)).toEqual([12, 13, 14, 15].map(imageName));
    const scoredOld = await runCli(['score', '--candidates', old.files.results, '--references', annFile, '--json']);
    expect(scoredOld.code, scoredOld.stderr).toBe(0);
    expect(JSON.parse(scoredOld.stdout)).toEqual(JSON.parse(scored.stdout));
  });

  it('refuses a prepared dataset other than the one the model was trained on', async () => {
    const copy = path.join(work, 'prepared-changed');
    const config = { ...fx.config, prep: { ...fx.config.prep, out: copy, maxLength: 5 } };
    await runPrep(config);
    const err = await runEval(config, { model: fx.model }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(DataError);
    expect((err as Error).message).toMatch(/is not the one .* was trained on/);
  });
});
