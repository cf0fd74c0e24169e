// The feature cache: round trips (float32 / float16), fingerprint refusals, resumable appends, failure
// lists, crash leftovers, concurrent and overlapping writers, caches of versions 1 and 2 (shard-*.bin
// files listed under `shards`, from before the word became "chunk").
import { promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  cacheFingerprint,
  encodeRows,
  fromHalf,
  openCacheWriter,
  openFeatureCache,
  toHalf,
  type CacheSpec,
} from '../../src/features/cache.js';
import { DataError } from '../../src/errors.js';
import { rng } from '../../src/util/random.js';

let work: string;
beforeAll(async () => {
  work = await fs.mkdtemp(path.join(os.tmpdir(), 'cap-cache-'));
});
afterAll(async () => {
  await fs.rm(work, { recursive: true, force: true });
});

const spec = (over: Partial<CacheSpec['encoder']> = {}, dtype: CacheSpec['dtype'] = 'float32'): CacheSpec => ({
  encoder: {
    name: 'vgg16',
    fingerprint: 'sha256:enc',
    runtime: 'onnx',
    detail: 'test',
    weights: 'random',
    weightsFingerprint: 'random:seed=1',
    layer: 'fc2',
    shape: [5],
    preprocessing: {
      size: 224,
      resize: 'fill',
      interpolation: 'nearest',
      alpha: 'white',
      mode: 'caffe',
      mean: [1, 2, 3],
      channelOrder: 'bgr',
      layout: 'nhwc',
    },
    ...over,
  },
  dtype,
});
const vec = (seed: number, n = 5) => {
  const r = rng(seed);
  return Float32Array.from({ length: n }, () => r() * 10 - 5);
};

/** manifest.json of spec() as captioner versions 1 and 2 wrote it: the data files listed under `shards`. */
const olderManifest = (version: 1 | 2, shards: { file: string; rows: number; keys: string[] }[]) => ({
  kind: 'captioner.features',
  version,
  fingerprint: cacheFingerprint(spec()),
  encoder: { name: 'vgg16', fingerprint: 'sha256:enc', runtime: 'onnx', detail: 'test' },
  weights: 'random',
  weightsFingerprint: 'random:seed=1',
  layer: 'fc2',
  preprocessing: spec().encoder.preprocessing,
  dtype: 'float32',
  shape: [5],
  count: shards.reduce((n, s) => n + s.rows, 0),
  shards,
  failed: [] as object[],
  created: 't',
  updated: 't',
});

describe('float16', () => {
  it('round-trips exactly representable values and rounds to nearest', () => {
    for (const v of [0, 1, -1, 0.5, 65504, -65504, 2 ** -14, 2 ** -24, 1.5, 1024 + 1])
      expect(fromHalf(toHalf(v))).toBe(v);
    expect(fromHalf(toHalf(1e6))).toBe(Infinity);
    expect(Number.isNaN(fromHalf(toHalf(NaN)))).toBe(true);
    expect(fromHalf(toHalf(2 ** -26))).toBe(0);
    const r = rng(9);
    for (let i = 0; i < 2000; i++) {
      const v = (r() * 2 - 1) * 100;
      expect(Math.abs(fromHalf(toHalf(v)) - v)).toBeLessThanOrEqual(Math.abs(v) * 2 ** -11 + 1e-7);
    }
    expect(toHalf(1 + 2 ** -11)).toBe(0x3c00); // tie -> even
    expect(toHalf(1 + 3 * 2 ** -11)).toBe(0x3c02);
  });
});

