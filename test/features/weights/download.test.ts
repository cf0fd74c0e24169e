// Weights download and import against a loopback server: full download, resume after a cut
// connection (within one run and across runs), md5 mismatch, HTTP errors, --from imports, and the
// `captioner weights vgg16` command's errors. Nothing leaves 127.0.0.1.
import { promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { downloadFile, importFile } from '../../../src/features/weights/download.js';
import { fetchVgg16Weights } from '../../../src/features/weights/vgg16.js';
import {
  KERAS_VGG16_FILES,
  captionerCacheDir,
  weightsCacheDir,
  weightsUrlBase,
} from '../../../src/features/weights/cache.js';
import { loadVgg16Weights } from '../../../src/features/vgg16/weights.js';
import { runCli } from '../../helpers/cli.js';
import { md5, payload, startServer, type TestServer } from './server.js';
import { MINI_LAYERS, fixture } from '../vgg16/mini.js';

const BIG = payload(300_000);
const OTHER = payload(1000, 2);
let server: TestServer;
let tmp: string;
let mini: Buffer;
let miniNotop: Buffer;

beforeAll(async () => {
  tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'captioner-weights-'));
  mini = await fs.readFile(fixture('mini_legacy.h5'));
  miniNotop = await fs.readFile(fixture('mini_legacy_notop.h5'));
  server = await startServer({
    'big.bin': BIG,
    'other.bin': OTHER,
    [KERAS_VGG16_FILES.top.name]: mini,
    [KERAS_VGG16_FILES.notop.name]: miniNotop,
  });
});
afterAll(async () => {
  await server.close();
  await fs.rm(tmp, { recursive: true, force: true });
});
beforeEach(() => {
  server.requests.length = 0;
  server.ignoreRange = false;
  server.cutNext(0, 0);
});

let n = 0;
const dest = () => path.join(tmp, `dl${n++}`, 'big.bin');
const exists = (f: string) =>
  fs.access(f).then(
    () => true,
    () => false,
  );

