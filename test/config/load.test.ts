import { mkdtempSync, promises as fs, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  closestKey,
  deepMerge,
  editDistance,
  loadConfig,
  parseSet,
  renameDeprecatedKeys,
  schemaKeysAt,
} from '../../src/config/load.js';
import { ConfigSchema, DEPRECATED_KEYS } from '../../src/config/schema.js';
import { config as libraryConfig } from '../../src/index.js';
import { configTemplate, installedSchemaPath, schemaRefFor } from '../../src/config/template.js';
import YAML from 'yaml';
import { ConfigError } from '../../src/errors.js';
import { runCli } from '../helpers/cli.js';

const dir = mkdtempSync(path.join(tmpdir(), 'cfg-'));
const write = (name: string, text: string) => {
  const f = path.join(dir, name);
  writeFileSync(f, text);
  return f;
};

// "billion laughs": 9 levels of 9 aliases would expand to 9^9 strings
const bomb = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
  .concat(
    'bcdefghi'.split('').map(
      (k, i) =>
        `${k}: &${k} [${Array(9)
          .fill('*' + 'abcdefghi'[i])
          .join(', ')}]`,
    ),
  )
  .join('\n');

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
    const { config } = await loadConfig({
      file: f,
      sets: ['train.epochs=4', 'name=fromset'],
      overrides: { name: 'fromflag' },
    });
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
    expect(err.message).toContain('train.epochs: expected an integer from 1 to 10000, got "ten"');
    expect(err.message).toContain('train.bogus: unknown key');
    expect(err.message).not.toContain('train.bogus: unknown key (did you mean');
    expect(err.message).toContain('prep.overLength: expected one of "truncate", "drop"');
  });

  it('bounds numeric settings whose huge values crash or hang a stage', async () => {
    const bad = {
      'decode.beam': 1_000_000,
      'decode.maxLength': 1e9,
      'decode.batchSize': 100_000,
      'prep.maxLength': 10_000,
      'features.batchSize': 4096,
      'features.chunkSize': 1e7,
      'model.units': 1e6,
      'train.batchSize': 1e6,
      'train.epochs': 1e7,
      'caption.batchSize': 1e4,
      'serve.maxBeam': 1000,
      'serve.requestTimeoutMs': 2 ** 31,
      threads: 100_000,
    };
    const err = await loadConfig({ sets: Object.entries(bad).map(([k, v]) => `${k}=${v}`) }).catch((e) => e);
    expect(err).toBeInstanceOf(ConfigError);
    expect(err.message).toMatch(/^--set: invalid config:/);
    expect(err.message).toContain('decode.beam: expected an integer from 1 to 50, got 1000000');
    expect(err.message).toContain('decode.maxLength: expected an integer from 1 to 200, got 1000000000');
    for (const k of Object.keys(bad)) expect(err.message).toContain(`${k}: expected an integer from `);
    // the bounds themselves are allowed
    const ok = await loadConfig({ sets: ['decode.beam=50', 'decode.maxLength=200', 'serve.maxBeam=50'] });
    expect(ok.config.decode.beam).toBe(50);
  });

  it('gives every number of the schema a finite upper bound', () => {
    const unbounded: string[] = [];
    type Node = { maxValue?: number; _zod: { def: Record<string, unknown> & { type: string } } };
    const walk = (node: Node, at: string): void => {
      const def = node._zod.def;
      if (def.type === 'number') {
        if (!Number.isFinite(node.maxValue)) unbounded.push(at);
      } else if (def.type === 'object') {
        for (const [k, v] of Object.entries(def.shape as Record<string, Node>)) walk(v, at ? `${at}.${k}` : k);
      } else if (def.innerType) walk(def.innerType as Node, at);
      else if (def.type === 'array') walk(def.element as Node, `${at}[]`);
      else if (def.type === 'union') (def.options as Node[]).forEach((o) => walk(o, at));
    };
    walk(ConfigSchema as unknown as Node, '');
    expect(unbounded).toEqual([]);
  });

  it('refuses the huge numbers that used to pass (1e308 learning rate, clip norm and alpha; 1e15 minCount), as path: message', async () => {
    const sets = [
      'train.learningRate=1e308',
      'train.clipNorm=1e308',
      'decode.alpha=1e308',
      'prep.minCount=1e15',
      'train.scst.learningRate=2',
      'encoder.seed=1e20',
      'model.dropout=1',
    ];
    const err = await loadConfig({ sets }).catch((e) => e);
    expect(err).toBeInstanceOf(ConfigError);
    expect(err.message).toBe(
      [
        '--set: invalid config:',
        '  prep.minCount: expected an integer from 1 to 1000000, got 1000000000000000',
        '  encoder.seed: expected an integer from 0 to 4294967295, got 100000000000000000000',
        '  model.dropout: expected a number from 0 to 0.9, got 1',
        '  train.learningRate: expected a number above 0 and at most 1, got 1e+308',
        '  train.clipNorm: expected a number above 0 and at most 1000000, got 1e+308',
        '  train.scst.learningRate: expected a number above 0 and at most 1, got 2',
        '  decode.alpha: expected a number from 0 to 10, got 1e+308',
      ].join('\n'),
    );
    await expect(loadConfig({ sets: ['train.learningRate=0'] })).rejects.toThrow(
      /train\.learningRate: expected a number above 0 and at most 1, got 0/,
    );
    await expect(loadConfig({ sets: ['train.learningRate=.inf'] })).rejects.toThrow(
      /train\.learningRate: expected a number above 0 and at most 1, got null/,
    );
  });

  it('names command-line flags as the source of a bad flag value', async () => {
    await expect(loadConfig({ overrides: { decode: { beam: 1_000_000 } } })).rejects.toThrow(
      /^command-line flags: invalid config:\n {2}decode\.beam: expected an integer from 1 to 50, got 1000000/,
    );
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

  it('refuses a YAML alias bomb as a ConfigError naming the file', async () => {
    const f = write('bomb.yaml', bomb + '\n');
    const err = await loadConfig({ file: f }).catch((e) => e);
    expect(err).toBeInstanceOf(ConfigError);
    expect(err.message).toContain(`${f}: invalid YAML:`);
    expect(err.message).toMatch(/more than 100 alias expansions/);
  });

  it('still expands a few aliases', async () => {
    const f = write('alias.yaml', 'x: &n 7\ntrain:\n  epochs: *n\n');
    await expect(loadConfig({ file: f })).rejects.toThrow(/x: unknown key/);
    const ok = await loadConfig({ file: write('alias2.yaml', 'train: &t\n  epochs: 3\n') });
    expect(ok.config.train.epochs).toBe(3);
  });
});

