import { mkdirSync, mkdtempSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { discoverImages, OUTPUT_MARKER, hasImageExtension } from '../../src/caption/discover.js';
import { UsageError } from '../../src/errors.js';

const exts = ['jpg', 'jpeg', 'png'];
function tree() {
  const root = mkdtempSync(path.join(tmpdir(), 'disc-'));
  const f = (rel: string, body = 'x') => {
    mkdirSync(path.dirname(path.join(root, rel)), { recursive: true });
    writeFileSync(path.join(root, rel), body);
  };
  f('b.jpg');
  f('a.PNG');
  f('notes.txt');
  f('.hidden.jpg');
  f('.cache/x.jpg');
  f('sub/c.jpeg');
  f('sub/deeper/d.jpg');
  f('with space/é ü.jpg');
  symlinkSync(root, path.join(root, 'sub', 'loop')); // a folder symlink back to the root
  symlinkSync(path.join(root, 'missing.jpg'), path.join(root, 'broken.jpg'));
  return root;
}

describe('hasImageExtension', () => {
  it('matches case-insensitively and needs an extension', () => {
    expect(hasImageExtension('x.JPG', exts)).toBe(true);
    expect(hasImageExtension('x.txt', exts)).toBe(false);
    expect(hasImageExtension('jpg', exts)).toBe(false);
  });
});

describe('discoverImages', () => {
  it('walks folders recursively, sorted, skipping hidden files, following links without looping', async () => {
    const root = tree();
    const found = await discoverImages([root], { recursive: true, extensions: exts });
    const rel = found.map((f) => path.relative(root, f.path));
    expect(rel).toEqual(['a.PNG', 'b.jpg', 'broken.jpg', 'sub/c.jpeg', 'sub/deeper/d.jpg', 'with space/é ü.jpg']);
    expect(found.find((f) => f.path.endsWith('broken.jpg'))?.error).toBe(
      'broken symbolic link (its target does not exist)',
    );
    expect(found.filter((f) => !f.error).every((f) => !f.error)).toBe(true);
  });

  it('stays in the top folder with recursive off', async () => {
    const root = tree();
    const found = await discoverImages([root], { recursive: false, extensions: exts });
    expect(found.map((f) => path.basename(f.path))).toEqual(['a.PNG', 'b.jpg', 'broken.jpg']);
  });

  it('takes explicit files whatever their extension, globs, and de-duplicates', async () => {
    const root = tree();
    const found = await discoverImages(
      [path.join(root, 'notes.txt'), path.join(root, 'sub/*.jpeg'), path.join(root, 'b.jpg'), path.join(root, 'b.jpg')],
      {
        recursive: true,
        extensions: exts,
      },
    );
    expect(found.map((f) => path.relative(root, f.path))).toEqual(['b.jpg', 'notes.txt', 'sub/c.jpeg']);
  });

  it('reads a list from stdin with -', async () => {
    const root = tree();
    const stdin = Readable.from([`${path.join(root, 'b.jpg')}\n\n${path.join(root, 'a.PNG')}\r\n`]);
    const found = await discoverImages(['-'], { recursive: true, extensions: exts, stdin });
    expect(found.map((f) => path.basename(f.path))).toEqual(['a.PNG', 'b.jpg']);
  });

  it('gives clear usage errors', async () => {
    const root = tree();
    await expect(discoverImages([], { recursive: true, extensions: exts })).rejects.toThrow(UsageError);
    const empty = mkdtempSync(path.join(tmpdir(), 'empty-'));
    await expect(discoverImages([empty], { recursive: true, extensions: exts })).rejects.toThrow(/no images found/);
    await expect(discoverImages([path.join(root, '*.gif')], { recursive: true, extensions: exts })).rejects.toThrow(
      /matches no images/,
    );
  });

  it('makes a missing path one error among the others, not a stop (command line and stdin)', async () => {
    const root = tree();
    const nope = path.join(root, 'nope.jpg');
    const found = await discoverImages([nope, path.join(root, 'b.jpg')], { recursive: true, extensions: exts });
    expect(found).toEqual([{ path: path.join(root, 'b.jpg') }, { path: nope, error: 'no such file or folder' }]);
    const viaStdin = await discoverImages(['-'], {
      recursive: true,
      extensions: exts,
      stdin: Readable.from([`${nope}\n${path.join(root, 'b.jpg')}\n`]),
    });
    expect(viaStdin.map((f) => f.error ?? 'ok')).toEqual(['ok', 'no such file or folder']);
  });

  it('calls a symlink loop a loop, not broken', async () => {
    const root = mkdtempSync(path.join(tmpdir(), 'loop-'));
    symlinkSync(path.join(root, 'l2.jpg'), path.join(root, 'l1.jpg'));
    symlinkSync(path.join(root, 'l1.jpg'), path.join(root, 'l2.jpg'));
    writeFileSync(path.join(root, 'ok.jpg'), 'x');
    const scan = await discoverImages([root], { recursive: true, extensions: exts });
    expect(scan.map((f) => [path.basename(f.path), f.error])).toEqual([
      ['l1.jpg', 'symbolic link loop'],
      ['l2.jpg', 'symbolic link loop'],
      ['ok.jpg', undefined],
    ]);
    const named = await discoverImages([path.join(root, 'l1.jpg')], { recursive: true, extensions: exts });
    expect(named[0].error).toBe('symbolic link loop');
  });

  it('finds and keeps the raw bytes of file names that are not UTF-8 (folder scans and stdin)', async () => {
    const root = mkdtempSync(path.join(tmpdir(), 'latin1-'));
    const raw = Buffer.concat([Buffer.from(root + '/caf'), Buffer.from([0xe9]), Buffer.from('.jpg')]); // "café.jpg" in Latin-1
    writeFileSync(raw, 'bytes');
    const scan = await discoverImages([root], { recursive: true, extensions: exts });
    expect(scan).toHaveLength(1);
    expect(scan[0].path).toBe(root + '/caf\\xe9.jpg'); // the byte that is not UTF-8, escaped reversibly (pathname.ts)
    expect(scan[0].file).toEqual(raw);
    expect(readFileSync(scan[0].file!).toString()).toBe('bytes');
    const viaStdin = await discoverImages(['-'], {
      recursive: true,
      extensions: exts,
      stdin: Readable.from([Buffer.concat([raw, Buffer.from('\n')])]),
    });
    expect(viaStdin[0].file).toEqual(raw);
    expect(viaStdin[0].path).toBe(scan[0].path);
    expect(viaStdin[0].error).toBeUndefined();
  });

  it("passes over folders marked as captioner output and this run's own outputs, unless named on purpose", async () => {
    const root = tree();
    const maps = path.join(root, 'maps');
    mkdirSync(maps);
    writeFileSync(path.join(maps, OUTPUT_MARKER), '');
    writeFileSync(path.join(maps, 'a-0123456789.png'), 'png');
    const outputsSkipped: string[] = [];
    const scan = await discoverImages([root], { recursive: true, extensions: [...exts, 'png'], outputsSkipped });
    expect(scan.some((f) => f.path.startsWith(maps))).toBe(false);
    expect(outputsSkipped).toEqual([maps]);
    expect(
      (await discoverImages([maps], { recursive: true, extensions: [...exts, 'png'] })).map((f) => f.path),
    ).toEqual([path.join(maps, 'a-0123456789.png')]);
    // an output given in `exclude` is never input, even named in a stdin list
    const own = path.join(root, 'own.jpg');
    writeFileSync(own, 'x');
    const listed = await discoverImages(['-'], {
      recursive: true,
      extensions: exts,
      exclude: [own],
      stdin: Readable.from([`${own}\n`]),
    });
    expect(listed).toEqual([]);
  });

  it('counts the files a scan passes over, by extension', async () => {
    const root = tree();
    const skipped = new Map<string, number>();
    await discoverImages([root], { recursive: true, extensions: exts, skipped });
    expect(Object.fromEntries(skipped)).toEqual({ '.txt': 1 });
  });

  it('shows scanned paths as path.join does (no ./ or // added)', async () => {
    const root = tree();
    const rel = path.relative(process.cwd(), root);
    const found = await discoverImages([rel + '/'], { recursive: false, extensions: exts });
    expect(found.map((f) => f.path)).toEqual(['a.PNG', 'b.jpg', 'broken.jpg'].map((n) => path.join(rel, n)));
  });
});
