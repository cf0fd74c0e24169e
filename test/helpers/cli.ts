// Runs the built CLI (dist/, built by `npm test`'s pretest step) in a child process and captures its output.
import { spawn } from 'node:child_process';
import * as path from 'node:path';

export const repoRoot = path.resolve(import.meta.dirname, '..', '..');
export const bin = path.join(repoRoot, 'bin', 'captioner.js');

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** `env` is laid over this process's; a key set to undefined is left out of the child's environment. */
export function runCli(
  args: string[],
  opts: { cwd?: string; input?: string; env?: Record<string, string | undefined> } = {},
): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [bin, ...args], {
      cwd: opts.cwd ?? repoRoot,
      env: { ...process.env, CAPTIONER_QUIET: '1', ...opts.env },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code: code ?? -1, stdout, stderr }));
    child.stdin.end(opts.input ?? '');
  });
}