describe('did you mean', () => {
  it('suggests the known key for a wrong case or a small typo, and nothing for a stranger', async () => {
    const f = write('typo.yaml', 'train:\n  batchsize: 3\n  epochz: 2\n  wibble: 1\nmodle: {}\n');
    const err = await loadConfig({ file: f }).catch((e) => e);
    expect(err).toBeInstanceOf(ConfigError);
    expect(err.message).toContain('train.batchsize: unknown key (did you mean batchSize?)');
    expect(err.message).toContain('train.epochz: unknown key (did you mean epochs?)');
    expect(err.message).toMatch(/train\.wibble: unknown key$/m);
    expect(err.message).toContain('modle: unknown key (did you mean model?)');
  });

  it('says what a renamed key is called now; checks the encoder settings together', async () => {
    const f = write(
      'renamed.yaml',
      'encoder:\n  name: onnx\n  onnx:\n    path: m.onnx\n    inputSize: 224\n    inputName: x\n    outputName: y\n    scale: 1\n',
    );
    const err = await loadConfig({ file: f }).catch((e) => e);
    expect(err).toBeInstanceOf(ConfigError);
    for (const [from, to] of [
      ['encoder.name', 'encoder.type'],
      ['encoder.onnx.inputSize', 'encoder.onnx.size'],
      ['encoder.onnx.inputName', 'encoder.onnx.input'],
      ['encoder.onnx.outputName', 'encoder.onnx.output'],
      ['encoder.onnx.scale', 'encoder.onnx.range'],
    ]) {
      expect(err.message).toContain(`${from}: renamed to ${to}`);
    }
    const none = await loadConfig({ file: write('no-onnx.yaml', 'encoder:\n  type: onnx\n') }).catch((e) => e);
    expect(none.message).toMatch(/encoder\.onnx: required when encoder\.type is onnx: at least encoder\.onnx\.path/);
    const crop = await loadConfig({
      file: write('crop.yaml', 'encoder:\n  type: onnx\n  onnx: { path: m.onnx, size: 224, resizeSize: 200 }\n'),
    }).catch((e) => e);
    expect(crop.message).toMatch(/encoder\.onnx\.resizeSize: must be at least size \(224\)/);
    const stretch = await loadConfig({
      file: write(
        'stretch.yaml',
        'encoder:\n  type: onnx\n  onnx: { path: m.onnx, resize: stretch, resizeSize: 256 }\n',
      ),
    }).catch((e) => e);
    expect(stretch.message).toMatch(/encoder\.onnx\.resizeSize: applies to resize shorter only/);
    const ok = await loadConfig({ file: write('onnx-ok.yaml', 'encoder:\n  type: onnx\n  onnx: { path: m.onnx }\n') });
    expect(ok.config.encoder.onnx).toMatchObject({
      path: 'm.onnx',
      resize: 'shorter',
      interpolation: 'bilinear',
      range: '0-1',
      layout: 'auto',
      outputLayout: 'auto',
    });
  });

  it('knows the keys at every level of the schema', () => {
    expect(schemaKeysAt([])).toContain('decode');
    expect(schemaKeysAt(['dataset', 'split', 'ratios'])).toEqual(['train', 'val', 'test']);
    expect(schemaKeysAt(['nope'])).toEqual([]);
  });

  it('edit distance counts a swap of neighbours as one edit', () => {
    expect(editDistance('modle', 'model')).toBe(1);
    expect(editDistance('', 'abc')).toBe(3);
    expect(editDistance('kitten', 'sitting')).toBe(3);
    expect(closestKey('BEAM', ['beam', 'maxLength'])).toBe('beam');
    expect(closestKey('xyz', ['beam', 'maxLength'])).toBeUndefined();
  });
});

