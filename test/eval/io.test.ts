import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { DataError } from '../../src/errors.js';
import { loadScorePairs, matchCandidates, readCandidates, readReferences } from '../../src/eval/io.js';
import { announceSkip, hasShared, sharedData } from '../helpers/shared.js';

const dir = mkdtempSync(path.join(tmpdir(), 'score-io-'));
let n = 0;
const write = (name: string, text: string) => {
  const f = path.join(dir, `${n++}-${name}`);
  writeFileSync(f, text);
  return f;
};

const coco = {
  images: [
    { id: 1, file_name: '000000000001.jpg' },
    { id: 2, file_name: '000000000002.jpg' },
  ],
  annotations: [
    { image_id: 1, id: 10, caption: 'A dog runs.' },
    { image_id: 2, id: 11, caption: 'A cat sleeps.' },
    { image_id: 1, id: 12, caption: 'A brown dog running.' },
  ],
};

describe('readCandidates', () => {
  it('reads a COCO results JSON array', async () => {
    const f = write(
      'res.json',
      JSON.stringify([
        { image_id: 1, caption: 'a dog' },
        { image_id: 'x.jpg', caption: 'a cat' },
      ]),
    );
    const { candidates, skippedErrors } = await readCandidates(f);
    expect(candidates.map((c) => [c.id, c.caption])).toEqual([
      ['1', 'a dog'],
      ['x.jpg', 'a cat'],
    ]);
    expect(skippedErrors).toBe(0);
  });

  it('reads caption/eval JSONL, skipping and counting error lines', async () => {
    const f = write(
      'c.jsonl',
      [
        '{"image":"photos/a.jpg","caption":"a dog"}',
        '',
        '{"image":"photos/b.jpg","error":"cannot decode"}',
        '{"image":"c.jpg","caption":"x","beam":3}',
      ].join('\r\n') + '\n',
    );
    const { candidates, skippedErrors } = await readCandidates(f);
    expect(candidates.map((c) => c.id)).toEqual(['photos/a.jpg', 'c.jpg']);
    expect(candidates[1].where).toBe(`${f}:4`);
    expect(skippedErrors).toBe(1);
  });

  it('gives clear errors', async () => {
    await expect(readCandidates(write('empty.jsonl', '\n  \n'))).rejects.toThrow(/is empty/);
    await expect(readCandidates(path.join(dir, 'nope.jsonl'))).rejects.toThrow(
      /nope\.jsonl: cannot read candidates: no such file/,
    );
    const bad = write('bad.jsonl', '{"image":"a","caption":"x"}\n{"image": oops}\n');
    await expect(readCandidates(bad)).rejects.toThrow(
      new RegExp(`${bad.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:2: not valid JSON`),
    );
    await expect(readCandidates(write('nocap.jsonl', '{"image":"a"}\n'))).rejects.toThrow(/:1: missing "caption"/);
    await expect(readCandidates(write('noid.json', '[{"caption":"a"}]'))).rejects.toThrow(/entry 1: missing image id/);
    await expect(readCandidates(write('badarr.json', '[{"image_id":1,'))).rejects.toThrow(/not valid JSON/);
    await expect(readCandidates(write('allerr.jsonl', '{"image":"a","error":"x"}\n'))).rejects.toThrow(
      /all 1 entries carry an "error"/,
    );
    await expect(readCandidates(write('e.jsonl', '\n'))).rejects.toBeInstanceOf(DataError);
  });
});

