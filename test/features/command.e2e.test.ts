// `captioner features` end to end through the built CLI: a prepared dataset of generated images (plus
// a damaged and a missing one), a tiny ONNX encoder written by our writer, resume (also of a cache in the
// older shard-*.bin naming), --shard, refusals,
// kill -9 mid-run, and one run of the real VGG16 graph with random weights.
import { spawn, spawnSync } from 'node:child_process';
import { promises as fs, existsSync, readdirSync, readFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openFeatureCache } from '../../src/features/cache.js';
import { bin, repoRoot, runCli } from '../helpers/cli.js';
import { encodeImage, syntheticRgb, tinyEncoderOnnx, writeTinyPrepared } from './helpers.js';

let work: string;

/** Root with permission to make PID namespaces (`unshare -p`); probed once. */
const canUnshare =
  process.platform === 'linux' && spawnSync('unshare', ['-p', '-f', '--mount-proc', 'true']).status === 0;

function runIn(cmd: string, args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, {
      cwd: repoRoot,
      env: { ...process.env, CAPTIONER_QUIET: '1' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code: code ?? -1, stdout, stderr }));
  });
}

/** The cache folder holds only named chunks, fragments and the manifest: no orphans, temps or locks. */
async function expectNoLitter(dir: string, chunks: string[]): Promise<void> {
  const names = await fs.readdir(dir);
  expect(names.filter((n) => n.endsWith('.bin')).sort()).toEqual([...chunks].sort());
  expect(names.filter((n) => n.includes('.tmp') || n.endsWith('.lock') || n.startsWith('head-'))).toEqual([]);
}
let model: string;
let slowModel: string;

async function makeDataset(dir: string, n: number, opts: { bad?: boolean } = {}): Promise<string[]> {
  const images = path.join(dir, 'images');
  await fs.mkdir(images, { recursive: true });
  const keys: string[] = [];
  for (let i = 0; i < n; i++) {
    const key = `img${String(i).padStart(3, '0')}.${i % 2 ? 'jpg' : 'png'}`;
    await fs.writeFile(
      path.join(images, key),
      await encodeImage(syntheticRgb(i, 40), 40, 40, 3, i % 2 ? 'jpeg' : 'png'),
    );
    keys.push(key);
  }
  if (opts.bad) {
    const jpg = await encodeImage(syntheticRgb(99, 64), 64, 64, 3, 'jpeg');
    await fs.writeFile(path.join(images, 'zz_truncated.jpg'), jpg.subarray(0, jpg.length >> 1));
    keys.push('zz_truncated.jpg', 'zz_missing.jpg'); // the second one is not on disk
  }
  await writeTinyPrepared(path.join(dir, 'prepared'), images, keys);
  return keys;
}

const tinyArgs = (dir: string, m = model, ...more: string[]) => [
  'features',
  '--set',
  `workdir=${dir}`,
  '--set',
  'encoder.type=onnx',
  '--set',
  `encoder.onnx={path: ${JSON.stringify(m)}}`,
  '--set',
  'features.batchSize=3',
  '--set',
  'features.chunkSize=4',
  '--set',
  'threads=1',
  ...more,
];

beforeAll(async () => {
  work = await fs.mkdtemp(path.join(os.tmpdir(), 'cap-featcli-'));
  model = path.join(work, 'tiny.onnx');
  await fs.writeFile(model, tinyEncoderOnnx({ size: 32 }));
  slowModel = path.join(work, 'slow.onnx');
  await fs.writeFile(slowModel, tinyEncoderOnnx({ size: 32, channels: 48, extra: 6 }));
  if (!existsSync(bin) || !existsSync(path.join(repoRoot, 'dist', 'commands', 'features.js')))
    throw new Error('build first: npx tsc -p .');
});
afterAll(async () => {
  await fs.rm(work, { recursive: true, force: true });
});

