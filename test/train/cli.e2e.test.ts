// `captioner train` end to end through the built CLI: a prepared folder and a feature cache written
// with the real writers, a short run, --resume, and the refusals.
import { describe, it, expect, beforeAll } from 'vitest';
import { promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { spawn } from 'node:child_process';
import { bin, repoRoot, runCli } from '../helpers/cli.js';
import { writeFixture } from './cli-fixture.js';

let work: string;

const args = (dir: string, ...more: string[]) => [
  'train',
  '--set',
  `workdir=${dir}`,
  '--backend',
  'cpu',
  '--set',
  'model={embedDim: 8, units: 12, imageUnits: 12, hiddenUnits: 12}',
  '--set',
  'train.batchSize=8',
  '--set',
  'train.learningRate=0.01',
  ...more,
];

beforeAll(async () => {
  work = await fs.mkdtemp(path.join(os.tmpdir(), 'captioner-traincli-'));
});

describe('captioner train', () => {
  it('trains, writes the run folder, resumes to more epochs', async () => {
    const dir = path.join(work, 'ok');
    await writeFixture(dir);
    const r1 = await runCli(args(dir, '--epochs', '2'));
    expect(r1.stderr).toBe('');
    expect(r1.code).toBe(0);
    expect(r1.stdout).toBe('');
    const m = JSON.parse(await fs.readFile(path.join(dir, 'model', 'manifest.json'), 'utf8'));
    expect(m).toMatchObject({ kind: 'captioner.model', status: 'completed', metrics: { epochs: 2 } });
    expect(m.features.encoder).toMatchObject({ name: 'synthetic', layer: 'fc2', weights: 'random' });
    expect(m.backend).toMatch(/^cpu/);
    const again = await runCli(args(dir, '--epochs', '3'));
    expect(again.code).toBe(2);
    const r2 = await runCli(args(dir, '--epochs', '3', '--resume'));
    expect(r2.code).toBe(0);
    const hist = (await fs.readFile(path.join(dir, 'model', 'history.jsonl'), 'utf8')).trim().split('\n');
    expect(hist.map((l) => JSON.parse(l).epoch)).toEqual([1, 2, 3]);
  });

  it("refuses an --out that holds another stage's folder, and a --resume that changes the batch size (exit 2)", async () => {
    const dir = path.join(work, 'outs');
    await writeFixture(dir);
    const before = await fs.readdir(path.join(dir, 'prepared'));
    const r = await runCli(args(dir, '--epochs', '1', '--out', path.join(dir, 'prepared')));
    expect(r.code).toBe(2);
    expect(r.stderr).toBe(
      `error: ${path.join(dir, 'prepared')}: holds a prepared dataset, not a training run (model); refusing to write over it (choose another folder with --out or train.out)\n`,
    );
    expect(await fs.readdir(path.join(dir, 'prepared'))).toEqual(before);
    expect((await runCli(args(dir, '--epochs', '1', '--out', path.join(dir, 'features')))).stderr).toMatch(
      /holds a feature cache/,
    );
    expect((await runCli(args(dir, '--epochs', '1'))).code).toBe(0);
    const changed = await runCli(args(dir, '--epochs', '2', '--resume', '--set', 'train.batchSize=4'));
    expect(changed.code).toBe(2);
    expect(changed.stderr).toMatch(/^error: --resume: train\.batchSize: 8 -> 4 cannot change during a run/);
  });

  it('refuses a feature cache without every image (exit 3)', async () => {
    const dir = path.join(work, 'missing');
    await writeFixture(dir, 'train_0003.jpg');
    const r = await runCli(args(dir, '--epochs', '1'));
    expect(r.code).toBe(3);
    expect(r.stderr).toMatch(/no vectors for 1 of 16 train images \(e\.g\. train_0003\.jpg\)/);
  });

  it('Ctrl-C saves a checkpoint and exits 130; --resume continues from it', async () => {
    const dir = path.join(work, 'sigint');
    await writeFixture(dir);
    const child = spawn(process.execPath, [bin, ...args(dir, '--epochs', '10000', '--set', 'train.patience=0')], {
      cwd: repoRoot,
      env: { ...process.env, CAPTIONER_QUIET: '1' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += d));
    const exited = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
    const history = path.join(dir, 'model', 'history.jsonl');
    // wait until at least one epoch is recorded, then interrupt as a terminal's Ctrl-C would
    for (let i = 0; i < 600; i++) {
      const text = await fs.readFile(history, 'utf8').catch(() => '');
      if (text.trim()) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    child.kill('SIGINT');
    expect(await exited).toBe(130);
    expect(stderr).toMatch(/interrupt: finishing the current step and saving a checkpoint/);
    const state = JSON.parse(await fs.readFile(path.join(dir, 'model', 'last', 'state.json'), 'utf8'));
    expect(state).toBeTypeOf('object');
    const done = (await fs.readFile(history, 'utf8'))
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l).epoch as number);
    const r = await runCli(args(dir, '--epochs', String(Math.max(...done) + 1), '--resume'));
    expect(r.code).toBe(0);
    const after = (await fs.readFile(history, 'utf8'))
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l).epoch as number);
    expect(Math.max(...after)).toBe(Math.max(...done) + 1);
  });
});
