// `captioner doctor` (src/doctor/report.ts): reports backends, encoder runtimes and machine facts.
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { doctor, formatReport } from '../../src/doctor/report.js';
import { runCli } from '../helpers/cli.js';

describe('doctor', () => {
  it('reports backends, runtimes, CPU, memory and GPU', async () => {
    const r = await doctor('auto');
    expect(r.backends.map((b) => b.package)).toEqual(['tfjs-node-gpu', 'tfjs-node', 'wasm', 'cpu']);
    expect(r.encoders.map((e) => e.name)).toEqual(['onnxruntime-node', 'tfjs']);
    expect(r.cpu.cores).toBeGreaterThan(0);
    expect(r.memory.totalGiB).toBeGreaterThan(0);
    expect(typeof r.gpu.note).toBe('string');
    const text = formatReport(r);
    expect(text).toMatch(/Compute backends/);
    expect(text).toMatch(/ok\s+wasm\s+4\.22\.0\s+SIMD/);
    expect(text).toMatch(/backend auto selects: /);
    expect(text).toMatch(/^GPU: /m);
    for (const b of r.backends.filter((x) => !x.available)) expect(text).toContain(b.reason!);
  });

  it('`captioner doctor --json` prints JSON on stdout (needs dist/: npx tsc -p .)', async () => {
    const res = await runCli(['doctor', '--json']);
    expect(res.code).toBe(0);
    const r = JSON.parse(res.stdout);
    expect(r.backends).toHaveLength(4);
    expect(r.configured).toBe('auto');
  });
});

describe('doctor: telemetry and weights', () => {
  it('says onnxruntime telemetry is off, and lists the VGG16 weight files with their md5 state', async () => {
    const cache = mkdtempSync(path.join(os.tmpdir(), 'doctor-cache-'));
    const prev = process.env.CAPTIONER_CACHE;
    process.env.CAPTIONER_CACHE = cache;
    try {
      mkdirSync(path.join(cache, 'weights'));
      writeFileSync(
        path.join(cache, 'weights', 'vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5'),
        'not the real weights',
      );
      const r = await doctor('auto');
      expect(r.telemetry.onnxruntime).toBe('off');
      expect(r.weights.dir).toBe(path.join(cache, 'weights'));
      const [top, notop] = r.weights.files;
      expect(top).toMatchObject({ kind: 'top', present: false, ok: false });
      expect(notop).toMatchObject({
        kind: 'notop',
        present: true,
        ok: false,
        bytes: 20,
        md5: createHash('md5').update('not the real weights').digest('hex'),
      });
      const text = formatReport(r);
      expect(text).toMatch(/onnxruntime telemetry: off/);
      expect(text).toMatch(/full \(fc2\)\s+not cached \(run `captioner weights vgg16`\)/);
      expect(text).toMatch(/differs from Keras's 6d6bbae143d832006294945121d1f1fc/);
    } finally {
      if (prev === undefined) delete process.env.CAPTIONER_CACHE;
      else process.env.CAPTIONER_CACHE = prev;
      rmSync(cache, { recursive: true, force: true });
    }
  });
});
