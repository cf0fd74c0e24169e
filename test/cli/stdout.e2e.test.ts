// Every write of data to stdout is checked to the end (src/util/stdout.ts): a full disk is one error line and
// exit 3 (never exit 0 with a short file), a reader that went away is a quiet 141. Unit checks of writeOut,
// then the built CLI's data-printing commands with stdout on /dev/full. (caption: test/caption/outputs.e2e.test.ts.)
import { spawn } from 'node:child_process';
import { closeSync, openSync, promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DataError, OutputClosed } from '../../src/errors.js';
import { writeOut } from '../../src/util/stdout.js';
import { bin, repoRoot } from '../helpers/cli.js';
import { testImageModel } from '../helpers/onnx-models.js';

process.env.CAPTIONER_QUIET = '1';

/** A stream whose writes fail with `code` (or succeed when null). */
function failing(code: string | null): Writable {
  return new Writable({
    write(_chunk, _enc, cb) {
      cb(code ? Object.assign(new Error(`write ${code}`), { code }) : null);
    },
  });
}

describe('writeOut', () => {
  it('resolves once written; rejects with DataError for a full disk and OutputClosed for a closed reader, then and later', async () => {
    await expect(writeOut('x\n', failing(null))).resolves.toBeUndefined();
    const full = failing('ENOSPC');
    const e = await writeOut('x\n', full).catch((x) => x);
    expect(e).toBeInstanceOf(DataError);
    expect(e.message).toBe('cannot write to stdout: no space left on device (ENOSPC)');
    expect(e.exitCode).toBe(3);
    // the stream is destroyed by then: a later write still names the first error
    const later = await writeOut('y\n', full).catch((x) => x);
    expect(later.message).toBe('cannot write to stdout: no space left on device (ENOSPC)');
    const closed = await writeOut('x\n', failing('EPIPE')).catch((x) => x);
    expect(closed).toBeInstanceOf(OutputClosed);
    expect(closed.exitCode).toBe(141);
  });
});

/** Run the built CLI with stdout on /dev/full. */
function toFullDisk(args: string[]): Promise<{ code: number | null; stderr: string }> {
  const full = openSync('/dev/full', 'w');
  const child = spawn(process.execPath, [bin, ...args], {
    cwd: repoRoot,
    env: { ...process.env, CAPTIONER_QUIET: '1' },
    stdio: ['ignore', full, 'pipe'],
  });
  closeSync(full);
  let stderr = '';
  child.stderr!.on('data', (d) => (stderr += d));
  return new Promise((resolve) => child.on('close', (code) => resolve({ code, stderr })));
}

const LINE = 'error: cannot write to stdout: no space left on device (ENOSPC)\n';

let dir: string;
let fx: { dir: string; model: string; prepared: string };
beforeAll(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), 'captioner-stdout-'));
  const { buildTrainedRun } = await import('../eval/run-fixture.js');
  fx = await buildTrainedRun(path.join(dir, 'run'));
}, 120_000);
afterAll(async () => {
  await fs.rm(dir, { recursive: true, force: true });
});

describe('commands that print data, with stdout on a full disk', () => {
  it.each([
    ['config', ['config']],
    ['config --json', ['config', '--json']],
    ['config --init -', ['config', '--init', '-']],
    ['doctor', ['doctor', '--set', 'backend=cpu']],
    ['--help', ['--help']],
    ['caption --help', ['caption', '--help']],
  ])(
    '%s: exit 3 and one error line',
    async (_name, args) => {
      const r = await toFullDisk(args);
      expect(r.stderr).toBe(LINE);
      expect(r.code).toBe(3);
    },
    60_000,
  );

  it('score (table and --json) and eval (table and --json): exit 3 and the error line, no stack trace', async () => {
    const results = path.join(fx.model, 'eval-test', 'results.json');
    const ev = await toFullDisk(['eval', '--model', fx.model, '--set', 'backend=cpu']);
    expect(ev.code).toBe(3);
    expect(ev.stderr.endsWith(LINE)).toBe(true);
    expect(ev.stderr.split(LINE)).toHaveLength(2); // once
    expect(ev.stderr).not.toMatch(/internal error|\n\s+at /);
    expect((await toFullDisk(['eval', '--model', fx.model, '--set', 'backend=cpu', '--json'])).code).toBe(3);
    for (const extra of [[], ['--json']]) {
      const r = await toFullDisk(['score', '--candidates', results, '--references', fx.prepared, ...extra]);
      expect(r.stderr).toBe(LINE);
      expect(r.code).toBe(3);
    }
  }, 120_000);

  it('encoder inspect (text and --json): exit 3 and one error line', async () => {
    const model = path.join(dir, 'tiny.onnx');
    await fs.writeFile(model, testImageModel());
    for (const extra of [[], ['--json']]) {
      const r = await toFullDisk(['encoder', 'inspect', model, ...extra]);
      expect(r.stderr).toBe(LINE);
      expect(r.code).toBe(3);
    }
  });
});
