// The run folder's checkpoint module on its own: guardWrite's one-line errors and clean-up, the state.json
// reader shared by cross-entropy and self-critical runs, and history.jsonl read back up to the checkpoint.
import { promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import YAML from 'yaml';
import { ConfigSchema } from '../../src/config/schema.js';
import { DataError, ModelError, UsageError } from '../../src/errors.js';
import {
  checkFingerprints,
  checkResumeConfig,
  guardWrite,
  readHistory,
  readState,
  refuseExistingRun,
  writeHistory,
} from '../../src/train/checkpoint.js';

let work: string;
beforeAll(async () => {
  work = await fs.mkdtemp(path.join(os.tmpdir(), 'captioner-checkpoint-'));
});
afterAll(async () => {
  await fs.rm(work, { recursive: true, force: true });
});
let n = 0;
const fresh = async () => {
  const d = path.join(work, `t${n++}`);
  await fs.mkdir(path.join(d, 'last'), { recursive: true });
  return d;
};
const errno = (code: string) => Object.assign(new Error(`${code}: x`), { code });

describe('guardWrite', () => {
  it("turns a refused write into one DataError naming the target, and removes only this process's temporaries of it", async () => {
    const out = await fresh();
    const target = path.join(out, 'last');
    const mine = [`last.new-${process.pid}-3`, `last.json.${process.pid}.0.tmp`];
    const others = [`last.new-1-3`, 'last.keep', `best.new-${process.pid}-1`];
    for (const f of [...mine, ...others]) await fs.writeFile(path.join(out, f), 'x');
    const e = await guardWrite(target, async () => {
      throw errno('ENOSPC');
    }).catch((x) => x);
    expect(e).toBeInstanceOf(DataError);
    expect(e.message).toBe(
      `${target}: cannot write: no space left on device (ENOSPC); nothing half-written was left (free some space and run again; --resume continues from the last saved checkpoint)`,
    );
    const left = await fs.readdir(out);
    for (const f of mine) expect(left).not.toContain(f);
    for (const f of others) expect(left).toContain(f);
  });

  it('rethrows anything that is not a filesystem refusal as it is, and returns the value otherwise', async () => {
    const bug = errno('ENOENT');
    await expect(
      guardWrite(work, async () => {
        throw bug;
      }),
    ).rejects.toBe(bug);
    await expect(guardWrite(work, async () => 42)).resolves.toBe(42);
  });
});

describe('state.json', () => {
  it('reads a checkpoint of the asked kind, and refuses a missing one, a broken one and one of another kind', async () => {
    const out = await fresh();
    await expect(readState(out, 'captioner.train-state', () => new ModelError('other'))).rejects.toThrow(
      new UsageError(`--resume: no checkpoint in ${out} (no last/state.json); start without --resume`),
    );
    const file = path.join(out, 'last', 'state.json');
    await fs.writeFile(file, '{ broken');
    await expect(readState(out, 'captioner.train-state', () => new ModelError('other'))).rejects.toThrow(
      /^--resume: .*state\.json: cannot read: /,
    );
    await fs.writeFile(
      file,
      JSON.stringify({ kind: 'captioner.scst-state', epoch: 3, datasetFingerprint: 'a', featureFingerprint: 'b' }),
    );
    await expect(
      readState(out, 'captioner.train-state', (f) => new ModelError(`${f}: not a training checkpoint`)),
    ).rejects.toThrow(new ModelError(`${file}: not a training checkpoint`));
    const s = await readState<{
      kind: 'captioner.scst-state';
      epoch: number;
      datasetFingerprint: string;
      featureFingerprint: string;
    }>(out, 'captioner.scst-state', () => new Error('no'));
    expect(s.epoch).toBe(3);
    expect(() => checkFingerprints(s, 'a', 'b')).not.toThrow();
    expect(() => checkFingerprints(s, 'x', 'b')).toThrow(
      /^--resume: the prepared dataset changed since this run started/,
    );
    expect(() => checkFingerprints(s, 'a', 'x')).toThrow(/^--resume: the feature cache changed since this run started/);
    await expect(refuseExistingRun(out)).rejects.toThrow(UsageError);
    await expect(refuseExistingRun(work)).resolves.toBeUndefined();
  });
});

describe('history.jsonl', () => {
  it("is one JSON record per line, with loss.svg; read back up to the checkpoint's epoch", async () => {
    const out = await fresh();
    expect(await readHistory(out, 5)).toEqual([]);
    const h = [
      { epoch: 0, v: null },
      { epoch: 1, v: 1.5 },
      { epoch: 2, v: 1.25 },
    ];
    await writeHistory(out, h, '<svg/>');
    expect(await fs.readFile(path.join(out, 'history.jsonl'), 'utf8')).toBe(
      '{"epoch":0,"v":null}\n{"epoch":1,"v":1.5}\n{"epoch":2,"v":1.25}\n',
    );
    expect(await fs.readFile(path.join(out, 'loss.svg'), 'utf8')).toBe('<svg/>');
    expect(await readHistory(out, 1)).toEqual(h.slice(0, 2));
  });
});

describe('checkResumeConfig', () => {
  it('reads a config.yaml recorded before keys were renamed (features.shardBytes) with the defaults of newer keys filled in', async () => {
    const out = await fresh();
    const now = ConfigSchema.parse({});
    const { chunkBytes, ...features } = now.features;
    const { type: _type, ...model } = now.model;
    // recorded by an older captioner: the old key name, and no model.type yet
    const recorded = { ...now, features: { ...features, shardBytes: chunkBytes }, model };
    await fs.writeFile(path.join(out, 'config.yaml'), YAML.stringify(recorded));
    await expect(checkResumeConfig(out, now)).resolves.toEqual([]);
    // a frozen setting that really changed is still refused
    await fs.writeFile(
      path.join(out, 'config.yaml'),
      YAML.stringify({ ...recorded, features: { ...recorded.features, dtype: 'float16' } }),
    );
    await expect(checkResumeConfig(out, now)).rejects.toThrow(/features\.dtype: "float16" -> "float32" cannot change/);
  });
});
