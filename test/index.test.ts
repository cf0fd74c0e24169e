// captioner as a library (src/index.ts), imported BY NAME as a user's program would: a child process in
// the package imports 'captioner' (package.json "exports" -> dist/index.js), captions a file and bytes,
// and sees a typed error for a bad image. A TypeScript file using the API is type-checked against the
// emitted declarations (dist/index.d.ts).
import { execFileSync } from 'node:child_process';
import { promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
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
    const out = JSON.parse(execFileSync(process.execPath, ['--input-type=module', '-e', program], { cwd: repoRoot, encoding: 'utf8', env: { ...process.env, CAPTIONER_QUIET: '1' } }).trim().split('\n').pop()!);
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

  it('type-checks a TypeScript program against the emitted declarations', async () => {
    const file = path.join(repoRoot, 'test', 'fixtures', 'library-usage.ts');
    const tsc = path.join(repoRoot, 'node_modules', 'typescript', 'bin', 'tsc');
    const args = [tsc, '--noEmit', '--strict', '--module', 'nodenext', '--moduleResolution', 'nodenext', '--target', 'es2022', '--skipLibCheck', '--types', 'node', file];
    expect(() => execFileSync(process.execPath, args, { cwd: repoRoot, encoding: 'utf8' })).not.toThrow();
  });
});
