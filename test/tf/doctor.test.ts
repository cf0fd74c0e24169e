// `captioner doctor` (src/commands/doctor.ts): reports backends, encoder runtimes and machine facts.
import { describe, expect, it } from 'vitest';
import { doctor, formatReport } from '../../src/commands/doctor.js';
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
