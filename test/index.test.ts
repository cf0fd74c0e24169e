// captioner as a library (src/index.ts), imported BY NAME as a user's program would: a child process in
// the package imports 'captioner' (package.json "exports" -> dist/index.js), captions a file and bytes,
// and sees a typed error for a bad image. A TypeScript file using the API is type-checked against the
// emitted declarations (dist/index.d.ts).
import { execFileSync } from 'node:child_process';
import { promises as fs, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { repoRoot } from './helpers/cli.js';
import { imageFile, makeRun, WORDS } from './caption/fixtures.js';

let dir: string;
let run: string;
let img: string;

beforeAll(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), 'captioner-lib-'));
  ({ run } = await makeRun(path.join(dir, 'model')));
  img = path.join(dir, 'a.jpg');
  await imageFile(img, 1);
  await fs.writeFile(path.join(dir, 'bad.jpg'), 'not an image');
});
afterAll(() => fs.rm(dir, { recursive: true, force: true }));

describe("import { loadCaptioner, ... } from 'captioner'", () => {
  it('captions a path and bytes, throws a DataError for a bad image, and exports the pipeline functions', () => {
    const program = `
      import { readFileSync } from 'node:fs';
      import * as api from 'captioner';
      const c = await api.loadCaptioner(${JSON.stringify(run)}, { backend: 'cpu', threads: 1 });
      const fromPath = await c.caption(${JSON.stringify(img)}, { beam: 2 });
      const fromBytes = await c.caption(readFileSync(${JSON.stringify(img)}), { beam: 2 });
      let error = null;
      try { await c.caption(${JSON.stringify(path.join(dir, 'bad.jpg'))}); } catch (e) { error = { name: e.constructor.name, exitCode: e.exitCode, dataError: e instanceof api.DataError }; }
      await c.dispose();
      const bleu1 = api.score([{ id: 'x', candidate: 'a dog runs', references: ['a dog runs on grass'] }]).Bleu_1;
      const epochs = api.config({ train: { epochs: 3 } }).train.epochs;
      let configError = null;
      try { api.config({ train: { epochz: 3 } }); } catch (e) { configError = e.message; }
      const functions = ['loadCaptioner', 'prepare', 'extractFeatures', 'train', 'evaluate', 'score', 'config', 'inspectEncoder'].filter((f) => typeof api[f] === 'function');
      console.log(JSON.stringify({ fromPath, fromBytes, error, bleu1, epochs, configError, functions }));
    `;
    const out = JSON.parse(
      execFileSync(process.execPath, ['--input-type=module', '-e', program], {
        cwd: repoRoot,
        encoding: 'utf8',
        env: { ...process.env, CAPTIONER_QUIET: '1' },
      })
        .trim()
        .split('\n')
        .pop()!,
    );
    expect(out.fromPath).toEqual(out.fromBytes);
    expect(Object.keys(out.fromPath).sort()).toEqual(['caption', 'logprob', 'tokens']);
    for (const w of out.fromPath.tokens) expect(WORDS).toContain(w);
    expect(out.fromPath.logprob).toBeLessThanOrEqual(0);
    expect(out.error).toEqual({ name: 'DataError', exitCode: 3, dataError: true });
    expect(out.bleu1).toBeGreaterThan(0);
    expect(out.epochs).toBe(3);
    expect(out.configError).toContain('train.epochz: unknown key (did you mean epochs?)');
    expect(out.functions).toHaveLength(8);
  });

  it("captionMany gives a missing file its own failure; every entry point checks its arguments with the CLI's schemas (typed errors)", () => {
    const program = `
      import * as api from 'captioner';
      const c = await api.loadCaptioner(${JSON.stringify(run)}, { backend: 'cpu', threads: 1 });
      const many = await c.captionMany([${JSON.stringify(img)}, ${JSON.stringify(path.join(dir, 'missing.jpg'))}, new Uint8Array([1, 2, 3])]);
      const errors = [];
      const attempt = async (what, f) => {
        try { await f(); errors.push({ what, error: null }); }
        catch (e) { errors.push({ what, name: e.constructor.name, exitCode: e.exitCode, message: e.message }); }
      };
      await attempt('beam', () => c.caption(${JSON.stringify(img)}, { beam: 100000 }));
      await attempt('beamMany', () => c.captionMany([${JSON.stringify(img)}], { beam: 0 }));
      await attempt('unknownOption', () => c.caption(${JSON.stringify(img)}, { beams: 3 }));
      await attempt('image', () => c.caption(42));
      await attempt('loadBeam', () => api.loadCaptioner(${JSON.stringify(run)}, { beam: 51 }));
      await attempt('loadLengths', () => api.loadCaptioner(${JSON.stringify(run)}, { config: { decode: { maxLength: 1e9 } } }));
      await attempt('runDir', () => api.loadCaptioner(7));
      await attempt('prepare', () => api.prepare('x.yaml'));
      await attempt('train', () => api.train(api.config(), { resume: 'yes' }));
      await attempt('features', () => api.extractFeatures(api.config(), { limit: -1 }));
      await attempt('evaluate', () => api.evaluate(api.config({ train: { learningRate: 1e308 } })));
      await attempt('scoreEmpty', () => api.score([]));
      await attempt('scorePair', () => api.score([{ id: 'a', candidate: 5, references: ['a'] }]));
      await attempt('tokenize', () => api.score([{ id: 'a', candidate: 'a', references: ['a'] }], 'weird'));
      await attempt('inspectFile', () => api.inspectEncoder(undefined));
      await attempt('inspectSize', () => api.inspectEncoder('m.onnx', { size: 1e9 }));
      await c.dispose();
      console.log(JSON.stringify({ many, errors }));
    `;
    const out = JSON.parse(
      execFileSync(process.execPath, ['--input-type=module', '-e', program], {
        cwd: repoRoot,
        encoding: 'utf8',
        env: { ...process.env, CAPTIONER_QUIET: '1' },
      })
        .trim()
        .split('\n')
        .pop()!,
    );
    expect(out.many.map((o: { ok: boolean }) => o.ok)).toEqual([true, false, false]);
    expect(out.many[1]).toEqual({ ok: false, error: 'file not found (removed since it was listed?)', kind: 'corrupt' });
    const by = Object.fromEntries(out.errors.map((e: { what: string }) => [e.what, e]));
    const usage = (what: string, message: string | RegExp) => {
      expect(by[what], what).toMatchObject({ name: 'UsageError', exitCode: 2 });
      if (typeof message === 'string') expect(by[what].message).toBe(message);
      else expect(by[what].message).toMatch(message);
    };
    usage('beam', 'caption(): invalid options:\n  beam: expected an integer from 1 to 50, got 100000');
    usage('beamMany', 'captionMany(): invalid options:\n  beam: expected an integer from 1 to 50, got 0');
    usage('unknownOption', 'caption(): invalid options:\n  beams: unknown key');
    usage('image', /^caption\(\): image: expected a file path or the bytes of an image/);
    usage('loadBeam', 'loadCaptioner(): invalid options:\n  beam: expected an integer from 1 to 50, got 51');
    expect(by.loadLengths).toMatchObject({ name: 'ConfigError', exitCode: 2 });
    expect(by.loadLengths.message).toContain('decode.maxLength: expected an integer from 1 to 200, got 1000000000');
    usage('runDir', /^loadCaptioner\(\): expected the path of a run folder/);
    usage(
      'prepare',
      'prepare(): expected a config object (from config({...}) or (await loadConfig({ file })).config), got string "x.yaml"',
    );
    usage('train', 'train(): invalid options:\n  resume: expected true or false');
    usage('features', /^extractFeatures\(\): invalid options:\n {2}limit: /);
    expect(by.evaluate).toMatchObject({ name: 'ConfigError', exitCode: 2 });
    usage(
      'scoreEmpty',
      'score(): invalid pairs:\n  nothing to score: expected at least one { id, candidate, references }',
    );
    usage('scorePair', 'score(): invalid pairs:\n  0.candidate: expected a string');
    usage('tokenize', 'score(): invalid tokenize mode:\n  expected one of "basic", "none"');
    usage('inspectFile', 'inspectEncoder(): expected the path of an ONNX file, got undefined');
    usage(
      'inspectSize',
      'inspectEncoder(): invalid options:\n  size: expected an integer from 1 to 4096, got 1000000000',
    );
  });

  it('loadCaptioner with decoding workers and no dispose() lets the process exit when the work is done', () => {
    // a file, not -e: worker threads inherit --input-type, which only -e accepts
    const file = path.join(dir, 'no-dispose.mjs');
    writeFileSync(
      file,
      `
      import * as api from ${JSON.stringify(pathToFileURL(path.join(repoRoot, 'dist', 'index.js')).href)};
      const c = await api.loadCaptioner(${JSON.stringify(run)}, { backend: 'cpu', threads: 1, decodeWorkers: 2 });
      const [out] = await c.captionMany([${JSON.stringify(img)}, ${JSON.stringify(img)}, ${JSON.stringify(img)}]);
      console.log(JSON.stringify({ ok: out.ok }));
    `,
    );
    // a process kept alive by idle workers would be killed by the timeout, and execFileSync would throw
    const stdout = execFileSync(process.execPath, [file], {
      cwd: repoRoot,
      encoding: 'utf8',
      timeout: 90_000,
      env: { ...process.env, CAPTIONER_QUIET: '1' },
    });
    expect(JSON.parse(stdout.trim().split('\n').pop()!)).toEqual({ ok: true });
  }, 120_000);

  it('type-checks a TypeScript program against the emitted declarations', async () => {
    const file = path.join(repoRoot, 'test', 'fixtures', 'library-usage.ts');
    const tsc = path.join(repoRoot, 'node_modules', 'typescript', 'bin', 'tsc');
    const args = [
      tsc,
      '--noEmit',
      '--strict',
      '--module',
      'nodenext',
      '--moduleResolution',
      'nodenext',
      '--target',
      'es2022',
      '--skipLibCheck',
      '--types',
      'node',
      file,
    ];
    expect(() => execFileSync(process.execPath, args, { cwd: repoRoot, encoding: 'utf8' })).not.toThrow();
  });
});
