// onnxruntime's telemetry must be off in every thread that runs it. `captioner serve` runs its model in a
// worker thread, whose process.env is a copy that onnxruntime's native code never reads: the switch has to
// be in the real environment before the worker starts. Checked on the built CLI with its own HOME and
// TMPDIR: after a request is captioned, neither HOME/.cache/Microsoft nor a mat-debug log may exist.
import { spawn } from 'node:child_process';
import { existsSync, promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { imageFile, makeRun } from '../caption/fixtures.js';
import { bin, repoRoot } from '../helpers/cli.js';

let tmp: string;
let run: string;
let image: Buffer;

beforeAll(async () => {
  tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'serve-telemetry-'));
  ({ run } = await makeRun(path.join(tmp, 'm')));
  await imageFile(path.join(tmp, 'a.jpg'), 1);
  image = await fs.readFile(path.join(tmp, 'a.jpg'));
});
afterAll(async () => {
  await fs.rm(tmp, { recursive: true, force: true });
});

describe('captioner serve and onnxruntime telemetry', () => {
  it('leaves no HOME/.cache/Microsoft and no mat-debug log, although the model runs in a worker thread', async () => {
    const home = path.join(tmp, 'home');
    const tmpdir = path.join(tmp, 'tmpdir');
    await fs.mkdir(home);
    await fs.mkdir(tmpdir);
    const env: NodeJS.ProcessEnv = { ...process.env, HOME: home, TMPDIR: tmpdir, CAPTIONER_QUIET: '0' };
    delete env.ORT_DISABLE_TELEMETRY;
    const child = spawn(process.execPath, [bin, 'serve', '--model', run, '--port', '0', '--set', 'threads=1'], { cwd: repoRoot, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += d));
    const exited = new Promise<number | null>((r) => child.on('close', (code) => r(code)));
    try {
      const url = await new Promise<string>((resolve, reject) => {
        child.stderr.on('data', () => {
          const m = /ready .*: open (http:\/\/\S+)/.exec(stderr);
          if (m) resolve(m[1]);
        });
        void exited.then(() => reject(new Error(`serve exited early:\n${stderr}`)));
      });
      const res = await fetch(url + '/api/caption', { method: 'POST', body: new Uint8Array(image) });
      expect(res.status).toBe(200);
      child.kill('SIGTERM');
      expect(await exited).toBe(0);
    } finally {
      child.kill('SIGKILL');
    }
    expect(existsSync(path.join(home, '.cache', 'Microsoft'))).toBe(false);
    expect((await fs.readdir(tmpdir)).filter((n) => n.startsWith('mat-debug'))).toEqual([]);
    expect(existsSync(`/tmp/mat-debug-${child.pid}.log`)).toBe(false);
  }, 120_000);
});