describe('downloadFile', () => {
  it('downloads, checks the md5, renames into place and records the digest', async () => {
    const d = dest();
    const r = await downloadFile({ url: server.base + 'big.bin', dest: d, md5: md5(BIG), sidecar: `${d}.digest.json` });
    expect(r).toMatchObject({ bytes: BIG.length, md5: md5(BIG), resumedFrom: 0, attempts: 1 });
    expect((await fs.readFile(d)).equals(BIG)).toBe(true);
    expect(await exists(`${d}.part`)).toBe(false);
    expect(JSON.parse(await fs.readFile(`${d}.digest.json`, 'utf8')).sha256).toBe(r.sha256);
  });

  it('resumes with a Range request after the connection is cut half-way', async () => {
    const d = dest();
    server.cutNext(150_000);
    const r = await downloadFile({ url: server.base + 'big.bin', dest: d, md5: md5(BIG), retryDelayMs: 0 });
    expect(r.attempts).toBe(2);
    // The retry asks for what is on disk: up to the 150,000 bytes sent before the cut (the kernel may
    // not hand the client every byte of a cut connection, so the exact figure can be lower).
    const ranges = server.requests.map((q) => q.range);
    expect(ranges[0]).toBeUndefined();
    const from = Number(/^bytes=(\d+)-$/.exec(ranges[1] ?? '')?.[1]);
    expect(from).toBeGreaterThan(0);
    expect(from).toBeLessThanOrEqual(150_000);
    expect((await fs.readFile(d)).equals(BIG)).toBe(true);
  });

  it('keeps the .part when out of attempts, and the next run resumes from it', async () => {
    const d = dest();
    server.cutNext(100_000);
    await expect(downloadFile({ url: server.base + 'big.bin', dest: d, md5: md5(BIG), attempts: 1 })).rejects.toThrow(
      /kept in .*big\.bin\.part, run the command again to resume/,
    );
    const kept = (await fs.stat(`${d}.part`)).size;
    expect(kept).toBeGreaterThan(0);
    expect(kept).toBeLessThanOrEqual(100_000);
    server.requests.length = 0;
    const r = await downloadFile({ url: server.base + 'big.bin', dest: d, md5: md5(BIG), attempts: 1 });
    expect(r.resumedFrom).toBe(kept);
    expect(server.requests.map((q) => q.range)).toEqual([`bytes=${kept}-`]);
    expect((await fs.readFile(d)).equals(BIG)).toBe(true);
  });

  it('starts over when the server ignores Range, and accepts a complete .part (416)', async () => {
    const d = dest();
    await fs.mkdir(path.dirname(d), { recursive: true });
    await fs.writeFile(`${d}.part`, BIG.subarray(0, 5000));
    server.ignoreRange = true;
    await downloadFile({ url: server.base + 'big.bin', dest: d, md5: md5(BIG) });
    expect((await fs.readFile(d)).equals(BIG)).toBe(true);

    const d2 = dest();
    await fs.mkdir(path.dirname(d2), { recursive: true });
    await fs.writeFile(`${d2}.part`, BIG);
    server.ignoreRange = false;
    const r = await downloadFile({ url: server.base + 'big.bin', dest: d2, md5: md5(BIG) });
    expect(r.bytes).toBe(BIG.length);
  });

  it('deletes a download whose md5 does not match', async () => {
    const d = dest();
    await expect(downloadFile({ url: server.base + 'other.bin', dest: d, md5: md5(BIG) })).rejects.toThrow(
      /md5 [0-9a-f]{32} does not match the expected .*the download was deleted/,
    );
    expect(await exists(d)).toBe(false);
    expect(await exists(`${d}.part`)).toBe(false);
  });

  it('does not retry a 404', async () => {
    await expect(
      downloadFile({ url: server.base + 'missing.bin', dest: dest(), attempts: 4, retryDelayMs: 0 }),
    ).rejects.toThrow(/HTTP 404/);
    expect(server.requests.length).toBe(1);
  });

  it('retries a refused connection, then reports it', async () => {
    const closed = await startServer({});
    await closed.close(); // its port is now (almost certainly) refused
    await expect(
      downloadFile({ url: closed.base + 'x.bin', dest: dest(), attempts: 2, retryDelayMs: 0 }),
    ).rejects.toThrow(/download of http:\/\/127\.0\.0\.1:\d+\/x\.bin failed: ECONNREFUSED/);
  });
});

describe('importFile', () => {
  it('copies atomically after the md5 check, refuses a mismatch', async () => {
    const src = path.join(tmp, 'src.bin');
    await fs.writeFile(src, BIG);
    const d = dest();
    await expect(importFile(src, d, { md5: md5(OTHER) })).rejects.toThrow(/does not match/);
    expect(await exists(d)).toBe(false);
    const r = await importFile(src, d, { md5: md5(BIG) });
    expect(r.bytes).toBe(BIG.length);
    expect((await fs.readFile(d)).equals(BIG)).toBe(true);
    expect((await fs.readdir(path.dirname(d))).filter((f) => f.endsWith('.tmp'))).toEqual([]);
  });
});

