// Benchmark group 'prep': `captioner prep` throughput (captions per second, whole stage: read the token
// file and the split lists, clean, split, build the vocabulary, write the prepared folder) on the real
// Flickr8k token file (../shared/data/flickr8k, 40,460 captions) when present, else on a generated
// Flickr8k-format file of the same size (the demo captions). Peer, in the same run and interleaved with
// ours: the classic Python recipe (lowercase, strip punctuation, drop short and digit tokens, vocabulary
// of words seen >= 5 times, captions wrapped in start/end tokens, one JSON line per image written), timed
// inside the Python process; ratio = ours / peer (higher is better).
import { spawnSync } from 'node:child_process';
import { existsSync, promises as fs } from 'node:fs';
import * as path from 'node:path';
import { loadConfig } from '#dist/config/load.js';
import { demoTexts } from '#dist/prep/demo-scene.js';
import { runPrep } from '#dist/prep/run.js';
import { inScratch } from './scratch.js';
import { sharedData } from './paths.js';
import type { BenchModule, BenchOptions, BenchRow } from './types.js';
import { median } from './stats.js';

const SHARED = sharedData;
const PYTHON = process.env.CAPTIONER_PYTHON ?? '/usr/bin/python3';

const PEER = String.raw`
import sys, json, time, string, collections
t0 = time.perf_counter()
token, train_list, out = sys.argv[1], sys.argv[2], sys.argv[3]
caps = collections.defaultdict(list)
for line in open(token, encoding='utf8'):
    line = line.rstrip('\n')
    if not line.strip(): continue
    key, cap = line.split('\t', 1)
    caps[key.rsplit('#', 1)[0]].append(cap)
train = set(l.strip() for l in open(train_list) if l.strip())
table = str.maketrans('', '', string.punctuation)
clean = {}
for k, cs in caps.items():
    out_cs = []
    for c in cs:
        ws = [w for w in c.lower().translate(table).split() if len(w) >= 1 and w.isalpha()]
        out_cs.append('startseq ' + ' '.join(ws) + ' endseq')
    clean[k] = out_cs
counts = collections.Counter(w for k in train if k in clean for c in clean[k] for w in c.split())
vocab = ['<pad>', '<unk>'] + sorted((w for w, n in counts.items() if n >= 5), key=lambda w: (-counts[w], w))
ids = {w: i for i, w in enumerate(vocab)}
with open(out, 'w') as f:
    for k in sorted(clean):
        f.write(json.dumps({'image': k, 'captions': caps[k], 'tokens': [[ids.get(w, 1) for w in c.split()] for c in clean[k]]}) + '\n')
print(time.perf_counter() - t0)
`;

interface Source {
  captions: string;
  train: string;
  val: string;
  test: string;
  count: number;
  label: string;
}

async function source(tmp: string): Promise<Source> {
  const dir = path.join(SHARED, 'flickr8k');
  const token = path.join(dir, 'Flickr8k.token.txt');
  if (existsSync(token)) {
    const text = await fs.readFile(token, 'utf8');
    return {
      captions: token,
      train: path.join(dir, 'Flickr_8k.trainImages.txt'),
      val: path.join(dir, 'Flickr_8k.devImages.txt'),
      test: path.join(dir, 'Flickr_8k.testImages.txt'),
      count: text.split('\n').filter((l) => l.trim()).length,
      label: 'Flickr8k.token.txt',
    };
  }
  process.stderr.write(
    `bench prep: ${token} not found; using a generated Flickr8k-format file of 8,092 images x 5 captions\n`,
  );
  const t = demoTexts(1, 8092);
  const f = (n: string) => path.join(tmp, n);
  await fs.writeFile(f('captions.txt'), t.captions);
  await fs.writeFile(f('train.txt'), t.trainImages);
  await fs.writeFile(f('val.txt'), t.valImages);
  await fs.writeFile(f('test.txt'), t.testImages);
  return {
    captions: f('captions.txt'),
    train: f('train.txt'),
    val: f('val.txt'),
    test: f('test.txt'),
    count: 8092 * 5,
    label: 'generated (demo captions)',
  };
}

export const bench: BenchModule = {
  group: 'prep',
  async run(o: BenchOptions): Promise<BenchRow[]> {
    return inScratch('prep', async (tmp) => {
      const src = await source(tmp);
      const { config } = await loadConfig({
        overrides: {
          dataset: {
            format: 'flickr8k',
            captions: src.captions,
            split: { method: 'files', trainFile: src.train, valFile: src.val, testFile: src.test },
          },
          prep: { out: path.join(tmp, 'prepared') },
        },
      });
      const rounds = o.quick ? 2 : 5;
      const ours: number[] = [];
      const peer: number[] = [];
      let peerError: string | undefined;
      await runPrep(config); // warm-up (JIT, file cache)
      for (let i = 0; i < rounds; i++) {
        const t0 = performance.now();
        await runPrep(config);
        ours.push((performance.now() - t0) / 1000);
        if (!peerError) {
          const p = spawnSync(PYTHON, ['-c', PEER, src.captions, src.train, path.join(tmp, 'peer.jsonl')], {
            encoding: 'utf8',
          });
          if (p.status === 0) peer.push(Number(p.stdout.trim()));
          else peerError = (p.error?.message ?? p.stderr.trim().split('\n').pop() ?? `exit ${p.status}`).slice(0, 120);
        }
      }
      const value = src.count / median(ours);
      const row: BenchRow = {
        bench: 'prep',
        name: `prep ${src.label} (${src.count.toLocaleString('en-US')} captions)`,
        value,
        unit: 'captions/s',
        notes: `median of ${rounds}; whole stage incl. writing the prepared folder`,
      };
      if (peer.length) {
        row.peer = 'python classic recipe';
        row.peerValue = src.count / median(peer);
        row.ratio = value / row.peerValue;
      } else if (peerError) row.notes += `; peer failed: ${peerError}`;
      return [row];
    });
  },
};
