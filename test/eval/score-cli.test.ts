// `captioner score` end to end (spawns the built CLI: run `npx tsc -p .` first; `npm test` does).
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { corpusOnly, scoreCaptions, type ScorePair } from '../../src/eval/score.js';
import { runCli } from '../helpers/cli.js';
import { announceSkip, hasShared, sharedData } from '../helpers/shared.js';

const dir = mkdtempSync(path.join(tmpdir(), 'score-cli-'));
const write = (name: string, text: string) => {
  const f = path.join(dir, name);
  writeFileSync(f, text);
  return f;
};

const pairs: ScorePair[] = JSON.parse(
  readFileSync(path.join(import.meta.dirname, 'fixtures', 'coco_val2017_40.json'), 'utf8'),
).pairs;
const refsFile = write(
  'refs.json',
  JSON.stringify({
    images: pairs.map((p) => ({ id: Number(p.id), file_name: `${p.id.padStart(12, '0')}.jpg` })),
    annotations: pairs.flatMap((p) => p.references.map((caption) => ({ image_id: Number(p.id), caption }))),
  }),
);
const resultsFile = write(
  'results.json',
  JSON.stringify(pairs.map((p) => ({ image_id: Number(p.id), caption: p.candidate }))),
);
// caption-style JSONL: path-like ids (matched by basename = COCO file_name), plus one failed image
const jsonlFile = write(
  'captions.jsonl',
  [
    ...pairs.map((p) => JSON.stringify({ image: `photos/${p.id.padStart(12, '0')}.jpg`, caption: p.candidate })),
    JSON.stringify({ image: 'photos/broken.jpg', error: 'cannot decode' }),
  ].join('\n') + '\n',
);

describe('captioner score', () => {
  it('--json prints the corpus scores, equal to scoreCaptions', async () => {
    const r = await runCli(['score', '--candidates', resultsFile, '--references', refsFile, '--json']);
    expect(r.code, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout);
    expect(Object.keys(out)).toEqual(['images', 'Bleu_1', 'Bleu_2', 'Bleu_3', 'Bleu_4', 'CIDEr', 'ROUGE_L']);
    expect(out).toEqual(corpusOnly(scoreCaptions(pairs, 'basic')));
  });

  it('reads caption JSONL, matches path-like ids by basename, skips error lines with a warning', async () => {
    const r = await runCli([
      'score',
      '--candidates',
      jsonlFile,
      '--references',
      refsFile,
      '--json',
      '--tokenize',
      'none',
    ]);
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual(corpusOnly(scoreCaptions(pairs, 'none')));
    expect(r.stderr).toMatch(/skipped 1 entry with an "error"/);
  });

  it('takes the tokenizer from the config when no flag is given', async () => {
    const r = await runCli([
      'score',
      '--candidates',
      resultsFile,
      '--references',
      refsFile,
      '--json',
      '--set',
      'eval.tokenize=none',
    ]);
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout).Bleu_4).toBeCloseTo(scoreCaptions(pairs, 'none').Bleu_4, 15);
  });

  it('prints a table by default', async () => {
    const r = await runCli(['score', '--candidates', resultsFile, '--references', refsFile]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^metric\s+score/);
    expect(r.stdout).toMatch(/^images\s+40$/m);
    expect(r.stdout).toMatch(/^Bleu_4\s+0\.\d{4}$/m);
    expect(r.stdout).toMatch(/^CIDEr-D\s+0\.\d{4}$/m);
  });

  it('exits 3 with a clear message for candidates without references, duplicates, bad files', async () => {
    const extra = write(
      'extra.json',
      JSON.stringify([
        { image_id: Number(pairs[0].id), caption: 'x' },
        { image_id: 999999999, caption: 'y' },
      ]),
    );
    let r = await runCli(['score', '--candidates', extra, '--references', refsFile]);
    expect(r.code).toBe(3);
    expect(r.stderr).toMatch(/1 of 2 candidate\(s\) have no references in .*refs\.json: 999999999/);
    expect(r.stdout).toBe('');

    const dup = write('dup.jsonl', '{"image":"a","caption":"x"}\n{"image":"a","caption":"y"}\n');
    r = await runCli(['score', '--candidates', dup, '--references', refsFile]);
    expect(r.code).toBe(3);
    expect(r.stderr).toMatch(/duplicate candidate id/);

    r = await runCli(['score', '--candidates', write('empty.json', ''), '--references', refsFile]);
    expect(r.code).toBe(3);
    expect(r.stderr).toMatch(/empty\.json: candidates file is empty/);

    r = await runCli(['score', '--candidates', resultsFile, '--references', write('bad.json', '{"annotations": [')]);
    expect(r.code).toBe(3);
    expect(r.stderr).toMatch(/bad\.json: not valid JSON/);
    expect(r.stderr).not.toMatch(/\n\s+at /); // no stack trace
  });

  it('exits 2 on usage errors', async () => {
    expect((await runCli(['score', '--references', refsFile])).code).toBe(2);
    const r = await runCli(['score', '--candidates', resultsFile, '--references', refsFile, '--tokenize', 'ptb']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/basic|none/);
  });

  announceSkip('captioner score on the real Flickr8k token file');
  it.skipIf(!hasShared)('scores JSONL candidates against the real Flickr8k token file', async () => {
    // candidates: caption #0 of three images; references: the whole token file, so each candidate also
    // appears among its own references and BLEU-1 is 1
    const lines = readFileSync(path.join(sharedData, 'flickr8k', 'Flickr8k.token.txt'), 'utf8')
      .split('\n')
      .filter((l) => /#0\t/.test(l))
      .slice(0, 3);
    const cands = write(
      'f8k.jsonl',
      lines
        .map((l) => JSON.stringify({ image: `/data/Flicker8k_Dataset/${l.split('#')[0]}`, caption: l.split('\t')[1] }))
        .join('\n'),
    );
    const r = await runCli([
      'score',
      '--candidates',
      cands,
      '--references',
      path.join(sharedData, 'flickr8k', 'Flickr8k.token.txt'),
      '--json',
    ]);
    expect(r.code, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout);
    expect(out.images).toBe(3);
    expect(out.Bleu_1).toBe(1);
    expect(out.ROUGE_L).toBe(1);
  });
});