describe('fetchVgg16Weights', () => {
  const files = () => ({
    top: { ...KERAS_VGG16_FILES.top, md5: md5(mini) },
    notop: { ...KERAS_VGG16_FILES.notop, md5: md5(miniNotop) },
  });

  it('downloads into the cache, then finds it cached; loadVgg16Weights auto reads it', async () => {
    const cacheDir = path.join(tmp, 'cache1');
    const r = await fetchVgg16Weights({ cacheDir, urlBase: server.base, files: files() });
    expect(r).toMatchObject({
      action: 'downloaded',
      includeTop: true,
      file: path.join(cacheDir, KERAS_VGG16_FILES.top.name),
      md5: md5(mini),
    });
    const again = await fetchVgg16Weights({ cacheDir, urlBase: server.base, files: files() });
    expect(again.action).toBe('cached');
    expect(server.requests.length).toBe(1);
    const loaded = await loadVgg16Weights('auto', { seed: 0, cacheDir, layers: MINI_LAYERS });
    expect(loaded.fingerprint).toBe(`sha256:${r.sha256}`);
    expect(loaded.includeTop).toBe(true);
  });

  it('imports with --from, recognising the no-top file by its md5', async () => {
    const cacheDir = path.join(tmp, 'cache2');
    const r = await fetchVgg16Weights({ cacheDir, from: fixture('mini_legacy_notop.h5'), files: files() });
    expect(r).toMatchObject({
      action: 'imported',
      includeTop: false,
      file: path.join(cacheDir, KERAS_VGG16_FILES.notop.name),
    });
    await expect(fetchVgg16Weights({ cacheDir, from: fixture('mini_keras2.h5'), files: files() })).rejects.toThrow(
      /matches neither Keras file.*set encoder\.weights to the file's path/,
    );
    expect(server.requests.length).toBe(0);
  });

  it('re-downloads a cached file whose md5 is wrong', async () => {
    const cacheDir = path.join(tmp, 'cache3');
    await fs.mkdir(cacheDir, { recursive: true });
    await fs.writeFile(path.join(cacheDir, KERAS_VGG16_FILES.notop.name), 'garbage');
    const r = await fetchVgg16Weights({ cacheDir, includeTop: false, urlBase: server.base, files: files() });
    expect(r.action).toBe('downloaded');
    expect((await fs.readFile(r.file)).equals(miniNotop)).toBe(true);
  });
});

describe('cache locations', () => {
  it('CAPTIONER_CACHE overrides the cache root; CAPTIONER_WEIGHTS_URL the URL base', () => {
    expect(weightsCacheDir({ CAPTIONER_CACHE: '/x/c' })).toBe('/x/c/weights');
    expect(captionerCacheDir({ XDG_CACHE_HOME: '/x/xdg' })).toBe('/x/xdg/captioner');
    expect(weightsCacheDir({ HOME: os.homedir() })).toBe(path.join(os.homedir(), '.cache', 'captioner', 'weights'));
    expect(weightsUrlBase({})).toBe('https://storage.googleapis.com/tensorflow/keras-applications/vgg16/');
    expect(weightsUrlBase({ CAPTIONER_WEIGHTS_URL: 'http://127.0.0.1:9/w' })).toBe('http://127.0.0.1:9/w/');
  });
});

describe('captioner weights vgg16 (CLI)', () => {
  it("rejects a download whose md5 is not Keras's, leaving nothing behind (exit 4)", async () => {
    const cache = path.join(tmp, 'cli-cache');
    const r = await runCli(['weights', 'vgg16', '--no-top'], {
      env: { CAPTIONER_CACHE: cache, CAPTIONER_WEIGHTS_URL: server.base },
    });
    expect(r.code).toBe(4);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(/md5 [0-9a-f]{32} does not match the expected 6d6bbae143d832006294945121d1f1fc/);
    expect(server.requests).toEqual([{ path: `/${KERAS_VGG16_FILES.notop.name}`, range: undefined }]);
    expect(await fs.readdir(path.join(cache, 'weights'))).toEqual([]);
  });

  it("--from a file that is not Keras's (exit 4), and a missing file", async () => {
    const cacheDir = path.join(tmp, 'cli-cache2');
    const r = await runCli(['weights', 'vgg16', '--from', fixture('mini_legacy.h5'), '--cache-dir', cacheDir]);
    expect(r.code).toBe(4);
    expect(r.stderr).toMatch(/matches neither Keras file/);
    const m = await runCli(['weights', 'vgg16', '--from', path.join(tmp, 'nope.h5'), '--cache-dir', cacheDir]);
    expect(m.code).toBe(4);
    expect(m.stderr).toMatch(/nope\.h5: file not found/);
  });
});