describe('captioner features', () => {
  it('caches every readable image, lists the bad ones, exits 3; a rerun skips what is cached', async () => {
    const dir = path.join(work, 'basic');
    const keys = await makeDataset(dir, 10, { bad: true });
    const r = await runCli([...tinyArgs(dir), '--json']);
    expect(r.code).toBe(3);
    expect(r.stderr).toMatch(/zz_truncated\.jpg: skipped: damaged or truncated image/);
    expect(r.stderr).toMatch(/zz_missing\.jpg: skipped: file not found/);
    expect(r.stderr).toMatch(/2 of 12 images could not be read \(listed under "failed"/);
    const summary = JSON.parse(r.stdout);
    expect(summary).toMatchObject({ images: 12, alreadyCached: 0, encoded: 10, cached: 10 });
    const c = await openFeatureCache(path.join(dir, 'features'));
    expect(c.keys()).toEqual(keys.slice(0, 10));
    expect(c.manifest.failed.map((f) => [f.image, f.kind])).toEqual([
      ['zz_missing.jpg', 'corrupt'],
      ['zz_truncated.jpg', 'corrupt'],
    ]);
    expect(c.manifest.failed[0].file).toBe(path.join(dir, 'images', 'zz_missing.jpg'));
    expect(c.manifest).toMatchObject({
      layer: 'features',
      shape: [8],
      dtype: 'float32',
      encoder: { name: 'onnx:tiny.onnx', runtime: 'onnx' },
    });
    expect(c.manifest.chunks.every((s) => s.rows <= 4)).toBe(true);
    const first = c.get('img003.jpg');
    c.close();

    const again = await runCli([...tinyArgs(dir), '--json']);
    expect(again.code).toBe(3);
    expect(JSON.parse(again.stdout)).toMatchObject({ images: 12, alreadyCached: 10, encoded: 0, cached: 10 });
    const c2 = await openFeatureCache(path.join(dir, 'features'));
    expect(c2.manifest.chunks.flatMap((s) => s.keys).length).toBe(10);
    expect(c2.get('img003.jpg')).toEqual(first);
    c2.close();

    const other = await runCli([...tinyArgs(dir), '--set', 'encoder.onnx.interpolation=bicubic']);
    expect(other.code).toBe(3);
    expect(other.stderr).toMatch(
      /features computed with different settings .*delete the folder or choose another --out/,
    );
  });

  it('new caches write chunk-*.bin; a cache written before the rename (version 2: shard-*.bin under `shards`) and a config with features.shardSize resume it, orphaning nothing', async () => {
    const dir = path.join(work, 'v2');
    const keys = await makeDataset(dir, 9);
    const cacheDir = path.join(dir, 'features');
    const first = await runCli([...tinyArgs(dir), '--limit', '5', '--json']);
    expect(first.code, first.stderr).toBe(0);
    const names = await fs.readdir(cacheDir);
    expect(names.filter((n) => n.endsWith('.bin')).every((n) => /^chunk-\w+-\d+\.bin$/.test(n))).toBe(true);
    expect(names.filter((n) => n.endsWith('.bin')).length).toBe(2); // 5 rows, at most 4 a chunk
    const before = await openFeatureCache(cacheDir);
    const vectors = new Map(before.keys().map((k) => [k, before.get(k)]));
    before.close();
    // rewrite it as an older captioner wrote it: version 2, shard-*.bin listed under `shards`
    const rewrite = async (file: string) => {
      const j = JSON.parse(await fs.readFile(file, 'utf8'));
      const { chunks, ...rest } = j;
      const shards = chunks.map((c: { file: string }) => ({ ...c, file: c.file.replace(/^chunk-/, 'shard-') }));
      await fs.writeFile(file, JSON.stringify({ ...rest, version: 2, shards }));
    };
    for (const n of names) {
      if (n.endsWith('.bin'))
        await fs.rename(path.join(cacheDir, n), path.join(cacheDir, n.replace(/^chunk-/, 'shard-')));
      else if (n.endsWith('.json')) await rewrite(path.join(cacheDir, n));
    }
    const old = (await fs.readdir(cacheDir)).filter((n) => n.endsWith('.bin')).sort();
    expect(old.every((n) => n.startsWith('shard-'))).toBe(true);

    // the rerun, with the old config key: a warning, the cached five skipped, the rest in new chunk files
    const args = tinyArgs(dir).filter(
      (a, i, all) => a !== 'features.chunkSize=4' && all[i + 1] !== 'features.chunkSize=4',
    );
    const r = await runCli([...args, '--set', 'features.shardSize=2', '--json']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr.match(/features\.shardSize is deprecated: it is now features\.chunkSize/g)).toHaveLength(1);
    expect(JSON.parse(r.stdout)).toMatchObject({ images: 9, alreadyCached: 5, encoded: 4, cached: 9 });
    const c = await openFeatureCache(cacheDir);
    expect(c.keys()).toEqual(keys);
    for (const [k, v] of vectors) expect(c.get(k)).toEqual(v);
    const files = c.manifest.chunks.map((ch) => ch.file);
    expect(files.filter((f) => f.startsWith('shard-')).sort()).toEqual(old);
    expect(files.filter((f) => f.startsWith('chunk-')).length).toBe(2); // 4 rows, 2 a chunk
    c.close();
    expect(JSON.parse(await fs.readFile(path.join(cacheDir, 'manifest.json'), 'utf8')).version).toBe(3);
    await expectNoLitter(cacheDir, files);
  });

  it('--shard i/n processes (run at the same time into one folder) together cover everything once; --limit', async () => {
    const dir = path.join(work, 'shards');
    const keys = await makeDataset(dir, 11);
    const runs = await Promise.all([1, 2, 3].map((i) => runCli([...tinyArgs(dir), '--shard', `${i}/3`, '--json'])));
    for (const r of runs) expect(r.code, r.stderr).toBe(0);
    expect(runs.map((r) => JSON.parse(r.stdout).images)).toEqual([4, 4, 3]);
    const c = await openFeatureCache(path.join(dir, 'features'));
    expect(c.keys()).toEqual(keys);
    expect(c.manifest.chunks.flatMap((s) => s.keys).length).toBe(11);
    c.close();

    const lim = await runCli([...tinyArgs(dir), '--out', path.join(dir, 'lim'), '--limit', '4', '--json']);
    expect(lim.code).toBe(0);
    expect(JSON.parse(lim.stdout)).toMatchObject({ images: 4, encoded: 4 });

    const bad = await runCli([...tinyArgs(dir), '--shard', '4/3']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/--shard: the shard index must be between 1 and 3/);
    const auto = await runCli([...tinyArgs(dir), '--out', path.join(dir, 'auto'), '--shard', 'auto', '--json'], {
      env: { SLURM_ARRAY_TASK_ID: '2', SLURM_ARRAY_TASK_MIN: '1', SLURM_ARRAY_TASK_COUNT: '3' },
    });
    expect(auto.code, auto.stderr).toBe(0);
    expect(JSON.parse(auto.stdout)).toMatchObject({ images: 4, encoded: 4 });
    const badRt = await runCli([...tinyArgs(dir), '--runtime', 'gpu']);
    expect(badRt.code).toBe(2);
  });

  it('kill -9 mid-run leaves a readable cache; the rerun completes it without duplicates', async () => {
    const dir = path.join(work, 'kill');
    const keys = await makeDataset(dir, 40);
    const args = tinyArgs(dir, slowModel, '--set', 'features.batchSize=2', '--set', 'features.chunkSize=2');
    const child = spawn(process.execPath, [bin, ...args], {
      cwd: repoRoot,
      env: { ...process.env, CAPTIONER_QUIET: '1' },
      stdio: 'ignore',
    });
    const exited = new Promise<number | null>((res) => child.on('exit', (code) => res(code)));
    const cacheDir = path.join(dir, 'features');
    let killedAt = -1;
    for (let t = 0; t < 2000 && killedAt < 0; t++) {
      await new Promise((r) => setTimeout(r, 10));
      for (const part of existsSync(cacheDir) ? readdirSync(cacheDir).filter((n) => n.startsWith('part-')) : []) {
        try {
          const rows = JSON.parse(readFileSync(path.join(cacheDir, part), 'utf8')).chunks.reduce(
            (a: number, s: { rows: number }) => a + s.rows,
            0,
          );
          if (rows >= 2) {
            child.kill('SIGKILL');
            killedAt = rows;
          }
        } catch {
          /* being replaced */
        }
      }
    }
    await exited;
    expect(killedAt).toBeGreaterThan(0);
    const partial = await openFeatureCache(path.join(dir, 'features'));
    const have = partial.keys();
    expect(have.length).toBeLessThan(40); // really interrupted
    for (const k of have) expect(partial.get(k).length).toBe(48);
    partial.close();

    const r = await runCli([...args, '--json']);
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout).alreadyCached).toBe(have.length);
    const full = await openFeatureCache(path.join(dir, 'features'));
    expect(full.keys()).toEqual(keys);
    const all = full.manifest.chunks.flatMap((s) => s.keys);
    expect(all.length).toBe(40);
    expect(new Set(all).size).toBe(40);
    await expectNoLitter(
      path.join(dir, 'features'),
      full.manifest.chunks.map((s) => s.file),
    ); // crash leftovers cleaned up
    full.close();
  });

  it('writers in different PID namespaces (unshare -p), disjoint --shard 1/2 and 2/2, then two on the same images: nothing lost, nothing orphaned', async (ctx) => {
    if (!canUnshare) {
      console.warn(
        'SKIPPED (visible): writers in different PID namespaces need `unshare -p -f --mount-proc` (root); not allowed here',
      );
      ctx.skip();
    }
    const dir = path.join(work, 'pidns');
    const keys = await makeDataset(dir, 24);
    const args = tinyArgs(dir, slowModel, '--set', 'features.batchSize=2', '--set', 'features.chunkSize=2', '--json');
    // each writer in its own PID namespace, under a shell that first runs `pad` short programs, so that
    // the writers' pids differ (2 and 4) and each one's pid is meaningless, or dead, in the other's namespace
    const inNs = (pad: number, more: string[]) =>
      runIn('unshare', [
        '-p',
        '-f',
        '--mount-proc',
        'sh',
        '-c',
        `${'/bin/true; '.repeat(pad)}"$@"`,
        'sh',
        process.execPath,
        bin,
        ...args,
        ...more,
      ]);
    const runs = await Promise.all([inNs(0, ['--shard', '1/2']), inNs(2, ['--shard', '2/2'])]);
    for (const r of runs) expect(r.code, r.stderr).toBe(0);
    const c = await openFeatureCache(path.join(dir, 'features'));
    expect(c.keys()).toEqual(keys);
    expect(c.manifest.chunks.flatMap((s) => s.keys).length).toBe(24);
    const pids = c.manifest
      .parts!.map((p) => JSON.parse(readFileSync(path.join(dir, 'features', p), 'utf8')).writer.pid)
      .sort();
    expect(pids).toEqual([2, 4]); // really in their own PID namespaces
    await expectNoLitter(
      path.join(dir, 'features'),
      c.manifest.chunks.map((s) => s.file),
    );
    c.close();

    // overlap: both namespaces encode the same (new) images at once
    const out = path.join(dir, 'overlap');
    const both = await Promise.all([inNs(0, ['--out', out]), inNs(2, ['--out', out])]);
    for (const r of both) expect(r.code, r.stderr).toBe(0);
    const o = await openFeatureCache(out);
    expect(o.keys()).toEqual(keys);
    expect(o.manifest.count).toBe(24);
    for (const k of keys) expect(o.get(k)).toEqual(c.get(k));
    await expectNoLitter(
      out,
      o.manifest.chunks.map((s) => s.file),
    );
    o.close();
  });

  it('a full disk: one line naming the file, exit 3, no temp files; the cache stays readable and a rerun completes it', async (ctx) => {
    const dir = path.join(work, 'full');
    const keys = await makeDataset(dir, 40);
    const out = path.join(dir, 'features');
    await fs.mkdir(out, { recursive: true });
    const mounted = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=200k', 'tmpfs', out]).status === 0;
    if (!mounted) {
      console.warn('SKIPPED (visible): the full-disk test mounts a 200k tmpfs, which needs root; not permitted here');
      ctx.skip();
    }
    try {
      // leave 3 pages: the manifest, this writer's fragment and one chunk fit, the next chunk does not
      await fs.writeFile(path.join(out, 'filler'), new Uint8Array(200 * 1024 - 3 * 4096));
      const args = tinyArgs(dir, model, '--set', 'features.batchSize=2', '--set', 'features.chunkSize=2');
      const r = await runCli(args);
      expect(r.code, r.stderr).toBe(3);
      const lines = r.stderr
        .trim()
        .split('\n')
        .filter((l) => /error/i.test(l));
      expect(lines.length, r.stderr).toBe(1);
      expect(lines[0]).toMatch(
        new RegExp(
          `${out.replace(/[/.]/g, '\\$&')}/(manifest\\.json|part-\\S+\\.json|chunk-\\S+\\.bin): cannot write( the feature cache)?: no space left on device \\(ENOSPC\\)`,
        ),
      );
      expect(r.stderr).not.toMatch(/\n\s+at /); // no stack trace
      expect((await fs.readdir(out)).filter((n) => n.includes('.tmp'))).toEqual([]);
      const c = await openFeatureCache(out);
      const have = c.keys().length;
      expect(have).toBeLessThan(40);
      c.close();

      await fs.rm(path.join(out, 'filler'));
      const again = await runCli([...args, '--json']);
      expect(again.code, again.stderr).toBe(0);
      expect(JSON.parse(again.stdout)).toMatchObject({ alreadyCached: have, cached: 40 });
      const full = await openFeatureCache(out);
      expect(full.keys()).toEqual(keys);
      await expectNoLitter(
        out,
        full.manifest.chunks.map((s) => s.file),
      );
      full.close();
    } finally {
      spawnSync('umount', [out]);
    }
  });

  it('Ctrl-C (SIGINT) stops after the current batch, keeps what is done, exits 130', async () => {
    const dir = path.join(work, 'sigint');
    await makeDataset(dir, 40);
    const args = tinyArgs(
      dir,
      slowModel,
      '--set',
      'features.batchSize=2',
      '--set',
      'features.chunkSize=1000',
      '--set',
      'features.checkpointSeconds=1000',
    );
    const child = spawn(process.execPath, [bin, ...args, '--json'], {
      cwd: repoRoot,
      env: { ...process.env, CAPTIONER_QUIET: '0' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => {
      stderr += d;
      if (/to encode/.test(stderr) && !child.killed) child.kill('SIGINT'); // the first batch is under way: it completes
    });
    const code = await new Promise<number | null>((res) => child.on('exit', (c) => res(c)));
    expect(code, stderr).toBe(130);
    expect(stderr).toMatch(/interrupt: finishing the current batch/);
    const summary = JSON.parse(stdout);
    expect(summary.encoded).toBeGreaterThan(0);
    expect(summary.encoded).toBeLessThan(40);
    const c = await openFeatureCache(path.join(dir, 'features'));
    expect(c.keys().length).toBe(summary.encoded); // flushed although neither chunkSize nor the checkpoint was reached
    c.close();
  });

  it('runs the real VGG16 graph (random weights, block5_pool) and records weights: random', async () => {
    const dir = path.join(work, 'vgg');
    await makeDataset(dir, 2);
    const r = await runCli(
      [
        'features',
        '--set',
        `workdir=${dir}`,
        '--set',
        'encoder.weights=random',
        '--set',
        'encoder.layer=block5_pool',
        '--runtime',
        'onnx',
        '--set',
        'features.dtype=float16',
      ],
      { env: { CAPTIONER_QUIET: '0' } },
    );
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/warning: encoder\.weights is random/);
    expect(r.stderr).toMatch(/2 images, 0 already cached, 2 to encode/);
    const c = await openFeatureCache(path.join(dir, 'features'));
    expect(c.manifest).toMatchObject({
      weights: 'random',
      weightsFingerprint: 'random:seed=1234',
      layer: 'block5_pool',
      shape: [7, 7, 512],
      dtype: 'float16',
      count: 2,
    });
    expect(c.manifest.preprocessing).toMatchObject({ size: 224, interpolation: 'nearest', mode: 'caffe' });
    const v = c.get('img000.png');
    expect(v.length).toBe(7 * 7 * 512);
    expect(v.every((x) => Number.isFinite(x) && x >= 0)).toBe(true);
    c.close();
  });

  it('an --out that cannot be written fails before the encoder is built (issue 24): exit 3 naming the folder, not a model error', async () => {
    const dir = path.join(work, 'failfast');
    await makeDataset(dir, 2);
    // the encoder file does not exist: building it first would end in a model error (exit 4)
    const missing = path.join(work, 'no-such-encoder.onnx');
    const r = await runCli(tinyArgs(dir, missing, '--out', '/proc/nope'));
    expect(r.stderr).toBe('error: /proc/nope: cannot create folder: /proc/nope: /proc does not accept new folders\n');
    expect(r.code).toBe(3);
    const other = await runCli(tinyArgs(dir, missing, '--out', path.join(dir, 'prepared')));
    expect(other.stderr).toMatch(/holds a prepared dataset, not a feature cache/);
    expect(other.code).toBe(2);
  });
});