describe('readReferences', () => {
  it('reads COCO captions JSON, with file names as aliases', async () => {
    const r = await readReferences(write('coco.json', JSON.stringify(coco)));
    expect(r.format).toBe('coco');
    expect(r.byId.get('1')).toEqual(['A dog runs.', 'A brown dog running.']);
    expect(r.aliases.get('000000000002.jpg')).toBe('2');
  });

  it('reads a Flickr8k token file (CRLF, odd keys, trailing blank line)', async () => {
    const r = await readReferences(
      write('f.token.txt', 'a.jpg#0\tA dog .\r\na.jpg#1\tA hound .\r\nb.jpg.1#0\tPeople wait\r\n\r\n'),
    );
    expect(r.format).toBe('flickr8k');
    expect(r.byId.get('a.jpg')).toEqual(['A dog .', 'A hound .']);
    expect(r.byId.get('b.jpg.1')).toEqual(['People wait']);
    await expect(readReferences(write('bad.txt', 'a.jpg#0\tok\nno tab here\n'))).rejects.toThrow(
      /bad\.txt:2: expected "image\.jpg#N<TAB>caption"/,
    );
  });

  it('reads a Karpathy JSON (raw sentences; cocoid alias)', async () => {
    const k = {
      images: [
        {
          filename: 'COCO_val2014_000000000042.jpg',
          filepath: 'val2014',
          cocoid: 42,
          split: 'test',
          sentences: [{ raw: 'A man .', tokens: ['a', 'man'] }, { tokens: ['a', 'person'] }],
        },
      ],
    };
    const r = await readReferences(write('karpathy.json', JSON.stringify(k)));
    expect(r.format).toBe('karpathy');
    expect(r.byId.get('COCO_val2014_000000000042.jpg')).toEqual(['A man .', 'a person']);
    expect(r.aliases.get('42')).toBe('COCO_val2014_000000000042.jpg');
  });

  it('reads a prepared dataset folder (all splits)', async () => {
    const p = path.join(dir, 'prepared');
    mkdirSync(p, { recursive: true });
    writeFileSync(path.join(p, 'manifest.json'), JSON.stringify({ kind: 'captioner.prepared', version: 1 }));
    writeFileSync(
      path.join(p, 'train.jsonl'),
      JSON.stringify({ image: 'a.jpg', file: '/data/img/a.jpg', captions: ['A dog .', 'Dog'], tokens: [[5, 6]] }) +
        '\n',
    );
    writeFileSync(
      path.join(p, 'test.jsonl'),
      JSON.stringify({ image: 'sub/b.jpg', file: '/data/img/sub/b.jpg', captions: ['A cat'], tokens: [] }) + '\n',
    );
    const r = await readReferences(p);
    expect(r.format).toBe('prepared');
    expect([...r.byId.keys()]).toEqual(['a.jpg', 'sub/b.jpg']);
    expect(r.aliases.get('b.jpg')).toBe('sub/b.jpg');
    const other = path.join(dir, 'notprepared');
    mkdirSync(other);
    writeFileSync(path.join(other, 'manifest.json'), '{"kind":"captioner.features"}');
    await expect(readReferences(other)).rejects.toThrow(/not a prepared dataset manifest/);
  });

  it('gives clear errors for unusable files', async () => {
    await expect(readReferences(write('x.json', '{"foo": 1}'))).rejects.toThrow(
      /neither COCO captions .* nor Karpathy/,
    );
    await expect(readReferences(write('broken.json', '{"annotations": ['))).rejects.toThrow(
      /broken\.json: not valid JSON/,
    );
    await expect(readReferences(write('empty.txt', ''))).rejects.toThrow(/references file is empty/);
    await expect(readReferences(path.join(dir, 'missing.json'))).rejects.toThrow(/references not found/);
    await expect(readReferences(write('badann.json', '{"annotations": [{"image_id": 1}]}'))).rejects.toThrow(
      /annotations\[0\]/,
    );
  });
});

