// `captioner demo`'s refusals (before any work): an --out holding other files, too few images, an unknown
// scene kind. The runs themselves are end-to-end tests: demo.e2e.test.ts.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { runCli } from '../helpers/cli.js';
import { runDemo } from '../../src/demo/run.js';
import { UsageError } from '../../src/errors.js';

let work: string;

beforeAll(async () => {
  work = await fs.mkdtemp(path.join(os.tmpdir(), 'captioner-demo-'));
});

afterAll(async () => {
  await fs.rm(work, { recursive: true, force: true });
});

describe('captioner demo', () => {
  it('refuses an --out holding other files, too few images, and an unknown scene kind', async () => {
    await expect(runDemo({ out: path.join(work, 'kind'), scenes: 'many' as never })).rejects.toThrow(
      /--scenes must be one of single, multi/,
    );
    const bogus = await runCli(['demo', '--out', path.join(work, 'kind'), '--scenes', 'bogus']);
    expect(bogus.code).toBe(2);
    expect(bogus.stderr).toMatch(/'bogus' is invalid.*single, multi/);
    const foreign = path.join(work, 'foreign');
    await fs.mkdir(foreign, { recursive: true });
    await fs.writeFile(path.join(foreign, 'thesis.tex'), 'x');
    await expect(runDemo({ out: foreign })).rejects.toThrow(UsageError);
    await expect(runDemo({ out: path.join(work, 'few'), images: 10 })).rejects.toThrow(/at least 20/);
    expect(await fs.readdir(foreign)).toEqual(['thesis.tex']);
  });
});
