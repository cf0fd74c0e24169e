import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { deepMerge, loadConfig, parseSet } from '../../src/config/load.js';
import { ConfigError } from '../../src/errors.js';
import { runCli } from '../helpers/cli.js';

const dir = mkdtempSync(path.join(tmpdir(), 'cfg-'));
const write = (name: string, text: string) => {
  const f = path.join(dir, name);
  writeFileSync(f, text);
  return f;
};

describe('parseSet', () => {
  it('parses dotted keys with YAML-typed values', () => {
    expect(parseSet('train.epochs=5')).toEqual({ train: { epochs: 5 } });
    expect(parseSet('name=demo run')).toEqual({ name: 'demo run' });
    expect(parseSet('caption.extensions=[jpg, png]')).toEqual({ caption: { extensions: ['jpg', 'png'] } });
    expect(parseSet('prep.strict=true')).toEqual({ prep: { strict: true } });
  });
  it('rejects malformed expressions', () => {
    expect(() => parseSet('novalue')).toThrow(ConfigError);
    expect(() => parseSet('a..b=1')).toThrow(/not a dotted key/);
  });
});

describe('deepMerge', () => {
  it('merges objects and replaces scalars and arrays', () => {
    expect(deepMerge({ a: { b: 1, c: 2 }, d: [1] }, { a: { b: 3 }, d: [2] })).toEqual({ a: { b: 3, c: 2 }, d: [2] });
  });
});

describe('loadConfig', () => {
  it('fills defaults without a file', async () => {
    const { config } = await loadConfig();
    expect(config.train.epochs).toBe(20);
    expect(config.prep.minWordLength).toBe(1);
    expect(config.dataset.split.seed).toBe(42);
  });

  it('applies defaults < YAML < --set < flags', async () => {
    const f = write('order.yaml', 'train:\n  epochs: 3\n  batchSize: 16\nname: fromfile\n');
    const { config } = await loadConfig({ file: f, sets: ['train.epochs=4', 'name=fromset'], overrides: { name: 'fromflag' } });
    expect(config.train.epochs).toBe(4);
    expect(config.train.batchSize).toBe(16);
    expect(config.train.learningRate).toBe(0.001);
    expect(config.name).toBe('fromflag');
  });

  it('reports every problem with the file name and path', async () => {
    const f = write('bad.yaml', 'train:\n  epochs: ten\n  bogus: 1\nprep:\n  overLength: cut\n');
    const err = await loadConfig({ file: f }).catch((e) => e);
    expect(err).toBeInstanceOf(ConfigError);
    expect(err.exitCode).toBe(2);
    expect(err.message).toContain(f);
    expect(err.message).toContain('train.epochs: expected a positive integer, got "ten"');
    expect(err.message).toContain('train.bogus: unknown key');
    expect(err.message).toContain('prep.overLength: expected one of "truncate", "drop"');
  });

  it('names a missing file', async () => {
    const err = await loadConfig({ file: path.join(dir, 'nope.yaml') }).catch((e) => e);
    expect(err).toBeInstanceOf(ConfigError);
    expect(err.message).toMatch(/nope\.yaml: cannot read config file: no such file/);
  });

  it('rejects invalid YAML and non-mapping documents', async () => {
    await expect(loadConfig({ file: write('syntax.yaml', 'train: [1, 2\n') })).rejects.toThrow(/invalid YAML/);
    await expect(loadConfig({ file: write('list.yaml', '- 1\n- 2\n') })).rejects.toThrow(/top level must be a mapping/);
  });
});

describe('captioner config (CLI)', () => {
  it('prints the resolved config as JSON', async () => {
    const f = write('ok.yaml', 'train:\n  epochs: 7\n');
    const r = await runCli(['config', '--config', f, '--set', 'decode.beam=5', '--json']);
    expect(r.code).toBe(0);
    const cfg = JSON.parse(r.stdout);
    expect(cfg.train.epochs).toBe(7);
    expect(cfg.decode.beam).toBe(5);
  });

  it('exits 2 with a message and no stack trace on a bad config', async () => {
    const f = write('bad2.yaml', 'train:\n  epochs: -1\n');
    const r = await runCli(['config', '--config', f]);
    expect(r.code).toBe(2);
    expect(r.stdout).toBe('');
    expect(r.stderr).toContain('train.epochs: expected a positive integer, got -1');
    expect(r.stderr).not.toMatch(/\n\s+at /);
  });

  it('exits 2 on an unknown command or option', async () => {
    expect((await runCli(['bogus'])).code).toBe(2);
    expect((await runCli(['config', '--nope'])).code).toBe(2);
  });
});

describe('loadConfig base layer (a run folder\'s decode settings)', () => {
  it('sits below the file, --set and the flags, and above the defaults', async () => {
    const base = { decode: { beam: 1, maxLength: 20 } };
    expect((await loadConfig({ base })).config.decode).toMatchObject({ beam: 1, maxLength: 20, batchSize: 32 });
    const f = write('base.yaml', 'decode:\n  beam: 4\n');
    expect((await loadConfig({ base, file: f })).config.decode).toMatchObject({ beam: 4, maxLength: 20 });
    expect((await loadConfig({ base, file: f, sets: ['decode.beam=3'] })).config.decode).toMatchObject({ beam: 3, maxLength: 20 });
    expect((await loadConfig({ base, file: f, sets: ['decode.beam=3'], overrides: { decode: { beam: 2 } } })).config.decode).toMatchObject({ beam: 2, maxLength: 20 });
  });
});
