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
    seen.push(path.basename(typeof file === 'string' ? file : file.toString('utf8')));
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
    const e = await runCaption(config, { inputs: [dir], model: 'unused', stages: stages(), stdout: out.stream }).catch(
      (x: unknown) => x,
    );
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

  it('resumes an output file: skips captioned images, retries failed ones, keeps one line per image', async () => {
    const file = path.join(dir, 'out.jsonl');
    await fs.writeFile(
      file,
      JSON.stringify({ image: path.join(dir, '1.jpg'), caption: 'len 1', logprob: -1 }) +
        '\n' +
        JSON.stringify({ image: path.join(dir, '3.jpg'), error: 'x' }) +
        '\n{"image":"' +
        dir,
    );
    const seen: string[] = [];
    // 3.jpg is still bad: retried, fails again, exit 3 by the final state
    await expect(
      runCaption(config, { inputs: [dir], model: 'unused', stages: stages(seen), output: file, resume: true }),
    ).rejects.toThrow(PartialFailure);
    expect(seen).toEqual(['2.jpg', '3.jpg', '4.png']);
    const images = async () =>
      (await fs.readFile(file, 'utf8'))
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l) as { image: string; caption?: string; error?: string });
    expect((await images()).map((l) => path.basename(l.image))).toEqual(['1.jpg', '2.jpg', '3.jpg', '4.png']);
    // the user fixes 3.jpg: resume retries it, drops its old error line, and succeeds
    const good = await fs.readFile(path.join(dir, '3.jpg'));
    await fs.writeFile(path.join(dir, '3.jpg'), 'fixed');
    try {
      const seen2: string[] = [];
      const s = await runCaption(config, {
        inputs: [dir],
        model: 'unused',
        stages: stages(seen2),
        output: file,
        resume: true,
      });
      expect(s).toMatchObject({ total: 4, skipped: 3, captioned: 1, failed: 0 });
      expect(seen2).toEqual(['3.jpg']);
      const lines = await images();
      expect(lines.map((l) => path.basename(l.image))).toEqual(['1.jpg', '2.jpg', '4.png', '3.jpg']);
      expect(lines.every((l) => l.caption !== undefined)).toBe(true);
      expect((await fs.readdir(dir)).filter((f) => f.endsWith('.tmp'))).toEqual([]);
    } finally {
      await fs.writeFile(path.join(dir, '3.jpg'), good);
    }
    await expect(
      runCaption(config, { inputs: [dir], model: 'unused', stages: stages(), output: file }),
    ).rejects.toThrow(UsageError);
  });

  it('refuses to resume a file that is not caption output, and leaves it untouched', async () => {
    const img = path.join(dir, '1.jpg');
    const before = await fs.readFile(img);
    await expect(
      runCaption(config, { inputs: [img], model: 'unused', stages: stages(), output: img, resume: true }),
    ).rejects.toThrow(/1\.jpg: line 1: .*does not look like a caption output file/);
    expect(await fs.readFile(img)).toEqual(before);
    const file = path.join(dir, 'mid.jsonl');
    const text =
      JSON.stringify({ image: 'x.jpg', caption: 'a', logprob: -1 }) +
      '\ngarbage\n' +
      JSON.stringify({ image: 'y.jpg', caption: 'b', logprob: -1 }) +
      '\n';
    await fs.writeFile(file, text);
    await expect(
      runCaption(config, { inputs: [dir], model: 'unused', stages: stages(), output: file, resume: true }),
    ).rejects.toThrow(/mid\.jsonl: line 2: not a JSON line/);
    expect(await fs.readFile(file, 'utf8')).toBe(text);
    await fs.rm(file);
  });

  it('stops on abort after the lines already written, leaving the output valid', async () => {
    const file = path.join(dir, 'abort.jsonl');
    const controller = new AbortController();
    let release: () => void = () => {};
    const blocked = new Promise<void>((r) => (release = r));
    const st = stages();
    const s = await runCaption(config, {
      inputs: [dir],
      model: 'unused',
      output: file,
      readAhead: 1,
      signal: controller.signal,
      stages: {
        ...st,
        async load(f) {
          if (path.basename(String(f)) === '2.jpg') {
            controller.abort(); // Ctrl-C while 2.jpg is being read
            release();
            await blocked;
          }
          return st.load(f);
        },
      },
    });
    expect(s.interrupted).toBe(true);
    const lines = (await fs.readFile(file, 'utf8'))
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as { image: string });
    expect(lines.length).toBeLessThan(4);
    await fs.rm(file);
  });

  it('reports a FIFO named explicitly without reading it', async () => {
    const fifo = path.join(dir, 'pipe.jpg');
    try {
      execFileSync('mkfifo', [fifo]);
    } catch {
      return; // no mkfifo here
    }
    const out = capture();
    await expect(
      runCaption(config, { inputs: [fifo], model: 'unused', stages: stages(), stdout: out.stream }),
    ).rejects.toThrow(PartialFailure);
    expect(JSON.parse(out.text())).toEqual({ image: fifo, error: 'not a regular file (a FIFO)' });
    await fs.rm(fifo);
  });
});

describe('read failures', () => {
  it('are human reasons', async () => {
    expect(readFailure(Object.assign(new Error('x'), { code: 'EACCES' }))).toBe('permission denied');
    expect(readFailure(Object.assign(new Error('x'), { code: 'ENOENT' }))).toMatch(/not found/);
    expect(readFailure(Object.assign(new Error('x'), { code: 'EIO' }))).toBe('cannot read file (EIO)');
    await expect(readImageFile(dir)).rejects.toThrow(/is a folder/);
    await expect(readImageFile(path.join(dir, 'gone.jpg'))).rejects.toMatchObject({
      kind: 'corrupt',
      reason: expect.stringMatching(/not found/),
    });
  });
});
