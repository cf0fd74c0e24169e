// The pipeline's layering: a module imports only from its own stage or an earlier one, never from a later
// stage (src/features must not reach into src/caption, and so on). Scans every import, export-from and
// dynamic import() with a relative path under src/, type-only ones included (a type is a dependency too).
import { readdirSync, readFileSync } from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { repoRoot } from '../helpers/cli.js';

const SRC = path.join(repoRoot, 'src');

/**
 * Stage ranks, earliest first. A folder (or a top-level file, by its name without .ts) may import from any
 * rank at or below its own. util, text, config, errors and log are the shared base; demo, doctor, commands,
 * cli and the library entry (index) sit on top and may use everything.
 */
const RANKS: readonly (readonly string[])[] = [
  ['util', 'text', 'config', 'errors', 'log'],
  ['tf'],
  ['prep'],
  ['features'],
  ['model', 'view'],
  ['decode'],
  ['train'],
  ['eval'],
  ['caption'],
  ['serve'],
  ['demo', 'doctor', 'commands', 'cli', 'index'],
];

/**
 * Known violations, each too large to fix where it was found: "from -> to" (paths under src/, no .ts),
 * with the reason. Remove an entry when its import goes; the test fails on an entry that no longer matches.
 */
const EXCEPTIONS: Record<string, string> = {};

/**
 * The scoring core (metrics and scoreCaptions: pure, no TF, no I/O) sits with the shared base: training
 * scores its validation captions and SCST rewards with it, and eval reports with it.
 */
const PURE_CORE = ['eval/metrics/', 'eval/score'];

function rankOf(rel: string): number {
  if (PURE_CORE.some((p) => rel.startsWith(p))) return 0;
  const top = rel.split('/')[0].replace(/\.(ts|js)$/, '');
  const r = RANKS.findIndex((names) => names.includes(top));
  if (r < 0) throw new Error(`src/${rel}: no stage rank for "${top}"; add it to RANKS in test/util/layers.test.ts`);
  return r;
}

function sourceFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) return sourceFiles(p);
    return e.name.endsWith('.ts') ? [p] : [];
  });
}

/** Relative specifiers of every static import/export-from and dynamic import() in `code`. */
function importSpecifiers(code: string): string[] {
  const out: string[] = [];
  const re =
    /(?:^|[\s;])(?:import|export)\s[^'"`;]*?\sfrom\s*['"]([^'"]+)['"]|(?:^|[\s;])import\s*['"]([^'"]+)['"]|\bimport\(\s*['"]([^'"]+)['"]\s*\)/gm;
  for (const m of code.matchAll(re)) {
    const spec = m[1] ?? m[2] ?? m[3];
    if (spec.startsWith('.')) out.push(spec);
  }
  return out;
}

const noExt = (rel: string) => rel.replace(/\.(ts|js)$/, '');

/** Every import from a later stage, as "from -> to". */
function violations(): string[] {
  const found: string[] = [];
  for (const file of sourceFiles(SRC)) {
    const from = path.relative(SRC, file).split(path.sep).join('/');
    for (const spec of importSpecifiers(readFileSync(file, 'utf8'))) {
      const target = path
        .relative(SRC, path.resolve(path.dirname(file), spec))
        .split(path.sep)
        .join('/');
      if (target.startsWith('..')) continue; // package.json and the like
      if (rankOf(target) > rankOf(from)) found.push(`${noExt(from)} -> ${noExt(target)}`);
    }
  }
  return [...new Set(found)].sort();
}

describe('layering of src/', () => {
  it('finds the imports it scans (the scanner itself works)', () => {
    const code = [
      "import { a } from '../features/image.js';",
      "import type { B } from './types.js';",
      'import {\n  c,\n  d,\n} from "../util/shard.js";',
      "export { e } from '../text/vocab.js';",
      "export type { F } from '../features/image.js';",
      "import './side-effect.js';",
      "const m = await import('../serve/server.js');",
      "import sharp from 'sharp';",
    ].join('\n');
    expect(importSpecifiers(code)).toEqual([
      '../features/image.js',
      './types.js',
      '../util/shard.js',
      '../text/vocab.js',
      '../features/image.js',
      './side-effect.js',
      '../serve/server.js',
    ]);
  });

  it('has no import from a later stage (util/text/config (+ the scoring core of eval) < tf < prep < features < model/view < decode < train < eval < caption < serve < demo/commands/cli)', () => {
    const bad = violations().filter((v) => !(v in EXCEPTIONS));
    expect(bad, `imports from a later stage:\n  ${bad.join('\n  ')}`).toEqual([]);
  });

  it('lists only exceptions that still exist', () => {
    const now = new Set(violations());
    expect(Object.keys(EXCEPTIONS).filter((e) => !now.has(e))).toEqual([]);
  });
});
