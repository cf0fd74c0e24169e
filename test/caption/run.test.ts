// runCaption with injected stages (no model): output file handling, resume, read failures, stdout lines.
import { execFileSync } from 'node:child_process';
import { promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { PassThrough } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfigSchema } from '../../src/config/schema.js';
import { PartialFailure, UsageError } from '../../src/errors.js';
import { readFailure, readImageFile, runCaption } from '../../src/caption/run.js';
import type { CaptionStages } from '../../src/caption/pipeline.js';
import { ImageError } from '../../src/features/image.js';

let dir: string;
const config = ConfigSchema.parse({});

const stages = (seen: string[] = []): CaptionStages => ({
  async load(file) {
    seen.push(path.basename(file));
    const bytes = await readImageFile(file);
    if (bytes.toString().startsWith('bad')) throw new ImageError('corrupt', 'damaged or truncated image (test)');
    return new Uint8Array(bytes);
  },
  encode: async (imgs) => imgs.map((i) => Float32Array.of(i.length)),
  caption: async (fs_) => fs_.map((f) => ({ caption: `len ${f[0]}`, logprob: -f[0] })),
});

function capture(): { stream: PassThrough; text: () => string } {
  const stream = new PassThrough();
  let text = '';
  stream.on('data', (d) => (text += d));
  return { stream, text: () => text };
}

beforeAll(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), 'captioner-run-'));
  for (const [name, body] of [
    ['1.jpg', 'x'],
    ['2.jpg', 'xx'],
    ['3.jpg', 'bad'],
    ['4.png', 'xxxx'],
  ])
    await fs.writeFile(path.join(dir, name), body);
});

afterAll(async () => {
  await fs.rm(dir, { recursive: true, force: true });
});

describe('runCaption', () => {
  it('writes a line per image to stdout and ends with PartialFailure when some fail', async () => {
    const out = capture();
    const e = await runCaption(config, { inputs: [dir], model: 'unused', stages: stages(), stdout: out.stream }).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(PartialFailure);
    expect(out.text()).toBe(
      [
        { image: path.join(dir, '1.jpg'), caption: 'len 1', logprob: -1 },
        { image: path.join(dir, '2.jpg'), caption: 'len 2', logprob: -2 },
        { image: path.join(dir, '3.jpg'), error: 'damaged or truncated image (test)' },
        { image: path.join(dir, '4.png'), caption: 'len 4', logprob: -4 },
      ]
        .map((l) => JSON.stringify(l) + '\n')
        .join(''),
    );
  });

  it('resumes an output file, skipping finished images (errors included)', async () => {
    const file = path.join(dir, 'out.jsonl');
    await fs.writeFile(file, JSON.stringify({ image: path.join(dir, '1.jpg'), caption: 'len 1', logprob: -1 }) + '\n' + JSON.stringify({ image: path.join(dir, '3.jpg'), error: 'x' }) + '\n{"image":"' + dir);
    const seen: string[] = [];
    const s = await runCaption(config, { inputs: [dir], model: 'unused', stages: stages(seen), output: file, resume: true });
    expect(s).toMatchObject({ total: 4, skipped: 2, captioned: 2, failed: 0 });
    expect(seen).toEqual(['2.jpg', '4.png']);
    const text = await fs.readFile(file, 'utf8');
    expect(text.split('\n').filter(Boolean).map((l) => JSON.parse(l).image)).toEqual(['1.jpg', '3.jpg', '2.jpg', '4.png'].map((n) => path.join(dir, n)));
    await expect(runCaption(config, { inputs: [dir], model: 'unused', stages: stages(), output: file })).rejects.toThrow(UsageError);
  });

  it('reports a FIFO named explicitly without reading it', async () => {
    const fifo = path.join(dir, 'pipe.jpg');
    try {
      execFileSync('mkfifo', [fifo]);
    } catch {
      return; // no mkfifo here
    }
    const out = capture();
    await expect(runCaption(config, { inputs: [fifo], model: 'unused', stages: stages(), stdout: out.stream })).rejects.toThrow(PartialFailure);
    expect(JSON.parse(out.text())).toEqual({ image: fifo, error: 'not a regular file (a device, FIFO or socket)' });
    await fs.rm(fifo);
  });
});

describe('read failures', () => {
  it('are human reasons', async () => {
    expect(readFailure(Object.assign(new Error('x'), { code: 'EACCES' }))).toBe('permission denied');
    expect(readFailure(Object.assign(new Error('x'), { code: 'ENOENT' }))).toMatch(/not found/);
    expect(readFailure(Object.assign(new Error('x'), { code: 'EIO' }))).toBe('cannot read file (EIO)');
    await expect(readImageFile(dir)).rejects.toThrow(/is a folder/);
    await expect(readImageFile(path.join(dir, 'gone.jpg'))).rejects.toMatchObject({ kind: 'corrupt', reason: expect.stringMatching(/not found/) });
  });
});
