// The output-folder check every stage writer runs: other stages' artifacts and unrelated files refused.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { checkStageFolder } from '../../src/util/stagedir.js';
import { UsageError } from '../../src/errors.js';

let work: string;
beforeAll(async () => {
  work = await fs.mkdtemp(path.join(os.tmpdir(), 'captioner-stagedir-'));
});
afterAll(async () => {
  await fs.rm(work, { recursive: true, force: true });
});

async function folder(name: string, files: Record<string, string>): Promise<string> {
  const dir = path.join(work, name);
  await fs.mkdir(dir, { recursive: true });
  for (const [f, text] of Object.entries(files)) await fs.writeFile(path.join(dir, f), text);
  return dir;
}
const run = { kind: 'captioner.model', option: '--out', ownNames: ['manifest.json', 'vocab.json', 'last'] };
const cache = { kind: 'captioner.features', option: '--out' };

describe('checkStageFolder', () => {
  it('accepts a missing or empty folder, its own artifact, and its own leftovers', async () => {
    await expect(checkStageFolder(path.join(work, 'nope'), run)).resolves.toBeUndefined();
    await expect(checkStageFolder(await folder('empty', {}), run)).resolves.toBeUndefined();
    await expect(
      checkStageFolder(await folder('own', { 'manifest.json': '{"kind":"captioner.model"}', 'notes.txt': '' }), run),
    ).resolves.toBeUndefined();
    await expect(
      checkStageFolder(await folder('left', { 'vocab.json': '{}', 'vocab.json.12.3.tmp': '' }), run),
    ).resolves.toBeUndefined();
    await expect(checkStageFolder(await folder('swap', { 'last.old-12-3': '' }), run)).resolves.toBeUndefined();
  });

  it("refuses another stage's artifact, naming the folder and what it holds", async () => {
    const dir = await folder('prepared', { 'manifest.json': '{"kind":"captioner.prepared"}' });
    const e = await checkStageFolder(dir, run).catch((x) => x);
    expect(e).toBeInstanceOf(UsageError);
    expect(e.message).toBe(
      `${dir}: holds a prepared dataset, not a training run (model); refusing to write over it (choose another folder with --out)`,
    );
    await expect(checkStageFolder(dir, cache)).rejects.toThrow(/holds a prepared dataset, not a feature cache/);
  });

  it('refuses unrelated files where the stage owns the folder, and a foreign manifest everywhere', async () => {
    await expect(
      checkStageFolder(await folder('photos', { 'a.jpg': '', 'manifest.json.bak': '' }), run),
    ).rejects.toThrow(/holds other files \(a\.jpg, manifest\.json\.bak\)/);
    await expect(checkStageFolder(await folder('photos2', { 'a.jpg': '' }), cache)).resolves.toBeUndefined();
    await expect(checkStageFolder(await folder('other', { 'manifest.json': '{"name":"x"}' }), cache)).rejects.toThrow(
      /a manifest\.json of another kind/,
    );
    await expect(checkStageFolder(await folder('broken', { 'manifest.json': '{' }), run)).rejects.toThrow(UsageError);
    const file = path.join(work, 'file');
    await fs.writeFile(file, '');
    await expect(checkStageFolder(file, run)).rejects.toThrow(/is a file, not a folder/);
  });
});
