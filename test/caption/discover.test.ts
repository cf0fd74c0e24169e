import { mkdirSync, mkdtempSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { discoverImages, hasImageExtension } from '../../src/caption/discover.js';
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
    expect(found.find((f) => f.path.endsWith('broken.jpg'))?.error).toBe('broken symbolic link');
    expect(found.filter((f) => !f.error).every((f) => !f.error)).toBe(true);
  });

  it('stays in the top folder with recursive off', async () => {
    const root = tree();
    const found = await discoverImages([root], { recursive: false, extensions: exts });
    expect(found.map((f) => path.basename(f.path))).toEqual(['a.PNG', 'b.jpg', 'broken.jpg']);
  });

  it('takes explicit files whatever their extension, globs, and de-duplicates', async () => {
    const root = tree();
    const found = await discoverImages([path.join(root, 'notes.txt'), path.join(root, 'sub/*.jpeg'), path.join(root, 'b.jpg'), path.join(root, 'b.jpg')], {
      recursive: true,
      extensions: exts,
    });
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
    await expect(discoverImages([path.join(root, 'nope')], { recursive: true, extensions: exts })).rejects.toThrow(/no such file or folder/);
    const empty = mkdtempSync(path.join(tmpdir(), 'empty-'));
    await expect(discoverImages([empty], { recursive: true, extensions: exts })).rejects.toThrow(/no images found/);
    await expect(discoverImages([path.join(root, '*.gif')], { recursive: true, extensions: exts })).rejects.toThrow(/matches no images/);
  });
});