describe('feature cache', () => {
  it('writes chunks and reads every vector back (float32, exact)', async () => {
    const dir = path.join(work, 'f32');
    const w = await openCacheWriter(dir, spec(), { chunkSize: 3 });
    for (let i = 0; i < 7; i++) await w.add(`img${i}.jpg`, vec(i));
    const m = await w.close();
    expect(m.chunks.map((s) => s.rows)).toEqual([3, 3, 1]);
    expect(m).toMatchObject({
      kind: 'captioner.features',
      count: 7,
      layer: 'fc2',
      dtype: 'float32',
      shape: [5],
      weights: 'random',
      failed: [],
    });
    expect(m.fingerprint).toBe(cacheFingerprint(spec()));
    const c = await openFeatureCache(dir, { fingerprint: cacheFingerprint(spec()) });
    expect(c.keys()).toEqual([0, 1, 2, 3, 4, 5, 6].map((i) => `img${i}.jpg`));
    for (let i = 0; i < 7; i++) expect(c.get(`img${i}.jpg`)).toEqual(vec(i));
    expect(c.has('nope')).toBe(false);
    expect(() => c.get('nope')).toThrow(/no cached features for image "nope"/);
    c.close();
  });

  it('stores float16 at half the size, read back as float32', async () => {
    const dir = path.join(work, 'f16');
    const w = await openCacheWriter(dir, spec({}, 'float16'), { chunkSize: 100 });
    await w.add('a', vec(1));
    const m = await w.close();
    expect((await fs.stat(path.join(dir, m.chunks[0].file))).size).toBe(10);
    const c = await openFeatureCache(dir);
    const got = c.get('a');
    vec(1).forEach((v, i) => expect(Math.abs(got[i] - v)).toBeLessThan(0.01));
    c.close();
  });

  it('has a fingerprint that changes with weights, layer, preprocessing and dtype but not the runtime', () => {
    const base = cacheFingerprint(spec());
    expect(cacheFingerprint(spec({ runtime: 'tfjs', detail: 'other' }))).toBe(base);
    expect(cacheFingerprint(spec({ fingerprint: 'sha256:other' }))).not.toBe(base);
    expect(cacheFingerprint(spec({ layer: 'block5_pool' }))).not.toBe(base);
    expect(
      cacheFingerprint(spec({ preprocessing: { ...spec().encoder.preprocessing, interpolation: 'bilinear' } })),
    ).not.toBe(base);
    expect(cacheFingerprint(spec({}, 'float16'))).not.toBe(base);
  });

  it('refuses a cache of other settings, for readers and writers', async () => {
    const dir = path.join(work, 'f32');
    const other = spec({ layer: 'block5_pool', shape: [5] });
    await expect(openFeatureCache(dir, { fingerprint: cacheFingerprint(other) })).rejects.toThrow(
      /computed with different settings/,
    );
    await expect(openFeatureCache(dir, { fingerprint: cacheFingerprint(other) })).rejects.toBeInstanceOf(DataError);
    await expect(openFeatureCache(dir, { layer: 'block5_pool' })).rejects.toThrow(
      /from layer fc2, expected block5_pool/,
    );
    await expect(openCacheWriter(dir, other, { chunkSize: 3 })).rejects.toThrow(
      /different settings .*delete the folder or choose another --out/,
    );
    await expect(openFeatureCache(path.join(work, 'none'))).rejects.toThrow(
      /no feature cache here.*captioner features/,
    );
  });

  it('resumes: a second writer sees what is cached and never stores a key twice', async () => {
    const dir = path.join(work, 'resume');
    const w1 = await openCacheWriter(dir, spec(), { chunkSize: 2 });
    await w1.add('a', vec(1));
    await w1.add('b', vec(2));
    await w1.add('c', vec(3)); // pending, not flushed: lost as by a crash
    const w2 = await openCacheWriter(dir, spec(), { chunkSize: 2 });
    expect(w2.has('a') && w2.has('b')).toBe(true);
    expect(w2.has('c')).toBe(false);
    await w2.add('a', vec(99)); // ignored
    await w2.add('c', vec(3));
    const m = await w2.close();
    expect(m.chunks.flatMap((s) => s.keys).sort()).toEqual(['a', 'b', 'c']);
    const c = await openFeatureCache(dir);
    expect(c.get('a')).toEqual(vec(1));
    c.close();
  });

  it('lists failures, replaces them on retry, and drops them once the image is cached', async () => {
    const dir = path.join(work, 'failed');
    const w = await openCacheWriter(dir, spec(), { chunkSize: 10 });
    await w.add('good', vec(1));
    w.fail({ image: 'bad', file: '/x/bad.jpg', reason: 'damaged or truncated image', kind: 'corrupt' });
    w.fail({ image: 'later', file: '/x/later.jpg', reason: 'file not found', kind: 'corrupt' });
    let m = await w.close();
    expect(m.failed.map((f) => f.image)).toEqual(['bad', 'later']);
    expect(m.count).toBe(1);
    const c = await openFeatureCache(dir);
    expect(() => c.get('bad')).toThrow(/failed to decode/);
    c.close();
    const w2 = await openCacheWriter(dir, spec(), { chunkSize: 10 });
    w2.fail({ image: 'bad', file: '/x/bad.jpg', reason: 'still bad', kind: 'corrupt' });
    await w2.add('later', vec(2));
    m = await w2.close();
    expect(m.failed).toEqual([{ image: 'bad', file: '/x/bad.jpg', reason: 'still bad', kind: 'corrupt' }]);
    expect(m.count).toBe(2);
  });

  it('refuses non-finite vectors and wrong lengths', async () => {
    const w = await openCacheWriter(path.join(work, 'nan'), spec(), { chunkSize: 10 });
    await expect(w.add('x', new Float32Array([1, 2, NaN, 4, 5]))).rejects.toThrow(/non-finite/);
    await expect(w.add('x', new Float32Array(4))).rejects.toThrow(/4 values, expected 5/);
    await w.close();
  });

  it('cleans up only provable garbage: files of finished or dead writers, never a live writer elsewhere', async () => {
    const dir = path.join(work, 'crash');
    const w = await openCacheWriter(dir, spec(), { chunkSize: 1 });
    await w.add('a', vec(1));
    await w.close();
    const mine = JSON.parse(await fs.readFile(path.join(dir, `part-${w.id}.json`), 'utf8'));
    expect(mine).toMatchObject({
      kind: 'captioner.features.part',
      version: 3,
      closed: true,
      chunks: [{ keys: ['a'] }],
    });
    expect(mine.chunks[0].file).toMatch(/^chunk-.*-0\.bin$/);
    expect(mine).not.toHaveProperty('shards');
    const put = (name: string, data: string | Uint8Array) => fs.writeFile(path.join(dir, name), data);
    const part = (id: string, writer: object, chunks: { file: string; keys: string[] }[]) =>
      put(
        `part-${id}.json`,
        JSON.stringify({
          ...mine,
          writer: { ...mine.writer, id, ...writer },
          closed: false,
          chunks: chunks.map((s) => ({ ...s, rows: s.keys.length })),
          failed: [],
        }),
      );
    const hourAgo = new Date(Date.now() - 3600_000);
    const age = (name: string) => fs.utimes(path.join(dir, name), hourAgo, hourAgo);
    // a killed writer on this host, in this PID namespace: its pid is gone
    const dead = `${mine.writer.host}_4206649_deadbeef`;
    await part(dead, { pid: 4206649 }, [{ file: `chunk-${dead}-0.bin`, keys: ['d'] }]);
    await put(`chunk-${dead}-0.bin`, encodeRows([vec(4)], 'float32'));
    await put(`chunk-${dead}-1.bin`, new Uint8Array(20)); // written, never named by its fragment
    await put(`chunk-${dead}-2.bin.4206649.7.tmp`, new Uint8Array(3));
    // a writer on another host (or PID namespace) whose pid means nothing here, with a fresh heartbeat
    const remote = 'node_b_77_cafebabe';
    await part(remote, { host: 'node_b', pid: 77, pidns: 'pid:[1]' }, []);
    await put(`chunk-${remote}-0.bin`, new Uint8Array(20)); // in flight: its fragment is updated next
    await put(`chunk-${remote}-1.bin.77.0.tmp`, new Uint8Array(3));
    const early = 'node_c_5_00000000';
    await put(`chunk-${early}-0.bin`, new Uint8Array(20)); // before its first fragment: judged by its own age
    // leftovers of a version 1 writer, long ago
    for (const n of ['shard-4206649-abc-0.bin', 'manifest.json.4206649.3.tmp', 'manifest.lock']) {
      await put(n, '{');
      await age(n);
    }
    const w2 = await openCacheWriter(dir, spec(), { chunkSize: 1 });
    await w2.add('b', vec(2));
    await w2.close();
    let names = (await fs.readdir(dir)).sort();
    expect(names.filter((n) => n.includes(dead))).toEqual([`chunk-${dead}-0.bin`, `part-${dead}.json`]);
    expect(names.filter((n) => n.includes(remote) || n.includes(early))).toEqual([
      `chunk-${remote}-0.bin`,
      `chunk-${remote}-1.bin.77.0.tmp`,
      `chunk-${early}-0.bin`,
      `part-${remote}.json`,
    ]);
    expect(
      names.filter((n) => n.includes('4206649-abc') || n.startsWith('manifest.json.') || n === 'manifest.lock'),
    ).toEqual([]);
    let c = await openFeatureCache(dir);
    expect(c.keys()).toEqual(['a', 'b', 'd']);
    expect(c.get('d')).toEqual(vec(4));
    c.close();

    // the remote writer's heartbeat stops (and the early one never wrote a fragment): gone after STALE_MS
    await age(`part-${remote}.json`);
    await age(`chunk-${early}-0.bin`);
    const w3 = await openCacheWriter(dir, spec(), { chunkSize: 1 });
    await w3.close();
    names = (await fs.readdir(dir)).sort();
    expect(names.filter((n) => n.includes(remote) || n.includes(early))).toEqual([]); // its fragment was empty: removed too
    c = await openFeatureCache(dir);
    expect(c.keys()).toEqual(['a', 'b', 'd']);
    c.close();
  });

  it('two writers of the same images (overlap): no corruption, the first fragment by name wins', async () => {
    const dir = path.join(work, 'overlap');
    const [w1, w2] = await Promise.all([0, 1].map(() => openCacheWriter(dir, spec(), { chunkSize: 2 })));
    await Promise.all(
      [w1, w2].map(async (w, i) => {
        for (let k = 0; k < 5; k++) await w.add(`k${k}`, vec(100 * i + k));
        await w.close();
      }),
    );
    const first = w1.id < w2.id ? 0 : 1;
    const c = await openFeatureCache(dir);
    expect(c.keys()).toEqual(['k0', 'k1', 'k2', 'k3', 'k4']);
    expect(c.manifest.count).toBe(5);
    for (let k = 0; k < 5; k++) expect(c.get(`k${k}`)).toEqual(vec(100 * first + k));
    c.close();
    const w3 = await openCacheWriter(dir, spec(), { chunkSize: 2 });
    expect(w3.has('k4')).toBe(true);
    await w3.close();
  });

  it('a version 2 cache (shard-*.bin files listed under `shards`): read, resumed, upgraded, and cleaned up like any other', async () => {
    const dir = path.join(work, 'v2');
    // this host's writer identity (boot id, PID namespace), from a scratch writer
    const scratch = await openCacheWriter(path.join(work, 'v2-id'), spec(), {});
    await scratch.add('z', vec(0));
    await scratch.close();
    const me = JSON.parse(await fs.readFile(path.join(work, 'v2-id', `part-${scratch.id}.json`), 'utf8')).writer;
    await fs.mkdir(dir, { recursive: true });
    const fp = cacheFingerprint(spec());
    const t = new Date(Date.now() - 60_000).toISOString();
    const base = { ...olderManifest(2, []), count: 0, created: t, updated: t };
    const put = (name: string, data: string | Uint8Array) => fs.writeFile(path.join(dir, name), data);
    const v2part = (
      id: string,
      writer: object,
      closed: boolean,
      shards: { file: string; keys: string[] }[],
      failed: object[] = [],
    ) =>
      put(
        `part-${id}.json`,
        JSON.stringify({
          kind: 'captioner.features.part',
          version: 2,
          fingerprint: fp,
          writer: { ...me, id, ...writer },
          closed,
          shards: shards.map((s) => ({ ...s, rows: s.keys.length })),
          failed,
          started: t,
          updated: t,
        }),
      );
    await put('manifest.json', JSON.stringify(base));
    // a finished version 2 writer
    const done = `${me.host}_4206650_0000aaaa`;
    await v2part(
      done,
      { pid: 4206650 },
      true,
      [{ file: `shard-${done}-0.bin`, keys: ['a', 'b'] }],
      [{ image: 'bad', file: '/x/bad.jpg', reason: 'damaged or truncated image' }],
    );
    await put(`shard-${done}-0.bin`, encodeRows([vec(1), vec(2)], 'float32'));
    // a killed version 2 writer on this host: one named shard, one written but never named, a temp file
    const dead = `${me.host}_4206651_0000bbbb`;
    await v2part(dead, { pid: 4206651 }, false, [{ file: `shard-${dead}-0.bin`, keys: ['c'] }]);
    await put(`shard-${dead}-0.bin`, encodeRows([vec(3)], 'float32'));
    await put(`shard-${dead}-1.bin`, new Uint8Array(20));
    await put(`shard-${dead}-2.bin.4206651.7.tmp`, new Uint8Array(3));
    // an older captioner still running on another host: its shard in flight must survive
    const remote = 'node_v2_88_0000cccc';
    await v2part(remote, { host: 'node_v2', pid: 88, pidns: 'pid:[1]' }, false, []);
    await put(`shard-${remote}-0.bin`, new Uint8Array(20));
    const oldParts = new Map<string, string>();
    for (const id of [done, dead, remote])
      oldParts.set(id, await fs.readFile(path.join(dir, `part-${id}.json`), 'utf8'));

    // read (and verified: sizes checked against the rows) as it is, without writing anything
    let c = await openFeatureCache(dir, { fingerprint: fp });
    expect(c.keys()).toEqual(['a', 'b', 'c']);
    expect(c.get('b')).toEqual(vec(2));
    expect(c.get('c')).toEqual(vec(3));
    expect(c.manifest).toMatchObject({ version: 3, count: 3, failed: [{ image: 'bad' }] });
    expect(c.manifest.chunks.map((ch) => ch.file)).toEqual([`shard-${done}-0.bin`, `shard-${dead}-0.bin`]);
    expect(c.manifest).not.toHaveProperty('shards');
    c.close();
    expect(JSON.parse(await fs.readFile(path.join(dir, 'manifest.json'), 'utf8')).version).toBe(2);
    // a damaged version 2 shard is reported like a damaged chunk
    await fs.truncate(path.join(dir, `shard-${dead}-0.bin`), 7);
    await expect(openFeatureCache(dir)).rejects.toThrow(/shard-.*-0\.bin: 7 bytes, expected 1 rows of 20 bytes/);
    await put(`shard-${dead}-0.bin`, encodeRows([vec(3)], 'float32'));

    // resumed: what is cached is skipped, new rows go to chunk-*.bin, the base is upgraded to version 3
    const w = await openCacheWriter(dir, spec(), { chunkSize: 2 });
    expect(['a', 'b', 'c'].every((k) => w.has(k))).toBe(true);
    expect(w.has('bad')).toBe(false);
    await w.add('a', vec(99)); // already cached: ignored
    await w.add('bad', vec(4));
    await w.add('e', vec(5));
    const m = await w.close();
    expect(m).toMatchObject({ version: 3, count: 5, failed: [] });
    const onDisk = JSON.parse(await fs.readFile(path.join(dir, 'manifest.json'), 'utf8'));
    expect(onDisk).toMatchObject({ version: 3, chunks: [] });
    expect(onDisk).not.toHaveProperty('shards');
    const mine = JSON.parse(await fs.readFile(path.join(dir, `part-${w.id}.json`), 'utf8'));
    expect(mine).toMatchObject({ version: 3, chunks: [{ file: `chunk-${w.id}-0.bin`, keys: ['bad', 'e'] }] });
    // the older writers' fragments are never rewritten; only provable garbage went
    for (const [id, text] of oldParts) expect(await fs.readFile(path.join(dir, `part-${id}.json`), 'utf8')).toBe(text);
    let names = (await fs.readdir(dir)).filter((n) => n.endsWith('.bin') || n.includes('.tmp')).sort();
    expect(names).toEqual(
      [`chunk-${w.id}-0.bin`, `shard-${dead}-0.bin`, `shard-${done}-0.bin`, `shard-${remote}-0.bin`].sort(),
    );
    c = await openFeatureCache(dir, { fingerprint: fp });
    expect(c.keys()).toEqual(['a', 'b', 'bad', 'c', 'e']);
    expect(c.get('a')).toEqual(vec(1));
    expect(c.get('e')).toEqual(vec(5));
    c.close();

    // the older remote writer stops: its unnamed shard and empty fragment go, named shards stay
    const hourAgo = new Date(Date.now() - 3600_000);
    await fs.utimes(path.join(dir, `part-${remote}.json`), hourAgo, hourAgo);
    await (await openCacheWriter(dir, spec(), {})).close();
    names = (await fs.readdir(dir)).sort();
    expect(names.filter((n) => n.includes(remote))).toEqual([]);
    expect(names.filter((n) => n.startsWith('shard-'))).toEqual([`shard-${dead}-0.bin`, `shard-${done}-0.bin`].sort());
    c = await openFeatureCache(dir);
    expect(c.keys()).toEqual(['a', 'b', 'bad', 'c', 'e']);
    c.close();
  });

  it('reads a version 1 cache and upgrades it in place on the next write', async () => {
    const dir = path.join(work, 'v1');
    await fs.mkdir(dir, { recursive: true });
    const fp = cacheFingerprint(spec());
    const v1 = {
      ...olderManifest(1, [{ file: 'shard-123-abc-0.bin', rows: 2, keys: ['a', 'b'] }]),
      failed: [{ image: 'x', file: '/x', reason: 'bad' }],
    };
    await fs.writeFile(path.join(dir, 'manifest.json'), JSON.stringify(v1));
    await fs.writeFile(path.join(dir, 'shard-123-abc-0.bin'), encodeRows([vec(1), vec(2)], 'float32'));
    let c = await openFeatureCache(dir, { fingerprint: fp });
    expect(c.keys()).toEqual(['a', 'b']);
    expect(c.get('b')).toEqual(vec(2));
    c.close();
    const w = await openCacheWriter(dir, spec(), { chunkSize: 2 });
    expect(w.has('a')).toBe(true);
    await w.add('x', vec(3));
    const m = await w.close();
    // upgraded straight to version 3: the same chunk entries, listed under `chunks`; the file keeps its name
    const base = JSON.parse(await fs.readFile(path.join(dir, 'manifest.json'), 'utf8'));
    expect(base).toMatchObject({ version: 3, chunks: v1.shards });
    expect(base).not.toHaveProperty('shards');
    expect(m).toMatchObject({ version: 3, count: 3, failed: [] });
    expect(m.chunks[0].file).toBe('shard-123-abc-0.bin');
    c = await openFeatureCache(dir);
    expect(c.keys()).toEqual(['a', 'b', 'x']);
    expect(c.get('a')).toEqual(vec(1));
    c.close();
    await fs.writeFile(path.join(dir, 'manifest.json'), JSON.stringify({ ...v1, version: 4 }));
    await expect(openFeatureCache(dir)).rejects.toThrow(
      /feature cache version 4 is not supported \(this captioner reads versions 1 to 3\)/,
    );
  });

  it('reports a damaged cache (missing or short chunk) clearly', async () => {
    const dir = path.join(work, 'damaged');
    const w = await openCacheWriter(dir, spec(), { chunkSize: 1 });
    await w.add('a', vec(1));
    await w.add('b', vec(2));
    const m = await w.close();
    await fs.truncate(path.join(dir, m.chunks[1].file), 7);
    await expect(openFeatureCache(dir)).rejects.toThrow(/7 bytes, expected 1 rows of 20 bytes/);
    await fs.rm(path.join(dir, m.chunks[0].file));
    await expect(openFeatureCache(dir)).rejects.toThrow(
      /chunk .* is missing; the cache is damaged, run `captioner features` again/,
    );
    // a rerun of the writer recomputes what the damaged chunks held, which repairs the cache
    const w2 = await openCacheWriter(dir, spec(), { chunkSize: 1 });
    expect(w2.has('a') || w2.has('b')).toBe(false);
    await w2.add('a', vec(1));
    await w2.add('b', vec(2));
    await w2.close();
    const c = await openFeatureCache(dir);
    expect(c.get('b')).toEqual(vec(2));
    c.close();
  });

  it('merges concurrent writers into one manifest', async () => {
    const dir = path.join(work, 'concurrent');
    const writers = await Promise.all([0, 1, 2].map(() => openCacheWriter(dir, spec(), { chunkSize: 1 })));
    await Promise.all(
      writers.map(async (w, i) => {
        for (let k = 0; k < 4; k++) await w.add(`w${i}-${k}`, vec(i * 10 + k));
        await w.close();
      }),
    );
    const c = await openFeatureCache(dir);
    expect(c.keys().length).toBe(12);
    expect(c.get('w2-3')).toEqual(vec(23));
    c.close();
  });
});
