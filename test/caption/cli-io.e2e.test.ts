// `captioner caption` through the built CLI, where the output or the process meets the outside world:
// a closed stdout (| head), a full disk (/dev/full), Ctrl-C, --resume on files that are not caption
// output and of failed images, the run's own decode settings, formats this build cannot decode, files a
// scan passes over, and file names that are not UTF-8.
import { spawn } from 'node:child_process';
import { promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import YAML from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseResume } from '../../src/caption/jsonl.js';
import { bin, runCli } from '../helpers/cli.js';
import { imageFile, makeRun } from './fixtures.js';

let dir: string;
let run: string;
let imgs: string;
const base = (model = run) => ['--model', model, '--set', 'backend=cpu', '--set', 'threads=1'];
const lines = (s: string) =>
  s
    .split('\n')
    .filter((l) => l.trim())
    .map((l) => JSON.parse(l) as { image: string; caption?: string; error?: string });

beforeAll(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), 'captioner-cli-io-'));
  ({ run } = await makeRun(path.join(dir, 'model')));
  imgs = path.join(dir, 'images');
  for (let i = 0; i < 4; i++) await imageFile(path.join(imgs, `${i}.jpg`), i + 1);
});

afterAll(async () => {
  await fs.rm(dir, { recursive: true, force: true });
});

