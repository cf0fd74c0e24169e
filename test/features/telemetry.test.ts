// onnxruntime-node writes telemetry unless told not to (/tmp/mat-debug-<pid>.log and
// ~/.cache/Microsoft/DeveloperTools): loadOrt (src/features/onnx/runtime.ts) turns it off. Checked in a
// child process with its own HOME, since the setting is read once when the native library starts.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
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

describe('onnxruntime telemetry', () => {
  it('is off by default: a session leaves no /tmp/mat-debug log and nothing under ~/.cache/Microsoft', () => {
    const home = mkdtempSync(path.join(os.tmpdir(), 'ort-home-'));
    try {
      const env: NodeJS.ProcessEnv = { ...process.env, HOME: home };
      delete env.ORT_DISABLE_TELEMETRY;
      const out = JSON.parse(execFileSync(process.execPath, ['--input-type=module', '-e', program], { cwd: repoRoot, env, encoding: 'utf8' }));
      expect(out.y).toEqual([1, 0]);
      expect(existsSync(path.join(os.tmpdir(), `mat-debug-${out.pid}.log`))).toBe(false);
      expect(existsSync(path.join(home, '.cache', 'Microsoft'))).toBe(false);
    } finally {
      rmSync(home, { recursive: true, force: true });
    }
  });
});
