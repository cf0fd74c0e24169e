// Benchmark group 'score': how long scoring takes (src/eval/score.ts) on 5,000 images (1,000 with --quick).
// Data: COCO val2017 captions from ../shared/data when present (candidate = each image's first caption,
// references = its other 4 to 6 captions), else seeded synthetic captions (candidate + 5 references).
// Rows: one full scoring (tokenize + BLEU-1..4 + CIDEr-D + ROUGE-L); and corpus BLEU-1..4 alone on the same
// pre-tokenized captions against NLTK 3.8's corpus_bleu (Debian python3-nltk, all four weights in one call,
// timed inside Python without start-up or file reading) in the same run, as images per second, ratio =
// ours / NLTK. The BLEU values of both are compared too (notes).
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { readReferences } from '#dist/eval/io.js';
import { corpusBleu, tokenize } from '#dist/eval/metrics/index.js';
import { scoreCaptions, type ScorePair } from '#dist/eval/score.js';
import { rng } from '#dist/util/random.js';
import { sharedData } from './paths.js';
import type { BenchModule, BenchRow } from './types.js';
import { median } from './stats.js';

const SHARED = sharedData;
const PYTHON = process.env.CAPTIONER_PYTHON ?? '/usr/bin/python3';

async function loadPairs(n: number): Promise<{ pairs: ScorePair[]; source: string }> {
  const coco = path.join(SHARED, 'coco', 'captions_val2017.json');
  if (existsSync(coco)) {
    const refs = await readReferences(coco);
    const pairs = [...refs.byId]
      .slice(0, n)
      .map(([id, caps]) => ({ id, candidate: caps[0], references: caps.slice(1) }));
    return { pairs, source: 'COCO val2017 captions' };
  }
  const r = rng(5);
  const words = Array.from({ length: 2000 }, (_, i) => `w${i}`);
  // Zipf-ish word choice so n-grams repeat like real captions
  const word = () => words[Math.floor(words.length * Math.pow(r(), 3))];
  const sentence = () => Array.from({ length: 8 + Math.floor(r() * 8) }, word).join(' ');
  const pairs = Array.from({ length: n }, (_, i) => ({
    id: String(i),
    candidate: sentence(),
    references: Array.from({ length: 5 }, sentence),
  }));
  return { pairs, source: 'synthetic captions (../shared/data absent)' };
}

interface NltkTiming {
  seconds: number;
  bleu: number[];
}

/** NLTK corpus_bleu on the same tokens, timed inside Python (median of `reps`). */
function nltkPeer(hyps: string[][], refs: string[][][], reps: number): NltkTiming | string {
  if (!existsSync(PYTHON)) return `peer unavailable: ${PYTHON} missing`;
  const dir = mkdtempSync(path.join(tmpdir(), 'bench-score-'));
  try {
    const data = path.join(dir, 'data.json');
    writeFileSync(data, JSON.stringify({ hyps, refs }));
    const code = [
      'import json, sys, time, statistics, warnings',
      'warnings.simplefilter("ignore")',
      'from nltk.translate.bleu_score import corpus_bleu',
      'd = json.load(open(sys.argv[1]))',
      'w = [(1.0,), (0.5, 0.5), (1/3, 1/3, 1/3), (0.25, 0.25, 0.25, 0.25)]',
      'ts = []',
      `for _ in range(${reps}):`,
      '    t = time.perf_counter(); b = corpus_bleu(d["refs"], d["hyps"], weights=w); ts.append(time.perf_counter() - t)',
      'print(json.dumps({"seconds": statistics.median(ts), "bleu": b}))',
    ].join('\n');
    const p = spawnSync(PYTHON, ['-c', code, data], { encoding: 'utf8', maxBuffer: 1 << 20 });
    if (p.status !== 0) return `peer failed: ${(p.stderr || p.error?.message || '').trim().split('\n').pop()}`;
    return JSON.parse(p.stdout) as NltkTiming;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

export const bench: BenchModule = {
  group: 'score',
  async run({ quick }) {
    const n = quick ? 1000 : 5000;
    const reps = quick ? 3 : 5;
    const { pairs, source } = await loadPairs(n);
    const refCount = pairs.reduce((a, p) => a + p.references.length, 0);
    const rows: BenchRow[] = [];

    // full scoring, tokenization included
    scoreCaptions(pairs, 'basic'); // warm-up (JIT)
    const full: number[] = [];
    for (let i = 0; i < reps; i++) {
      const t0 = performance.now();
      scoreCaptions(pairs, 'basic');
      full.push(performance.now() - t0);
    }
    rows.push({
      bench: 'score',
      name: `full scoring, ${pairs.length} images`,
      value: median(full),
      unit: 'ms',
      notes: `${source}; ${refCount} references; tokenize basic; BLEU-1..4 + CIDEr-D + ROUGE-L; median of ${reps}`,
    });

    // BLEU only, on pre-tokenized captions, against NLTK
    const hyps = pairs.map((p) => tokenize(p.candidate, 'basic'));
    const refs = pairs.map((p) => p.references.map((r) => tokenize(r, 'basic')));
    let ours = corpusBleu(hyps, refs);
    const times: number[] = [];
    for (let i = 0; i < reps; i++) {
      const t0 = performance.now();
      ours = corpusBleu(hyps, refs);
      times.push((performance.now() - t0) / 1000);
    }
    const value = pairs.length / median(times);
    const peer = nltkPeer(hyps, refs, quick ? 1 : 3);
    if (typeof peer === 'string') {
      rows.push({
        bench: 'score',
        name: `corpus BLEU-1..4, ${pairs.length} images`,
        value,
        unit: 'images/s',
        notes: peer,
      });
    } else {
      const maxDiff = Math.max(...ours.map((b, i) => Math.abs(b - peer.bleu[i])));
      const peerValue = pairs.length / peer.seconds;
      rows.push({
        bench: 'score',
        name: `corpus BLEU-1..4, ${pairs.length} images`,
        value,
        unit: 'images/s',
        peer: 'nltk-3.8 corpus_bleu',
        peerValue,
        ratio: value / peerValue,
        notes: `pre-tokenized; max |BLEU ours - NLTK| = ${maxDiff.toExponential(1)}`,
      });
    }
    return rows;
  },
};