describe('config --init template', () => {
  it('parses back to exactly the defaults, and every field is in it with its description', () => {
    const text = configTemplate('./captioner.schema.json');
    expect(text.split('\n')[0]).toBe('# yaml-language-server: $schema=./captioner.schema.json');
    expect(YAML.parse(text)).toEqual(JSON.parse(JSON.stringify(ConfigSchema.parse({}))));
    for (const line of text.split('\n')) expect(line.length).toBeLessThanOrEqual(140);
    expect(text).toContain('# Adam learning rate at the start');
    expect(text).toMatch(/^ {2}# onnx:$/m); // optional section without default: commented out
  });

  it('points at the installed JSON Schema, relatively when close and absolutely when far', () => {
    const schema = installedSchemaPath();
    expect(readFileSync(schema, 'utf8')).toContain('"$schema"');
    expect(schemaRefFor(path.join(path.dirname(schema), 'x.yaml'))).toBe('captioner.schema.json');
    expect(schemaRefFor('/elsewhere/a/b/c/x.yaml', '/opt/lib/captioner/configs/captioner.schema.json')).toBe(
      '/opt/lib/captioner/configs/captioner.schema.json',
    );
    expect(schemaRefFor('/opt/lib/my.yaml', '/opt/lib/captioner/configs/captioner.schema.json')).toBe(
      'captioner/configs/captioner.schema.json',
    );
  });
});

describe('captioner config (CLI)', () => {
  it('config --init - prints the template on stdout (and writes no file named -)', async () => {
    const r = await runCli(['config', '--init', '-'], { cwd: dir });
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^# yaml-language-server: \$schema=\/.*captioner\.schema\.json\n/);
    expect(YAML.parse(r.stdout).train.epochs).toBe(20);
    await expect(fs.stat(path.join(dir, '-'))).rejects.toThrow();
    // --force replaces a config file, never a device (as root, the rename would replace /dev/null itself)
    const dev = await runCli(['config', '--init', '/dev/null', '--force']);
    expect(dev.code).toBe(2);
    expect(dev.stderr).toBe(
      'error: /dev/null: is not a regular file; --init writes a new config file (use --init - to print it)\n',
    );
    expect((await fs.stat('/dev/null')).isCharacterDevice()).toBe(true);
  });

  it('config --init writes a commented config that loads, and refuses to overwrite without --force', async () => {
    const f = path.join(dir, 'init.yaml');
    const r = await runCli(['config', '--init', f]);
    expect(r.code).toBe(0);
    const text = readFileSync(f, 'utf8');
    expect(text).toMatch(/^# yaml-language-server: \$schema=\S+captioner\.schema\.json$/m);
    const loaded = await loadConfig({ file: f });
    expect(loaded.config).toEqual(ConfigSchema.parse({}));
    writeFileSync(f, 'name: mine\n');
    const again = await runCli(['config', '--init', f]);
    expect(again.code).toBe(2);
    expect(again.stderr).toContain('already exists');
    expect(readFileSync(f, 'utf8')).toBe('name: mine\n');
    expect((await runCli(['config', '--init', f, '--force'])).code).toBe(0);
  });

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
    expect(r.stderr).toContain('train.epochs: expected an integer from 1 to 10000, got -1');
    expect(r.stderr).not.toMatch(/\n\s+at /);
  });

  it('caption --beam 1000000 is a config error (exit 2), not a wasm crash', async () => {
    const r = await runCli(['caption', '--model', path.join(dir, 'no-model'), '--beam', '1000000', dir]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('decode.beam: expected an integer from 1 to 50, got 1000000');
    expect(r.stderr).not.toMatch(/\n\s+at /);
  });

  it('exits 2 on a YAML alias bomb, with no stack trace', async () => {
    const r = await runCli(['config', '--config', write('bomb2.yaml', bomb + '\n')]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/bomb2\.yaml: invalid YAML: .*alias/);
    expect(r.stderr).not.toMatch(/\n\s+at /);
  });

  it('exits 2 on an unknown command or option', async () => {
    expect((await runCli(['bogus'])).code).toBe(2);
    expect((await runCli(['config', '--nope'])).code).toBe(2);
  });
});

/** What `fn` writes on stderr (log.warn), with its value. */
async function captureStderr<T>(fn: () => Promise<T> | T): Promise<{ value: T; text: string }> {
  const orig = process.stderr.write.bind(process.stderr);
  let text = '';
  process.stderr.write = ((c: string | Uint8Array) => ((text += String(c)), true)) as typeof process.stderr.write;
  try {
    return { value: await fn(), text };
  } finally {
    process.stderr.write = orig;
  }
}

describe('deprecated keys (features.shardBytes / shardSize, now chunkBytes / chunkSize)', () => {
  it('are accepted from a file and from --set, mapped to the new keys, with one warning each naming the new key', async () => {
    const f = write('old-keys.yaml', 'features:\n  shardBytes: 4096\n  shardSize: 16\n');
    const { value, text } = await captureStderr(() => loadConfig({ file: f }));
    expect(value.config.features).toMatchObject({ chunkBytes: 4096, chunkSize: 16 });
    expect(value.config.features).not.toHaveProperty('shardBytes');
    expect(value.config.features).not.toHaveProperty('shardSize');
    const lines = text.trim().split('\n');
    expect(lines).toEqual([
      `warning: ${f}: features.shardBytes is deprecated: it is now features.chunkBytes (the old name still works, for now)`,
      `warning: ${f}: features.shardSize is deprecated: it is now features.chunkSize (the old name still works, for now)`,
    ]);
    // the same config loaded again in this process (caption and eval load theirs twice): no second warning
    expect((await captureStderr(() => loadConfig({ file: f }))).text).toBe('');
    const set = await captureStderr(() => loadConfig({ sets: ['features.shardSize=3'] }));
    expect(set.value.config.features.chunkSize).toBe(3);
    expect(set.text).toMatch(/^warning: --set: features\.shardSize is deprecated: it is now features\.chunkSize/);
    // an old name in the file, overridden by --set under the old name too: the later layer wins as usual
    const both = await captureStderr(() => loadConfig({ file: f, sets: ['features.shardSize=5'] }));
    expect(both.value.config.features.chunkSize).toBe(5);
    // the library's config() takes them as well
    expect(
      (await captureStderr(() => libraryConfig({ features: { shardBytes: 999 } }))).value.features.chunkBytes,
    ).toBe(999);
  });

  it('given under both names is a config error (path: message), and a bad old-named value is reported under the name written', async () => {
    const f = write('both-keys.yaml', 'features:\n  shardSize: 16\n  chunkSize: 32\n');
    const err = await loadConfig({ file: f }).catch((e) => e);
    expect(err).toBeInstanceOf(ConfigError);
    expect(err.message).toBe(
      `${f}: invalid config:\n  features.shardSize: is the old name of features.chunkSize, which is also given; keep only features.chunkSize`,
    );
    const mixed = await loadConfig({ file: f, sets: ['features.chunkSize=8'] }).catch((e) => e);
    expect(mixed.message).toMatch(/features\.shardSize: is the old name of features\.chunkSize/);
    const viaSet = await loadConfig({ sets: ['features.chunkBytes=8', 'features.shardBytes=9'] }).catch((e) => e);
    expect(viaSet.message).toContain(
      'features.shardBytes: is the old name of features.chunkBytes, which is also given',
    );
    const bad = await loadConfig({ sets: ['features.shardSize=0', 'train.epochs=0'] }).catch((e) => e);
    expect(bad).toBeInstanceOf(ConfigError);
    expect(bad.message).toContain(
      'features.shardSize (now features.chunkSize): expected an integer from 1 to 1000000, got 0',
    );
    expect(bad.message).toContain('train.epochs: expected an integer from 1 to 10000, got 0');
  });

  it('renameDeprecatedKeys leaves its input as it was; every new name is a key of the schema, every old one is not', () => {
    const raw = { features: { shardBytes: 1, dtype: 'float16' }, train: { epochs: 2 } };
    const copy = structuredClone(raw);
    const out = renameDeprecatedKeys(raw);
    expect(raw).toEqual(copy);
    expect(out.raw).toEqual({ features: { chunkBytes: 1, dtype: 'float16' }, train: { epochs: 2 } });
    expect(out.moved).toEqual([['features.shardBytes', 'features.chunkBytes']]);
    expect(renameDeprecatedKeys('x').raw).toBe('x');
    for (const [from, to] of Object.entries(DEPRECATED_KEYS)) {
      const at = (key: string) => schemaKeysAt(key.split('.').slice(0, -1));
      expect(at(to)).toContain(to.split('.').pop());
      expect(at(from)).not.toContain(from.split('.').pop());
    }
  });

  it('on the command line: old keys work with a warning, both names exit 2 without a stack trace', async () => {
    const ok = await runCli(['config', '--set', 'features.shardSize=7', '--json']);
    expect(ok.code).toBe(0);
    expect(JSON.parse(ok.stdout).features.chunkSize).toBe(7);
    expect(ok.stderr.match(/features\.shardSize is deprecated: it is now features\.chunkSize/g)).toHaveLength(1);
    const clash = await runCli(['config', '--set', 'features.shardSize=7', '--set', 'features.chunkSize=8']);
    expect(clash.code).toBe(2);
    expect(clash.stdout).toBe('');
    expect(clash.stderr).toContain('features.shardSize: is the old name of features.chunkSize, which is also given');
    expect(clash.stderr).not.toMatch(/\n\s+at /);
  });
});

describe("loadConfig base layer (a run folder's decode settings)", () => {
  it('sits below the file, --set and the flags, and above the defaults', async () => {
    const base = { decode: { beam: 1, maxLength: 20 } };
    expect((await loadConfig({ base })).config.decode).toMatchObject({ beam: 1, maxLength: 20, batchSize: 32 });
    const f = write('base.yaml', 'decode:\n  beam: 4\n');
    expect((await loadConfig({ base, file: f })).config.decode).toMatchObject({ beam: 4, maxLength: 20 });
    expect((await loadConfig({ base, file: f, sets: ['decode.beam=3'] })).config.decode).toMatchObject({
      beam: 3,
      maxLength: 20,
    });
    expect(
      (await loadConfig({ base, file: f, sets: ['decode.beam=3'], overrides: { decode: { beam: 2 } } })).config.decode,
    ).toMatchObject({ beam: 2, maxLength: 20 });
  });
});
