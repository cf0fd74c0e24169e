// The pure parts of the eval report: the stdout table, report.json's shape, the HTML page, and the
// image-blind baseline.
import { describe, it, expect } from 'vitest';
import type { PreparedImage } from '../../src/prep/prepared.js';
import { DecodeSchema } from '../../src/config/schema.js';
import { scoreCaptions } from '../../src/eval/score.js';
import { corpusBleu, tokenize } from '../../src/eval/metrics/index.js';
import { buildReport, cocoResults, formatMetricsTable, type Prediction } from '../../src/eval/report.js';
import { imageBlindBaseline } from '../../src/eval/report-baseline.js';
import { renderReportHtml } from '../../src/eval/report-html.js';

const metrics = { images: 2, Bleu_1: 0.5, Bleu_2: 0.25, Bleu_3: 0.125, Bleu_4: 0.0625, CIDEr: 1.5, ROUGE_L: 0.75 };

const img = (image: string, captions: string[]): PreparedImage => ({
  image,
  file: image,
  captions,
  tokens: captions.map(() => [2, 3]),
});

describe('formatMetricsTable', () => {
  it('one metric a line, aligned, with the baseline column when given', () => {
    expect(formatMetricsTable(metrics)).toBe(
      [
        'metric    model',
        'images        2',
        'BLEU-1   0.5000',
        'BLEU-2   0.2500',
        'BLEU-3   0.1250',
        'BLEU-4   0.0625',
        'CIDEr-D  1.5000',
        'ROUGE_L  0.7500',
        '',
      ].join('\n'),
    );
    const t = formatMetricsTable(metrics, { baseline: { ...metrics, Bleu_4: 0.01 } });
    expect(t.split('\n')[0]).toBe('metric    model  image-blind');
    expect(t.split('\n')[5]).toBe('BLEU-4   0.0625       0.0100');
  });
});

