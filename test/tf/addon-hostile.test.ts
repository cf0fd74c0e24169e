// The native addon refuses bad arguments instead of crashing (native/blas.c): in a child process
// (test/tf/addon-hostile-child.mjs) every entry point is called with 2**62, 2**31, 2**53, NaN, +-Infinity,
// -1, fractions, non-numbers, offsets and ranges past the heap or the typed arrays, off a 4-byte boundary,
// in each argument in turn, plus sizes that overflow only together and outputs overlapping inputs. Each
// call must throw the addon's own TypeError or RangeError without touching the heap, OpenBLAS must never
// print a parameter error, and the child must exit 0. The addon is loaded directly, whatever
// CAPTIONER_NATIVE says (this tests the addon, not the engine's choice). Where it is not built or finds no
// OpenBLAS the test says so loudly and skips, except in CI (env CI), which installs OpenBLAS: it fails there.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { addonPath } from '../../src/tf/addon.js';

const CHILD = path.join(import.meta.dirname, 'addon-hostile-child.mjs');
const inCI = ['true', '1'].includes(process.env.CI ?? '');

interface Report {
  exports: string[];
  covered: string[];
  cases: number;
  returned: string[];
  wrongKind: string[];
  heapTouched: string[];
  baseline: string[];
  noBlas?: string;
}

function unavailable(why: string): boolean {
  if (inCI) throw new Error(`test/tf/addon-hostile: the native addon must be built and find OpenBLAS in CI: ${why}`);
  console.warn(`\n*** test/tf/addon-hostile: SKIPPED, the native addon cannot be tested here: ${why} ***\n`);
  return true;
}

describe('the native addon against hostile arguments', () => {
  it('every entry point throws a TypeError or RangeError for every bad number, offset and size, and the process survives', (ctx) => {
    const file = addonPath();
    if (!existsSync(file) && unavailable(`${file} is not built (npm rebuild captioner needs a C compiler)`))
      return ctx.skip();
    const env = { ...process.env };
    delete env.CAPTIONER_NATIVE;
    const r = spawnSync(process.execPath, [CHILD, file], { encoding: 'utf8', env, timeout: 120_000 });
    expect(r.signal, `the child was killed: ${r.stderr}`).toBeNull();
    expect(r.status, r.stderr).toBe(0);
    const report = JSON.parse(r.stdout) as Report;
    if (report.noBlas !== undefined && unavailable(`no OpenBLAS (${report.noBlas})`)) return ctx.skip();
    // OpenBLAS prints " ** On entry to SGEMM parameter number N had an illegal value" and returns when
    // it rejects a parameter; the addon's checks must make that impossible
    expect(r.stderr).toBe('');
    expect(report.baseline, 'the valid calls must work, or the hostile ones prove nothing').toEqual([]);
    expect(report.covered, 'every entry point of the addon has hostile cases').toEqual(report.exports);
    expect(report.cases).toBeGreaterThan(1500);
    expect(report.returned, 'hostile calls that returned normally').toEqual([]);
    expect(report.wrongKind, "calls that threw something other than the addon's TypeError / RangeError").toEqual([]);
    expect(report.heapTouched, 'hostile calls that wrote to the heap').toEqual([]);
  });
});
