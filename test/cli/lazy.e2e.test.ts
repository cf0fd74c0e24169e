// The CLI loads its stages on use: `captioner --help` and `captioner <command> --help` must not load
// TensorFlow.js, sharp or onnxruntime (seconds of start-up paid by every spawn). Checked by recording
// every module a real `bin/captioner.js` process resolves.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { bin, repoRoot } from '../helpers/cli.js';

const dir = mkdtempSync(path.join(tmpdir(), 'lazy-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const hooks = path.join(repoRoot, 'test', 'helpers', 'register-hooks.mjs');
const HEAVY = /@tensorflow|\/sharp\/|onnxruntime|h5wasm/;

/** URLs of the modules `captioner ...args` resolves, and its stdout. */
function loads(args: string[]): { modules: string[]; stdout: string } {
  const logFile = path.join(dir, `${args.join('_').replace(/\W/g, '') || 'none'}.log`);
  const stdout = execFileSync(process.execPath, ['--import', hooks, bin, ...args], {
    cwd: repoRoot,
    env: { ...process.env, CAPTIONER_LOAD_LOG: logFile },
    encoding: 'utf8',
  });
  return { modules: [...new Set(readFileSync(logFile, 'utf8').trim().split('\n'))], stdout };
}

const commands = [
  'demo',
  'demo-data',
  'prep',
  'features',
  'train',
  'eval',
  'caption',
  'serve',
  'score',
  'weights',
  'encoder',
  'doctor',
  'config',
];

describe('lazy CLI', () => {
  it('captioner --help loads no TensorFlow.js, sharp or onnxruntime', () => {
    const { modules, stdout } = loads(['--help']);
    expect(stdout).toContain('Usage: captioner');
    expect(modules.filter((m) => HEAVY.test(m))).toEqual([]);
  });

  it.each(commands)('captioner %s --help loads none of them either, and ends with examples', (cmd) => {
    const { modules, stdout } = loads([cmd, '--help']);
    expect(modules.filter((m) => HEAVY.test(m))).toEqual([]);
    const examples = stdout.slice(stdout.lastIndexOf('Examples:'));
    expect(stdout).toContain('Examples:');
    const lines = examples.split('\n').filter((l) => /^(captioner|find|cat|curl) /.test(l.trim()));
    expect(lines.length).toBeGreaterThanOrEqual(2);
    expect(lines.length).toBeLessThanOrEqual(3);
  });
});
