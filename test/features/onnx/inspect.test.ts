// `captioner encoder inspect FILE.onnx` through the CLI (dist/): the model's tensors with their shapes and
// types, what each output is as features, and a config block that, pasted, builds that encoder.
import { promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../../src/config/load.js';
import { createEncoder } from '../../../src/features/encoder.js';
import { inspectEncoder } from '../../../src/index.js';
import { runCli } from '../../helpers/cli.js';
import { testImageModel } from '../../helpers/onnx-models.js';

let work: string;
let multi: string;
beforeAll(async () => {
  work = await fs.mkdtemp(path.join(os.tmpdir(), 'cap-onnx-inspect-'));
  multi = path.join(work, 'multi.onnx');
  await fs.writeFile(multi, testImageModel({ outputs: ['grid', 'tokens', 'pooled', 'argmax', 'rank5'] }));
});
afterAll(async () => {
  await fs.rm(work, { recursive: true, force: true });
});

/** The YAML block of the text report (from its `encoder:` line on). */
const block = (stdout: string) => stdout.slice(stdout.indexOf('\nencoder:') + 1);

describe('captioner encoder inspect', () => {
  it('lists inputs and outputs with types and shapes, says what each output is, and prints a block that builds the encoder', async () => {
    const r = await runCli(['encoder', 'inspect', multi]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toBe('');
    const out = r.stdout;
    expect(out).toMatch(/^\S*multi\.onnx: ONNX model, [\d.]+ KiB, sha256:[0-9a-f]{64}\n/);
    expect(out).toMatch(/inputs:\n {2}x {2}float32 {2}\[N, 3, 32, 32\] {2}image input: nchw, 32x32\n/);
    expect(out).toMatch(/ {2}grid +float32 +\[N, 6, 4, 4\] +grid 4x4 of 6 channels \(chw\) -> attention/);
    expect(out).toMatch(/ {2}tokens +float32 +\[N, 16, 6\] +tokens: 16 x 6 -> attention/);
    expect(out).toMatch(/ {2}pooled +float32 +\[N, 6\] +vector \[6\] -> merge\n/);
    expect(out).toMatch(/ {2}argmax +int64 +\[N, 4, 4\] +\(int64, not float32: cannot be cached as features\)/);
    expect(out).toMatch(
      / {2}rank5 +float32 +\[N, 1, 6, 4, 4\] +\(output "rank5" has shape \[N, 1, 6, 4, 4\], 4 dimensions after the batch/,
    );
    expect(out).toMatch(/output: grid {2}# or tokens \(tokens\), pooled \(vector\)/);
    // pasted as it is, the block is a valid config that builds this encoder
    const file = path.join(work, 'pasted.yaml');
    await fs.writeFile(file, block(out));
    const { config } = await loadConfig({ file });
    expect(config.encoder).toMatchObject({
      type: 'onnx',
      onnx: { path: multi, input: 'x', output: 'grid', size: 32, layout: 'nchw', resize: 'shorter', range: '0-1' },
    });
    const enc = await createEncoder(config.encoder, { threads: 1 });
    try {
      expect(enc.info.shape).toEqual([4, 4, 6]);
    } finally {
      await enc.dispose();
    }
  });

  it('is a library call too (inspectEncoder)', async () => {
    const r = await inspectEncoder(multi);
    expect(r.chosen).toBe('grid');
    expect(r.outputs.map((o) => [o.name, o.kind ?? null])).toEqual([
      ['grid', 'grid'],
      ['tokens', 'tokens'],
      ['pooled', 'vector'],
      ['argmax', null],
      ['rank5', null],
    ]);
    expect(r.config?.encoder.onnx).toMatchObject({ path: multi, input: 'x', output: 'grid', size: 32 });
  });

  it('--json gives the same as data; --output picks the output of the block', async () => {
    const r = await runCli(['encoder', 'inspect', multi, '--json', '--output', 'pooled']);
    expect(r.code, r.stderr).toBe(0);
    const j = JSON.parse(r.stdout);
    expect(j).toMatchObject({
      file: multi,
      inputs: [{ name: 'x', type: 'float32', shape: ['N', 3, 32, 32] }],
      input: { name: 'x', layout: 'nchw', size: 32 },
      chosen: 'pooled',
    });
    expect(j.sha256).toMatch(/^[0-9a-f]{64}$/);
    const byName = Object.fromEntries(j.outputs.map((o: { name: string }) => [o.name, o]));
    expect(byName.grid).toMatchObject({
      type: 'float32',
      shape: ['N', 6, 4, 4],
      kind: 'grid',
      modelShape: [6, 4, 4],
      cached: [4, 4, 6],
      layout: 'chw',
    });
    expect(byName.tokens).toMatchObject({ kind: 'tokens', cached: [16, 6] });
    expect(byName.pooled).toMatchObject({ kind: 'vector', cached: [6], decoders: ['merge'] });
    expect(byName.argmax.kind).toBeUndefined();
    expect(byName.argmax.note).toMatch(/not float32/);
    expect(j.config.encoder).toMatchObject({ type: 'onnx', onnx: { path: multi, output: 'pooled' } });
    const bad = await runCli(['encoder', 'inspect', multi, '--output', 'logits']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(
      /--output logits: \S*multi\.onnx has no such output; its outputs: grid, tokens, pooled, argmax, rank5/,
    );
  });

  it('shows symbolic dims; a dynamic size needs --size, which then shows what each output is', async () => {
    const dyn = path.join(work, 'dynamic.onnx');
    await fs.writeFile(dyn, testImageModel({ size: 'dynamic', channels: 5, outputs: ['grid', 'tokens'] }));
    const r = await runCli(['encoder', 'inspect', dyn]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(
      / {2}x {2}float32 {2}\[N, 3, S, S\]\n {2}! input "x" float32 \[N, 3, S, S\] has a dynamic height and width.*set encoder\.onnx\.size/,
    );
    expect(r.stdout).toMatch(
      / {2}grid +float32 +\[N, 5, G, G\]\n {2}tokens +float32 +\[N, T, 5\]\n {2}\(not run.*--size/,
    );
    expect(r.stdout).toMatch(/size: 224 {2}# the side the model was trained at/);
    const sized = await runCli(['encoder', 'inspect', dyn, '--size', '48']);
    expect(sized.stdout).toMatch(/grid +float32 +\[N, 5, G, G\] +grid 6x6 of 5 channels \(chw\)/);
    expect(sized.stdout).toMatch(/tokens +float32 +\[N, T, 5\] +tokens: 36 x 5/);
    expect(sized.stdout).toMatch(/\n {4}size: 48\n/);
  });

  it('a model that cannot be an image encoder gets no block; a file that is not ONNX exits 4 without a stack trace', async () => {
    const two = path.join(work, 'two-inputs.onnx');
    await fs.writeFile(two, testImageModel({ extraInput: true, outputs: ['pooled'] }));
    const r = await runCli(['encoder', 'inspect', two]);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/! the model has 2 inputs/);
    expect(r.stdout).toMatch(/# No config block: this model cannot be used as an image encoder as it is/);
    expect(r.stdout).not.toMatch(/\nencoder:/);

    const junk = path.join(work, 'notes.onnx');
    await fs.writeFile(junk, 'these are not weights\n');
    const j = await runCli(['encoder', 'inspect', junk]);
    expect(j.code).toBe(4);
    expect(j.stdout).toBe('');
    expect(j.stderr).toBe(
      `error: ${junk}: is not an ONNX model (onnxruntime cannot parse it as one); give the .onnx file written by torch.onnx.export, tf2onnx or onnx.save\n`,
    );
    const missing = await runCli(['encoder', 'inspect', path.join(work, 'nope.onnx')]);
    expect(missing.code).toBe(4);
    expect(missing.stderr).toMatch(/nope\.onnx: no such file/);
  });
});
