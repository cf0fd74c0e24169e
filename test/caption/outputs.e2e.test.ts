// `captioner caption` against hostile use (issue 24), through the built CLI: two runs writing one --output,
// stdout on a full disk or closed early, file names that are not UTF-8, attention maps inside the folder
// being captioned, FIFOs and folders named like images among the inputs, and an image given as --output.
import { spawn } from 'node:child_process';
import { closeSync, openSync, promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { attentionMapName } from '../../src/caption/run.js';
import { bin, repoRoot } from '../helpers/cli.js';
import { imageFile, makeAttentionRun, makeRun } from './fixtures.js';

let dir: string;
let run: string;
let attention: string;
const cpu = ['--set', 'backend=cpu', '--set', 'threads=1'];

interface Line {
  image: string;
  caption?: string;
  error?: string;
  attention?: string;
}
const lines = (text: string): Line[] =>
  text
    .split('\n')
    .filter((l) => l.trim())
    .map((l) => JSON.parse(l) as Line);

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
  pid: number;
}

/** Run the CLI; stdout 'full' is /dev/full, 'closed' a pipe this side closes at once; a hung run is killed after `timeoutMs`. */
function cli(
  args: string[],
  o: {
    stdout?: 'pipe' | 'full' | 'closed';
    input?: string;
    env?: Record<string, string>;
    timeoutMs?: number;
    onStderr?: (text: string) => void;
  } = {},
) {
  const full = o.stdout === 'full' ? openSync('/dev/full', 'w') : null;
  const child = spawn(process.execPath, [bin, ...args], {
    cwd: repoRoot,
    env: { ...process.env, CAPTIONER_QUIET: '1', ...o.env },
    stdio: ['pipe', full ?? 'pipe', 'pipe'],
  });
  if (full !== null) closeSync(full);
  let stdout = '';
  let stderr = '';
  if (o.stdout === 'closed') child.stdout!.destroy();
  else child.stdout?.on('data', (d) => (stdout += d));
  child.stderr!.on('data', (d) => {
    stderr += d;
    o.onStderr?.(stderr);
  });
  child.stdin!.end(o.input ?? '');
  const timer = setTimeout(() => child.kill('SIGKILL'), o.timeoutMs ?? 90_000);
  const done = new Promise<Run>((resolve) =>
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr, pid: child.pid! });
    }),
  );
  return { child, done };
}
const run1 = (args: string[], o: Parameters<typeof cli>[1] = {}) => cli(args, o).done;

beforeAll(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), 'captioner-outputs-'));
  ({ run } = await makeRun(path.join(dir, 'model')));
  ({ run: attention } = await makeAttentionRun(path.join(dir, 'att')));
});

afterAll(async () => {
  await fs.rm(dir, { recursive: true, force: true });
});

describe('caption: one writer per --output', () => {
  it('refuses a second run on the same --output (exit 2, naming the first), with or without --resume; the file keeps one line per image', async () => {
    const folder = path.join(dir, 'two');
    for (let i = 0; i < 3; i++) await imageFile(path.join(folder, `${i}.jpg`), 60 + i);
    await imageFile(path.join(folder, 'hold.jpg'), 70); // its read waits for Ctrl-C (hold-read.mjs)
    const out = path.join(dir, 'two.jsonl');
    let holding: () => void = () => {};
    const held = new Promise<void>((r) => (holding = r));
    const a = cli(['caption', folder, '--model', run, ...cpu, '--output', out], {
      env: { NODE_OPTIONS: `--import ${path.join(import.meta.dirname, 'hold-read.mjs')}` },
      onStderr: (t) => /holding hold\.jpg/.test(t) && holding(),
    });
    await held;
    for (const extra of [[], ['--resume']]) {
      const b = await run1(['caption', path.join(folder, '0.jpg'), '--model', run, ...cpu, '--output', out, ...extra]);
      expect(b.code).toBe(2);
      expect(b.stderr).toMatch(
        new RegExp(
          `^error: --output ${out.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: in use by another captioner run, pid ${a.child.pid} on host ${os.hostname()} \\(since .*: captioner caption .*\\); wait for it to finish \\(or stop it\\), or write somewhere else\\n$`,
        ),
      );
    }
    a.child.kill('SIGINT');
    expect((await a.done).code).toBe(130);
    await expect(fs.stat(path.join(dir, '.two.jsonl.lock'))).rejects.toThrow(); // released on Ctrl-C
    const r = await run1(['caption', folder, '--model', run, ...cpu, '--output', out, '--resume']);
    expect(r.code).toBe(0);
    expect(
      lines(await fs.readFile(out, 'utf8'))
        .map((l) => path.basename(l.image))
        .sort(),
    ).toEqual(['0.jpg', '1.jpg', '2.jpg', 'hold.jpg']);
  });
});