describe('buildReport', () => {
  const preds: Prediction[] = [
    {
      image: 'a.jpg',
      file: 'a.jpg',
      caption: 'a red square',
      logprob: -1.23456789,
      references: ['a red square', 'the red square'],
    },
    { image: 'b.jpg', file: 'sub/b.jpg', caption: 'a <blue> square', logprob: -2, references: ['a blue square'] },
  ];
  const scores = scoreCaptions(preds.map((p) => ({ id: p.image, candidate: p.caption, references: p.references })));
  const report = buildReport({
    createdAt: '2026-01-01T00:00:00.000Z',
    model: { dir: '/run', name: 'demo', which: 'best' },
    dataset: { dir: '/prepared', fingerprint: 'f'.repeat(64), imagesDir: null },
    features: { dir: '/features', fingerprint: 'sha256:x', weights: 'random', layer: 'fc2' },
    split: 'test',
    decode: DecodeSchema.parse({}),
    tokenize: 'basic',
    scores,
    predictions: preds,
    seconds: 1.23456,
  });

  it('keeps corpus metrics apart from per-image rows, rounded', () => {
    expect(report.metrics).toEqual({
      images: 2,
      Bleu_1: scores.Bleu_1,
      Bleu_2: scores.Bleu_2,
      Bleu_3: scores.Bleu_3,
      Bleu_4: scores.Bleu_4,
      CIDEr: scores.CIDEr,
      ROUGE_L: scores.ROUGE_L,
    });
    expect(report.perImage[0]).toMatchObject({ image: 'a.jpg', logprob: -1.234568, ROUGE_L: 1 });
    expect(report.perImage[1].file).toBe('sub/b.jpg');
    expect(report.seconds).toBe(1.23);
    expect(report.baseline).toBeUndefined();
  });

  it('renders a page sorted by CIDEr-D with escaped text and placeholders without an images folder', async () => {
    const html = await renderReportHtml(report, { imagesDir: null });
    expect(html).toContain('a &lt;blue&gt; square');
    expect(html).not.toContain('<blue>');
    // said once, with no image column at all
    expect(html.match(/no images folder/g)).toHaveLength(1);
    expect(html).not.toMatch(/image not found|class="ph"|<th>image<\/th>/);
    const order = [...html.matchAll(/data-image="([^"]+)"/g)].map((m) => m[1]);
    const byCider = [...report.perImage].sort((x, y) => y.CIDEr - x.CIDEr).map((p) => p.image);
    expect(order).toEqual(byCider);
    expect(html).toContain('<th class="num" data-key="cider">CIDEr-D</th>');
  });

  it('shows folders relative to the report, or by name, never as absolute local paths', async () => {
    const byName = await renderReportHtml(report, { imagesDir: null });
    expect(byName).toContain('model <code>run/</code>');
    expect(byName).toContain('of <code>prepared/</code>');
    const relative = await renderReportHtml(report, { imagesDir: null, reportDir: '/run/eval-test' });
    expect(relative).toContain('model <code>../</code> (best)');
    expect(relative).toContain('of <code>../../prepared/</code>');
    for (const html of [byName, relative]) expect(html).not.toMatch(/<code>\//);
  });
});

describe('imageBlindBaseline', () => {
  const train = [
    img('1', ['a red square on the left', 'a red square', 'the square is red']),
    img('2', ['a blue square on the left', 'a blue square', 'a blue square on the left']),
    img('3', ['a red circle on the left', 'a red circle']),
  ];

  it('picks, among the frequent training captions, the one with the best training BLEU-4, and scores it on the eval references', () => {
    const evalRefs = [['a green square on the left'], ['a red square on the left']];
    const b = imageBlindBaseline(train, evalRefs, 'basic')!;
    expect(b.method).toBe('best-constant-caption');
    // the winner has the best corpus BLEU-4 over the training images of every candidate caption
    const refs = train.map((im) => im.captions.map((c) => tokenize(c, 'basic')));
    const b4 = (c: string) =>
      corpusBleu(
        refs.map(() => c.split(' ')),
        refs,
      )[3];
    const all = [...new Set(train.flatMap((im) => im.captions.map((c) => tokenize(c, 'basic').join(' '))))];
    for (const c of all) expect(b4(b.caption)).toBeGreaterThanOrEqual(b4(c));
    expect(b.caption).toBe('a red square on the left');
    expect(b.trainCount).toBe(1);
    expect(b.selectionImages).toBe(3);
    const direct = scoreCaptions(
      evalRefs.map((refs, i) => ({ id: String(i), candidate: b.caption, references: refs })),
    );
    expect(b.metrics.Bleu_4).toBeCloseTo(direct.Bleu_4, 12);
    expect(b.metrics.images).toBe(2);
    expect(b.explanation).toContain(b.caption);
  });

  it('is deterministic and bounded by the options; undefined without training captions', () => {
    const a = imageBlindBaseline(train, [['x']], 'basic', { candidates: 1, selectionImages: 2 })!;
    expect(a.candidates).toBe(1);
    expect(a.selectionImages).toBe(2);
    expect(imageBlindBaseline(train, [['x']], 'basic', { candidates: 1, selectionImages: 2 })).toEqual(a);
    expect(imageBlindBaseline([], [['x']], 'basic')).toBeUndefined();
    expect(imageBlindBaseline(train, [], 'basic')).toBeUndefined();
  });
});

describe('cocoResults (results.json)', () => {
  it('names each image by its COCO id when the prepared set has one, else by its key', () => {
    const preds = [
      { image: 'a.jpg', caption: 'a dog' },
      { image: 'b.jpg', caption: 'a cat' },
      { image: 'c.jpg', caption: 'a bird' },
    ];
    const images = [{ image: 'a.jpg', cocoId: 391895 }, { image: 'b.jpg' }, { image: 'c.jpg', cocoId: 'custom-1' }];
    expect(cocoResults(preds, images)).toEqual([
      { image_id: 391895, caption: 'a dog' },
      { image_id: 'b.jpg', caption: 'a cat' },
      { image_id: 'custom-1', caption: 'a bird' },
    ]);
    // an older prepared set: no ids at all
    expect(
      cocoResults(preds, [img('a.jpg', ['x']), img('b.jpg', ['y']), img('c.jpg', ['z'])]).map((r) => r.image_id),
    ).toEqual(['a.jpg', 'b.jpg', 'c.jpg']);
  });
});