describe('matchCandidates', () => {
  it('matches by id, by alias, and by basename for path-like ids', async () => {
    const refs = await readReferences(write('coco.json', JSON.stringify(coco)));
    const cands = [
      { id: '1', caption: 'a dog', where: 'c:1' },
      { id: 'photos/000000000002.jpg', caption: 'a cat', where: 'c:2' },
    ];
    const pairs = matchCandidates(cands, refs, 'c.jsonl');
    expect(pairs).toEqual([
      { id: '1', candidate: 'a dog', references: ['A dog runs.', 'A brown dog running.'] },
      { id: 'photos/000000000002.jpg', candidate: 'a cat', references: ['A cat sleeps.'] },
    ]);
  });

  it('reports candidates without references with the count and the first ids', async () => {
    const refs = await readReferences(write('coco.json', JSON.stringify(coco)));
    const cands = ['1', 'x1', 'x2', 'x3', 'x4', 'x5', 'x6'].map((id, i) => ({ id, caption: 'a', where: `c:${i + 1}` }));
    expect(() => matchCandidates(cands, refs, 'c.jsonl')).toThrow(
      /c\.jsonl: 6 of 7 candidate\(s\) have no references in .*coco\.json: x1, x2, x3, x4, x5, \.\.\./,
    );
  });

  it('refuses candidates whose image the references list without any caption (no TypeError)', async () => {
    const listed = { ...coco, images: [...coco.images, { id: 3, file_name: '000000000003.jpg' }] };
    const refs = await readReferences(write('coco3.json', JSON.stringify(listed)));
    expect(refs.byId.has('3')).toBe(false);
    expect(refs.uncaptioned).toEqual(new Set(['3']));
    for (const id of ['3', '000000000003.jpg', 'photos/000000000003.jpg']) {
      const cands = [
        { id: '1', caption: 'a dog', where: 'c:1' },
        { id, caption: 'a bird', where: 'c:2' },
      ];
      let err: unknown;
      try {
        matchCandidates(cands, refs, 'c.jsonl');
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(DataError);
      expect((err as Error).message).toMatch(
        /c\.jsonl: 1 of 2 candidate\(s\) name images that .*coco3\.json lists without any reference caption, so they cannot be scored: /,
      );
      expect((err as Error).message).toContain(id === '3' ? ': 3 (' : `${id} (image 3)`);
    }
  });

  it('rejects duplicate ids, and two candidates naming the same image', async () => {
    const refs = await readReferences(write('coco.json', JSON.stringify(coco)));
    expect(() =>
      matchCandidates(
        [
          { id: '1', caption: 'a', where: 'c:1' },
          { id: '1', caption: 'b', where: 'c:2' },
        ],
        refs,
        'c.jsonl',
      ),
    ).toThrow(/1 duplicate candidate id\(s\): 1 \(c:1 and c:2\)/);
    expect(() =>
      matchCandidates(
        [
          { id: 'a/000000000001.jpg', caption: 'a', where: 'c:1' },
          { id: '1', caption: 'b', where: 'c:2' },
        ],
        refs,
        'c.jsonl',
      ),
    ).toThrow(/name the same reference image/);
  });
});

describe('loadScorePairs on real files', () => {
  announceSkip('score file reading on real Flickr8k / COCO / Karpathy files');
  it.skipIf(!hasShared)('reads the real reference formats', async () => {
    const f8k = await readReferences(path.join(sharedData, 'flickr8k', 'Flickr8k.token.txt'));
    expect(f8k.byId.size).toBe(8092);
    expect(f8k.byId.get('1000268201_693b08cb0e.jpg')).toHaveLength(5);
    const cocoVal = await readReferences(path.join(sharedData, 'coco', 'captions_val2017.json'));
    expect(cocoVal.byId.size).toBe(5000);
    expect([...cocoVal.byId.values()].reduce((a, c) => a + c.length, 0)).toBe(25014);
    const k = await readReferences(path.join(sharedData, 'karpathy', 'dataset_flickr8k_first15_sample.json'));
    expect(k.byId.size).toBe(15);
    // Karpathy references match candidates named like Flickr8k images in a folder
    const first = [...k.byId.keys()][0];
    const cand = write('k.jsonl', JSON.stringify({ image: `flickr/images/${first}`, caption: 'a dog' }) + '\n');
    const { pairs } = await loadScorePairs(
      cand,
      path.join(sharedData, 'karpathy', 'dataset_flickr8k_first15_sample.json'),
    );
    expect(pairs[0].references).toEqual(k.byId.get(first));
  });
});

describe('COCO integer ids and file names', () => {
  it('readCandidates marks JSON integer ids', async () => {
    const { candidates } = await readCandidates(
      write(
        'ints.json',
        JSON.stringify([
          { image_id: 7, caption: 'a' },
          { image_id: '8', caption: 'b' },
          { image_id: 'x.jpg', caption: 'c' },
        ]),
      ),
    );
    expect(candidates.map((c) => [c.id, c.integer ?? false])).toEqual([
      ['7', true],
      ['8', false],
      ['x.jpg', false],
    ]);
  });

  it('a prepared COCO set matches integer ids by its recorded cocoId, and file names; ids and names may mix', async () => {
    const p = path.join(dir, 'prepared-coco');
    mkdirSync(p, { recursive: true });
    writeFileSync(path.join(p, 'manifest.json'), JSON.stringify({ kind: 'captioner.prepared', version: 1 }));
    writeFileSync(
      path.join(p, 'test.jsonl'),
      [
        {
          image: '000000000001.jpg',
          file: 'val2017/000000000001.jpg',
          captions: ['A dog runs.'],
          tokens: [[2, 3]],
          cocoId: 1,
        },
        {
          image: '000000000002.jpg',
          file: 'val2017/000000000002.jpg',
          captions: ['A cat sleeps.'],
          tokens: [[2, 3]],
          cocoId: 2,
        },
      ]
        .map((l) => JSON.stringify(l) + '\n')
        .join(''),
    );
    const refs = await readReferences(p);
    expect(refs.cocoIds).toBe(true);
    const { candidates } = await readCandidates(
      write(
        'mixed.json',
        JSON.stringify([
          { image_id: 1, caption: 'a dog' },
          { image_id: 'val2017/000000000002.jpg', caption: 'a cat' },
        ]),
      ),
    );
    expect(matchCandidates(candidates, refs, 'mixed.json')).toEqual([
      { id: '1', candidate: 'a dog', references: ['A dog runs.'] },
      { id: 'val2017/000000000002.jpg', candidate: 'a cat', references: ['A cat sleeps.'] },
    ]);
    // the same image by id and by name: refused, not scored twice
    const twice = await readCandidates(
      write(
        'twice.json',
        JSON.stringify([
          { image_id: 1, caption: 'a' },
          { image_id: '000000000001.jpg', caption: 'b' },
        ]),
      ),
    );
    expect(() => matchCandidates(twice.candidates, refs, 'twice.json')).toThrow(/name the same reference image/);
  });

  it('COCO references: integer ids and file names both match', async () => {
    const refs = await readReferences(write('coco.json', JSON.stringify(coco)));
    expect(refs.cocoIds).toBe(true);
    const { candidates } = await readCandidates(
      write(
        'm.json',
        JSON.stringify([
          { image_id: 1, caption: 'a dog' },
          { image_id: '000000000002.jpg', caption: 'a cat' },
        ]),
      ),
    );
    expect(matchCandidates(candidates, refs).map((p) => p.references)).toEqual([
      ['A dog runs.', 'A brown dog running.'],
      ['A cat sleeps.'],
    ]);
  });

  it('integer ids against references without COCO ids: a DataError that says why', async () => {
    const refs = await readReferences(write('f.token.txt', 'a.jpg#0\tA dog .\nb.jpg#0\tA cat .\n'));
    expect(refs.cocoIds).toBe(false);
    const { candidates } = await readCandidates(
      write(
        'ints2.json',
        JSON.stringify([
          { image_id: 391895, caption: 'a' },
          { image_id: 522418, caption: 'b' },
        ]),
      ),
    );
    let err: unknown;
    try {
      matchCandidates(candidates, refs, 'ints2.json');
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(DataError);
    expect((err as Error).message).toMatch(
      /ints2\.json: 2 of 2 candidate\(s\) have no references in .*f\.token\.txt: 391895, 522418; they are integer COCO image ids, and these references name images by file only/,
    );
    // integer ids that simply are not in COCO references: the usual message
    const cocoRefs = await readReferences(write('coco.json', JSON.stringify(coco)));
    expect(() => matchCandidates(candidates, cocoRefs, 'ints2.json')).toThrow(
      /2 of 2 candidate\(s\) have no references in .*coco\.json: 391895, 522418 \(reference ids look like: 1, 2\)/,
    );
  });
});
