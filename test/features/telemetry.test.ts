// onnxruntime-node writes telemetry unless told not to (/tmp/mat-debug-<pid>.log and
// ~/.cache/Microsoft/DeveloperTools): loadOrt (src/features/onnx/runtime.ts) turns it off. Checked in a
// child process with its own HOME, since the setting is read once when the native library starts; and
// in serve's model worker thread, whose process.env is a copy the native library does not read.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { pathToFileURL } from 'node:url';
import { describe, expect, it } from 'vitest';
import { repoRoot } from '../helpers/cli.js';

const program = `
import { DataType, model, node, valueInfo } from './dist/features/onnx/proto.js';
import { createSession, floatTensor } from './dist/features/onnx/runtime.js';
const bytes = model({ name: 'relu', nodes: [node('Relu', ['x'], ['y'], 'r')], initializers: [],
  inputs: [valueInfo('x', DataType.FLOAT, ['N', 2])], outputs: [valueInfo('y', DataType.FLOAT, ['N', 2])] }).encode();
const s = await createSession(bytes, { threads: 1 });
const out = await s.run({ x: await floatTensor(new Float32Array([1, -1]), [1, 2]) });
console.log(JSON.stringify({ pid: process.pid, y: Array.from(out.y.data) }));
`;

/** Starts the model worker as `captioner serve` does (startWorkerCaptioner), with a fake captioner that runs onnxruntime. */
const workerProgram = `
import { startWorkerCaptioner } from ${JSON.stringify(pathToFileURL(path.join(repoRoot, 'dist', 'serve', 'threaded-captioner.js')).href)};
const c = await startWorkerCaptioner({ module: ${JSON.stringify(path.join(repoRoot, 'test', 'serve', 'workers', 'ort-captioner.mjs'))}, factory: 'createOrtCaptioner', args: [] });
const info = c.info;
await c.dispose();
console.log(JSON.stringify({ pid: process.pid, encoder: info.encoder }));
`;

/** Runs the module `code` (as a file: a worker cannot inherit --input-type) in a child with its own HOME and no
 *  ORT_DISABLE_TELEMETRY; returns its last JSON line and whether telemetry left files. */
function runFresh(code: string): {
  out: { pid: number } & Record<string, unknown>;
  matLog: boolean;
  homeCache: boolean;
} {
  const home = mkdtempSync(path.join(os.tmpdir(), 'ort-home-'));
  try {
    const env: NodeJS.ProcessEnv = { ...process.env, HOME: home };
    delete env.ORT_DISABLE_TELEMETRY;
    const file = path.join(home, 'program.mjs');
    writeFileSync(file, code);
    const out = JSON.parse(
      execFileSync(process.execPath, [file], { cwd: repoRoot, env, encoding: 'utf8' }).trim().split('\n').pop()!,
    );
    const log = path.join(os.tmpdir(), `mat-debug-${out.pid}.log`);
    const matLog = existsSync(log);
    rmSync(log, { force: true });
    return { out, matLog, homeCache: existsSync(path.join(home, '.cache', 'Microsoft')) };
  } finally {
    rmSync(home, { recursive: true, force: true });
  }
}

describe('onnxruntime telemetry', () => {
  it("is off in serve's model worker thread too (the main thread sets it before the worker starts)", () => {
    const r = runFresh(workerProgram);
    expect(r.out.encoder).toBe('relu [1,0]'); // onnxruntime did run in the worker
    expect(r.matLog).toBe(false);
    expect(r.homeCache).toBe(false);
  });

  it('is off by default: a session leaves no /tmp/mat-debug log and nothing under ~/.cache/Microsoft', () => {
    const home = mkdtempSync(path.join(os.tmpdir(), 'ort-home-'));
    try {
      const env: NodeJS.ProcessEnv = { ...process.env, HOME: home };
      delete env.ORT_DISABLE_TELEMETRY;
      const out = JSON.parse(
        execFileSync(process.execPath, ['--input-type=module', '-e', program], {
          cwd: repoRoot,
          env,
          encoding: 'utf8',
        }),
      );
      expect(out.y).toEqual([1, 0]);
      expect(existsSync(path.join(os.tmpdir(), `mat-debug-${out.pid}.log`))).toBe(false);
      expect(existsSync(path.join(home, '.cache', 'Microsoft'))).toBe(false);
    } finally {
      rmSync(home, { recursive: true, force: true });
    }
  });
});