describe('caption: stdout checked to the end', () => {
  it('a full disk on stdout is one error line and exit 3 (jsonl, text, and --output /dev/stdout)', async () => {
    const img = path.join(dir, 'full.jpg');
    await imageFile(img, 80);
    for (const extra of [[], ['--format', 'text']]) {
      const r = await run1(['caption', img, '--model', run, ...cpu, ...extra], { stdout: 'full' });
      expect(r.stderr).toBe('error: cannot write to stdout: no space left on device (ENOSPC)\n');
      expect(r.code).toBe(3);
    }
    const viaPath = await run1(['caption', img, '--model', run, ...cpu, '--output', '/dev/stdout'], { stdout: 'full' });
    expect(viaPath.stderr).toBe('error: --output /dev/stdout: cannot write: no space left on device (ENOSPC)\n');
    expect(viaPath.code).toBe(3);
  });

  it('a reader that goes away (| head -1, a real pipe) ends the run quietly with 141, on stdout and on --output /dev/stdout', async () => {
    const folder = path.join(dir, 'head');
    await imageFile(path.join(folder, 'a.jpg'), 81);
    await imageFile(path.join(folder, 'gate.jpg'), 82); // read only once head has gone (gate-read.mjs)
    await imageFile(path.join(folder, 'z.jpg'), 83);
    // bash: captioner ... | { head -n 1; close the pipe; open the gate }, and the exit status of captioner
    const script = '( "$@"; echo "exit $?" >&2 ) | { head -n 1; exec 0<&-; touch "$CAPTIONER_TEST_GATE"; }';
    for (const extra of [[], ['--output', '/dev/stdout']]) {
      const gate = path.join(dir, `gate-${extra.length}`);
      const r = await new Promise<{ stdout: string; stderr: string }>((resolve) => {
        const child = spawn(
          'bash',
          ['-c', script, 'bash', process.execPath, bin, 'caption', folder, '--model', run, ...cpu, ...extra],
          {
            cwd: repoRoot,
            env: {
              ...process.env,
              CAPTIONER_QUIET: '1',
              NODE_OPTIONS: `--import ${path.join(import.meta.dirname, 'gate-read.mjs')}`,
              CAPTIONER_TEST_GATE: gate,
            },
            stdio: ['ignore', 'pipe', 'pipe'],
          },
        );
        let stdout = '';
        let stderr = '';
        child.stdout.on('data', (d) => (stdout += d));
        child.stderr.on('data', (d) => (stderr += d));
        child.on('close', () => resolve({ stdout, stderr }));
      });
      expect(r.stdout).toMatch(/^\{"image":".*\/a\.jpg","caption":.*\n$/);
      expect(r.stderr).toBe('test: waiting at gate.jpg\nexit 141\n');
    }
    // the reader gone before the output is even opened
    const early = await run1(
      ['caption', path.join(folder, 'a.jpg'), '--model', run, ...cpu, '--output', '/dev/stdout'],
      { stdout: 'closed' },
    );
    expect(early.stderr).toBe('');
    expect(early.code).toBe(141);
  });
});

describe('caption: image identity is the raw path', () => {
  it('two names that differ only in bytes that are not UTF-8 are two images: their own lines, maps and --resume', async () => {
    const folder = path.join(dir, 'raw');
    await fs.mkdir(folder);
    const name = (byte: number) =>
      Buffer.concat([Buffer.from(folder + '/caf'), Buffer.from([byte]), Buffer.from('.jpg')]);
    await imageFile(path.join(folder, 'tmp.jpg'), 90);
    await fs.rename(path.join(folder, 'tmp.jpg'), name(0xe9));
    await fs.writeFile(name(0xe8), 'not an image yet');
    const out = path.join(dir, 'raw.jsonl');
    const maps = path.join(dir, 'raw-maps');
    const first = await run1([
      'caption',
      folder,
      '--model',
      attention,
      ...cpu,
      '--output',
      out,
      '--attention-maps',
      maps,
    ]);
    expect(first.code).toBe(3);
    const got = lines(await fs.readFile(out, 'utf8'));
    expect(got.map((l) => l.image)).toEqual([`${folder}/caf\\xe8.jpg`, `${folder}/caf\\xe9.jpg`]);
    expect(got[0].error).toBeTypeOf('string');
    expect(got[1].attention).toBe(path.join(maps, attentionMapName(name(0xe9))));
    // the user fixes the broken one: --resume retries it (and only it), and its map is a file of its own
    await imageFile(path.join(folder, 'tmp.jpg'), 91);
    await fs.rename(path.join(folder, 'tmp.jpg'), name(0xe8));
    const again = await run1(
      ['caption', folder, '--model', attention, ...cpu, '--output', out, '--attention-maps', maps, '--resume'],
      { env: { CAPTIONER_QUIET: '0' } },
    );
    expect(again.code).toBe(0);
    expect(again.stderr).toMatch(/--resume: 1 images already captioned in .*, 1 failed before and retried, 1 to go/);
    const after = lines(await fs.readFile(out, 'utf8'));
    expect(after.map((l) => l.image)).toEqual([`${folder}/caf\\xe9.jpg`, `${folder}/caf\\xe8.jpg`]);
    expect(after.every((l) => typeof l.caption === 'string')).toBe(true);
    expect(new Set(after.map((l) => l.attention)).size).toBe(2);
    expect((await fs.readdir(maps)).filter((f) => f.endsWith('.png'))).toHaveLength(2);
  });
});

describe('caption: outputs are never inputs', () => {
  it('attention maps written inside the folder being captioned are passed over by later runs, with or without --attention-maps', async () => {
    const folder = path.join(dir, 'inside');
    await imageFile(path.join(folder, 'a.jpg'), 100);
    await imageFile(path.join(folder, 'b.jpg'), 101);
    const maps = path.join(folder, 'maps');
    const out = path.join(dir, 'inside.jsonl');
    const first = await run1([
      'caption',
      folder,
      '--model',
      attention,
      ...cpu,
      '--output',
      out,
      '--attention-maps',
      maps,
    ]);
    expect(first.code).toBe(0);
    expect((await fs.readdir(maps)).filter((f) => f.endsWith('.png'))).toHaveLength(2);
    const resumed = await run1(
      ['caption', folder, '--model', attention, ...cpu, '--output', out, '--attention-maps', maps, '--resume'],
      { env: { CAPTIONER_QUIET: '0' } },
    );
    expect(resumed.code).toBe(0);
    expect(resumed.stderr).toMatch(/caption: 0 images to caption/);
    expect(lines(await fs.readFile(out, 'utf8')).map((l) => path.basename(l.image))).toEqual(['a.jpg', 'b.jpg']);
    const plain = await run1(['caption', folder, '--model', run, ...cpu], { env: { CAPTIONER_QUIET: '0' } });
    expect(plain.code).toBe(0);
    expect(lines(plain.stdout).map((l) => path.relative(folder, l.image))).toEqual(['a.jpg', 'b.jpg']);
    expect(plain.stderr).toMatch(/passed over 1 folder of captioner output \(attention maps\)/);
    // named on purpose, the maps folder is captioned
    expect(lines((await run1(['caption', maps, '--model', run, ...cpu])).stdout)).toHaveLength(2);
  });

  it('--attention-maps "" is an error; another stage\'s folder is refused; /proc/nope fails at once (no spin); all before any work', async () => {
    const img = path.join(dir, 'm.jpg');
    await imageFile(img, 110);
    const empty = await run1(['caption', img, '--model', attention, ...cpu, '--attention-maps', '']);
    expect(empty.stderr).toBe('error: --attention-maps: needs a folder name, got an empty one\n');
    expect(empty.code).toBe(2);
    // another stage's folder is refused, as every stage refuses it
    const prepared = path.join(dir, 'a-prepared');
    await fs.mkdir(prepared);
    await fs.writeFile(path.join(prepared, 'manifest.json'), '{"kind":"captioner.prepared"}');
    const other = await run1(['caption', img, '--model', attention, ...cpu, '--attention-maps', prepared]);
    expect(other.stderr).toBe(
      `error: ${prepared}: holds a prepared dataset, not a folder of attention maps; refusing to write over it (choose another folder with --attention-maps)\n`,
    );
    expect(other.code).toBe(2);
    expect(await fs.readdir(prepared)).toEqual(['manifest.json']);
    const proc = await run1(['caption', img, '--model', attention, ...cpu, '--attention-maps', '/proc/nope'], {
      timeoutMs: 60_000,
    });
    expect(proc.code).toBe(3); // a spinning mkdir would be killed by the timeout: code null
    expect(proc.stderr).toMatch(/^error: --attention-maps \/proc\/nope: cannot create folder: /);
    expect(proc.stdout).toBe('');
  });
});

describe('caption: odd inputs are per-item failures', () => {
  it('a FIFO in a scanned folder gets an error line and counts as failed; one without an image extension is counted as passed over', async () => {
    const folder = path.join(dir, 'fifo');
    await imageFile(path.join(folder, 'a.jpg'), 120);
    const { execFileSync } = await import('node:child_process');
    execFileSync('mkfifo', [path.join(folder, 'pipe.jpg'), path.join(folder, 'pipe')]);
    const r = await run1(['caption', folder, '--model', run, ...cpu], {
      env: { CAPTIONER_QUIET: '0' },
      timeoutMs: 60_000,
    });
    expect(r.code).toBe(3);
    expect(lines(r.stdout)).toEqual([
      expect.objectContaining({ image: path.join(folder, 'a.jpg'), caption: expect.any(String) }),
      { image: path.join(folder, 'pipe.jpg'), error: 'not a regular file (a FIFO)' },
    ]);
    expect(r.stderr).toMatch(
      /caption: 1 captioned, 1 failed .*1 file with other extensions passed over \(\(no extension\) 1/,
    );
  });

  it('an empty folder named x.jpg, among the paths or on stdin, is one failed item, not the end of the run', async () => {
    const folder = path.join(dir, 'folders');
    await imageFile(path.join(folder, 'a.jpg'), 130);
    await fs.mkdir(path.join(folder, 'x.jpg'));
    await fs.mkdir(path.join(folder, 'empty'));
    const expected = [
      expect.objectContaining({ image: path.join(folder, 'a.jpg'), caption: expect.any(String) }),
      { image: path.join(folder, 'x.jpg'), error: 'is a folder, not an image (and it holds no images)' },
    ];
    const named = await run1([
      'caption',
      path.join(folder, 'a.jpg'),
      path.join(folder, 'x.jpg'),
      '--model',
      run,
      ...cpu,
    ]);
    expect(named.code).toBe(3);
    expect(lines(named.stdout)).toEqual(expected);
    // `find DIR` lists every folder, empty ones too: none of them stops the run
    const listed =
      [folder, path.join(folder, 'a.jpg'), path.join(folder, 'x.jpg'), path.join(folder, 'empty')].join('\n') + '\n';
    const stdin = await run1(['caption', '-', '--model', run, ...cpu], { input: listed });
    expect(stdin.code).toBe(3);
    expect(lines(stdin.stdout)).toEqual(expected);
  });

  it('an image given as --output without --resume is refused without advising --resume, and left as it is', async () => {
    const folder = path.join(dir, 'asoutput');
    await imageFile(path.join(folder, 'a.jpg'), 140);
    const target = path.join(folder, 'a.jpg');
    const before = await fs.readFile(target);
    const r = await run1(['caption', folder, '--model', run, ...cpu, '--output', target]);
    expect(r.code).toBe(2);
    expect(r.stderr).toBe(
      `error: --output ${target}: already exists and is not caption output (it is a JPEG image); captioner never writes over another file: choose another --output file\n`,
    );
    expect(r.stderr).not.toMatch(/--resume/);
    expect(await fs.readFile(target)).toEqual(before);
    const csv = path.join(dir, 'table.csv');
    await fs.writeFile(csv, 'image,caption\na.jpg,a dog\n');
    const other = await run1(['caption', folder, '--model', run, ...cpu, '--output', csv]);
    expect(other.code).toBe(2);
    expect(other.stderr).toMatch(/already exists and is not caption output \(line 1: not a JSON line\)/);
  });
});