function spawnCli(args: string[], env: Record<string, string> = {}) {
  const child = spawn(process.execPath, [bin, ...args], {
    env: { ...process.env, CAPTIONER_QUIET: '1', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  const stderrWaiters: { re: RegExp; resolve: () => void }[] = [];
  child.stderr.on('data', (d) => {
    stderr += d;
    for (const w of stderrWaiters.splice(0)) w.re.test(stderr) ? w.resolve() : stderrWaiters.push(w);
  });
  const done = new Promise<number | null>((r) => child.on('close', r));
  return {
    child,
    done,
    stderr: () => stderr,
    waitStderr: (re: RegExp) =>
      re.test(stderr) ? Promise.resolve() : new Promise<void>((resolve) => stderrWaiters.push({ re, resolve })),
  };
}

describe('caption output meets the outside world', () => {
  it('ends quietly when stdout is closed by its reader (| head): exit 141, no stack trace', async () => {
    const p = spawnCli(['caption', imgs, ...base()]);
    p.child.stdout.destroy(); // the reader is gone before the first line
    const code = await p.done;
    expect(p.stderr()).toBe('');
    expect(code).toBe(141);
  });

  it('reports a full disk (/dev/full) in one line naming the file, exit 3', async () => {
    const r = await runCli(['caption', imgs, ...base(), '--output', '/dev/full']);
    expect(r.code).toBe(3);
    expect(r.stderr).toBe('error: --output /dev/full: cannot write: no space left on device (ENOSPC)\n');
  });

  it('Ctrl-C: prints the --resume hint, exits 130, the output stays valid, and --resume finishes it', async () => {
    const folder = path.join(dir, 'sigint');
    for (let i = 0; i < 3; i++) await imageFile(path.join(folder, `${i}.jpg`), 10 + i);
    await imageFile(path.join(folder, 'hold.jpg'), 20); // its read waits for Ctrl-C (test/caption/hold-read.mjs)
    const out = path.join(dir, 'sigint.jsonl');
    const preload = path.join(import.meta.dirname, 'hold-read.mjs');
    const p = spawnCli(['caption', folder, ...base(), '--output', out], { NODE_OPTIONS: `--import ${preload}` });
    await p.waitStderr(/holding hold\.jpg/);
    p.child.kill('SIGINT');
    const code = await p.done;
    expect(code).toBe(130);
    expect(p.stderr()).toMatch(/run the same command with --resume to continue/);
    const partial = parseResume(await fs.readFile(out), out); // throws on anything but complete lines
    expect(partial.validBytes).toBe((await fs.stat(out)).size);
    expect([...partial.done, ...partial.failed]).not.toContain(path.join(folder, 'hold.jpg'));
    const r = await runCli(['caption', folder, ...base(), '--output', out, '--resume']);
    expect(r.code).toBe(0);
    expect(
      lines(await fs.readFile(out, 'utf8'))
        .map((l) => path.basename(l.image))
        .sort(),
    ).toEqual(['0.jpg', '1.jpg', '2.jpg', 'hold.jpg']);
  });

  it('--resume refuses an image given as --output (nothing written) and retries images that failed', async () => {
    const jpg = path.join(imgs, '0.jpg');
    const before = await fs.readFile(jpg);
    const r = await runCli(['caption', imgs, ...base(), '--output', jpg, '--resume']);
    expect(r.code).toBe(3);
    expect(r.stderr).toMatch(/0\.jpg: line 1: .*not look like a caption output file/);
    expect(await fs.readFile(jpg)).toEqual(before);

    const folder = path.join(dir, 'retry');
    await imageFile(path.join(folder, 'a.jpg'), 30);
    await fs.writeFile(path.join(folder, 'b.jpg'), 'not yet an image');
    const out = path.join(dir, 'retry.jsonl');
    expect((await runCli(['caption', folder, ...base(), '--output', out])).code).toBe(3);
    await imageFile(path.join(folder, 'b.jpg'), 31); // the user fixes the file
    const again = await runCli(['caption', folder, ...base(), '--output', out, '--resume']);
    expect(again.code).toBe(0);
    const got = lines(await fs.readFile(out, 'utf8'));
    expect(got.map((l) => path.basename(l.image))).toEqual(['a.jpg', 'b.jpg']); // one line per image
    expect(got.every((l) => typeof l.caption === 'string')).toBe(true);
  });

  it("uses the run's decode settings unless --config / --set / flags override them", async () => {
    const run2 = path.join(dir, 'model', 'run-short');
    await fs.cp(run, run2, { recursive: true });
    const cfgFile = path.join(run2, 'config.yaml');
    const cfg = YAML.parse(await fs.readFile(cfgFile, 'utf8')) as { decode: Record<string, unknown> };
    cfg.decode = { ...cfg.decode, beam: 1, maxLength: 3 };
    await fs.writeFile(cfgFile, YAML.stringify(cfg));
    const beamOf = async (extra: string[]) => {
      const r = await runCli(['caption', imgs, ...base(run2), ...extra], { env: { CAPTIONER_QUIET: '0' } });
      expect(r.code).toBe(0);
      return {
        beam: Number(/beam (\d+)/.exec(r.stderr)?.[1]),
        words: Math.max(...lines(r.stdout).map((l) => l.caption!.split(' ').filter(Boolean).length)),
      };
    };
    const own = await beamOf([]);
    expect(own.beam).toBe(1);
    expect(own.words).toBeLessThanOrEqual(3); // maxLength 3: a caption cut unfinished has 3 words
    const userCfg = path.join(dir, 'user.yaml');
    await fs.writeFile(userCfg, 'decode:\n  beam: 4\n');
    const withFile = await beamOf(['--config', userCfg]);
    expect(withFile.beam).toBe(4);
    expect(withFile.words).toBeLessThanOrEqual(3); // the file says nothing of maxLength: the run's 3 still holds
    expect((await beamOf(['--config', userCfg, '--set', 'decode.beam=3'])).beam).toBe(3);
    expect((await beamOf(['--config', userCfg, '--set', 'decode.beam=3', '--beam', '2'])).beam).toBe(2);
  });

  it('names formats this build cannot decode, and reports the files a scan passed over', async () => {
    const sharp = (await import('sharp')).default;
    const folder = path.join(dir, 'formats');
    await imageFile(path.join(folder, 'ok.jpg'), 40);
    // a BMP header (BITMAPINFOHEADER, 1x1, 24-bit) and a HEIC file type box
    const bmp = Buffer.alloc(58);
    bmp.write('BM', 0, 'ascii');
    bmp.writeUInt32LE(58, 2);
    bmp.writeUInt32LE(54, 10);
    bmp.writeUInt32LE(40, 14);
    bmp.writeInt32LE(1, 18);
    bmp.writeInt32LE(1, 22);
    bmp.writeUInt16LE(1, 26);
    bmp.writeUInt16LE(24, 28);
    await fs.writeFile(path.join(folder, 'x.bmp'), bmp);
    const heic = Buffer.concat([
      Buffer.from([0, 0, 0, 24]),
      Buffer.from('ftypheic\0\0\0\0mif1heic', 'latin1'),
      Buffer.alloc(32),
    ]);
    await fs.writeFile(path.join(folder, 'y.heic'), heic);
    await fs.writeFile(path.join(folder, 'notes.txt'), 'x');
    const scan = await runCli(['caption', folder, ...base()], { env: { CAPTIONER_QUIET: '0' } });
    expect(scan.code).toBe(0);
    expect(lines(scan.stdout).map((l) => path.basename(l.image))).toEqual(['ok.jpg']);
    expect(scan.stderr).toMatch(
      /3 files with other extensions passed over \((\.bmp|\.heic|\.txt) 1, (\.bmp|\.heic|\.txt) 1, (\.bmp|\.heic|\.txt) 1; see caption.extensions\)/,
    );
    const named = await runCli(['caption', path.join(folder, 'x.bmp'), path.join(folder, 'y.heic'), ...base()]);
    const byName = Object.fromEntries(lines(named.stdout).map((l) => [path.basename(l.image), l]));
    const f = sharp.format as unknown as Record<string, { input: { buffer: boolean } } | undefined>;
    if (!f.magick?.input.buffer)
      expect(byName['x.bmp'].error).toMatch(
        /^BMP images cannot be decoded by this build of sharp\/libvips; convert to JPEG, PNG/,
      );
    expect(byName['y.heic'].error).toMatch(/HEIC\/HEIF images cannot be decoded by this build|damaged|corrupt/);
  });

  it('captions a file whose name is not UTF-8 (found by a folder scan)', async () => {
    const folder = path.join(dir, 'latin1');
    await fs.mkdir(folder);
    const raw = Buffer.concat([Buffer.from(folder + '/caf'), Buffer.from([0xe9]), Buffer.from('.jpg')]);
    await imageFile(path.join(folder, 'tmp.jpg'), 50);
    await fs.rename(path.join(folder, 'tmp.jpg'), raw);
    const r = await runCli(['caption', folder, ...base()]);
    expect(r.code).toBe(0);
    const [line] = lines(r.stdout);
    expect(line.image).toBe(`${folder}/caf\\xe9.jpg`); // the byte that is not UTF-8, escaped reversibly
    expect(line.caption).toBeTypeOf('string');
  });
});
