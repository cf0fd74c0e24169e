// Weight folders on disk: the swap that replaces a checkpoint survives a kill at any point (recoverDir),
// and non-finite weights are never saved nor loaded.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { tf } from '../../src/tf/tf.js';
import { MergeDecoder } from '../../src/model/decoders/merge.js';
import { recoverDir, writeDirAtomic } from '../../src/model/io.js';
import { loadDecoder, saveDecoder } from '../../src/model/runfolder.js';
import { ModelError } from '../../src/errors.js';
import type { MergeSpec } from '../../src/model/decoders/merge.js';

let work: string;
beforeAll(async () => {
  await tf.setBackend('cpu');
  work = await fs.mkdtemp(path.join(os.tmpdir(), 'captioner-io-'));
});
afterAll(async () => {
  await fs.rm(work, { recursive: true, force: true });
});

const spec: MergeSpec = {
  vocabSize: 9,
  featureDim: 4,
  embedDim: 3,
  units: 5,
  imageUnits: 5,
  hiddenUnits: 6,
  merge: 'add',
  dropout: 0,
};
let k = 0;
const dirOf = async () => {
  const parent = path.join(work, `d${k++}`);
  await fs.mkdir(parent);
  return path.join(parent, 'last');
};
const read = (dir: string) => fs.readFile(path.join(dir, 'a.txt'), 'utf8');

describe('writeDirAtomic + recoverDir', () => {
  it('leaves nothing behind on success', async () => {
    const dir = await dirOf();
    await writeDirAtomic(dir, { 'a.txt': '1' });
    await writeDirAtomic(dir, { 'a.txt': '2' });
    expect(await read(dir)).toBe('2');
    expect(await fs.readdir(path.dirname(dir))).toEqual(['last']);
  });

  it('puts back the previous folder when killed between the renames, and deletes partial writes', async () => {
    const dir = await dirOf();
    const p = path.dirname(dir);
    await writeDirAtomic(dir, { 'a.txt': 'old' });
    await fs.rename(dir, `${dir}.old-1-2`);
    await writeDirAtomic(`${dir}.new-1-1`, { 'a.txt': 'new' });
    await fs.mkdir(`${dir}.tmp-1-0`);
    expect(await recoverDir(dir)).toMatch(/restored from last\.old-1-2/);
    expect(await read(dir)).toBe('old');
    expect(await fs.readdir(p)).toEqual(['last']);
  });

  it('takes the complete new folder when there was no previous one; does nothing when all is well', async () => {
    const dir = await dirOf();
    await writeDirAtomic(`${dir}.new-1-1`, { 'a.txt': 'new' });
    expect(await recoverDir(dir)).toMatch(/restored from last\.new-1-1/);
    expect(await read(dir)).toBe('new');
    expect(await recoverDir(dir)).toBeNull();
    await fs.mkdir(`${dir}.tmp-3-3`); // killed while writing: the live folder stays
    expect(await recoverDir(dir)).toBeNull();
    expect(await fs.readdir(path.dirname(dir))).toEqual(['last']);
    const none = await dirOf();
    await fs.mkdir(`${none}.tmp-3-3`); // a first write killed before it was complete: nothing to restore
    expect(await recoverDir(none)).toBeNull();
    expect(await fs.readdir(path.dirname(none))).toEqual([]);
  });
});

describe('non-finite weights', () => {
  it('are refused when saving, and when loading', async () => {
    const dir = await dirOf();
    const m = MergeDecoder.create(spec, 1);
    try {
      await saveDecoder(dir, m);
      const name = Object.keys(m.weights)[0];
      m.weights[name].assign(tf.fill(m.weights[name].shape, NaN));
      await expect(saveDecoder(dir, m)).rejects.toThrow(/refusing to save non-finite weights/);
      const back = await loadDecoder(dir); // the good checkpoint is still there
      back.dispose();
      const bin = path.join(dir, 'weights.bin');
      const buf = await fs.readFile(bin);
      buf.writeFloatLE(Infinity, 0);
      await fs.writeFile(bin, buf);
      const e = await loadDecoder(dir).catch((x) => x);
      expect(e).toBeInstanceOf(ModelError);
      expect(e.message).toMatch(/holds Infinity \(non-finite weights/);
    } finally {
      m.dispose();
    }
  });
});
