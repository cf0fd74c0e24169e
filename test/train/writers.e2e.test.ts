// One writer per run folder, and the checks `train` runs before any training (issue 24), through the built
// CLI on the tiny fixture data: a second `train --out D` is refused while the first runs and takes over after
// a kill -9; --resume with fewer epochs than done is refused untouched; `train --scst` refuses an --init run
// that is being trained, warns about one whose manifest says running, and says that it does not use
// train.workers.
import { spawn } from 'node:child_process';
import { promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { bin, repoRoot, runCli } from '../helpers/cli.js';
import { writeFixture } from './cli-fixture.js';

process.env.CAPTIONER_QUIET = '1';
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
const escapeRegExp = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

beforeAll(async () => {
  work = await fs.mkdtemp(path.join(os.tmpdir(), 'captioner-writers-'));
});

/** Epochs recorded in history.jsonl. */
async function epochsIn(model: string): Promise<number[]> {
  return (await fs.readFile(path.join(model, 'history.jsonl'), 'utf8').catch(() => ''))
    .split('\n')
    .filter((l) => l.trim())
    .map((l) => JSON.parse(l).epoch as number);
}

describe('train: one writer per run folder', () => {
  it('refuses a second `train --out D` while one runs (exit 2, naming it); after a kill -9 the next --resume takes over', async () => {
    const dir = path.join(work, 'two');
    await writeFixture(dir);
    const model = path.join(dir, 'model');
    const first = spawn(
      process.execPath,
      [bin, ...args(dir, '--epochs', '10000', '--set', 'train.patience=0', '--set', 'train.seed=7')],
      {
        cwd: repoRoot,
        env: { ...process.env, CAPTIONER_QUIET: '1' },
        stdio: ['ignore', 'ignore', 'pipe'],
      },
    );
    const exited = new Promise<number | null>((r) => first.on('close', (code) => r(code)));
    try {
      for (let i = 0; i < 600 && (await epochsIn(model)).length === 0; i++)
        await new Promise((r) => setTimeout(r, 100));
      expect((await epochsIn(model)).length).toBeGreaterThan(0);
      const holder = new RegExp(
        `^error: run folder ${escapeRegExp(model)}: in use by another captioner run, pid ${first.pid} on host ${escapeRegExp(os.hostname())} \\(since .*: captioner train .*\\); wait for it to finish \\(or stop it\\), or write somewhere else\\n$`,
      );
      for (const extra of [
        ['--epochs', '2', '--set', 'train.seed=42'],
        ['--epochs', '3', '--resume'],
      ]) {
        const second = await runCli(args(dir, ...extra));
        expect(second.code).toBe(2);
        expect(second.stderr).toMatch(holder);
      }
      first.kill('SIGKILL');
      expect(await exited).toBe(null);
    } finally {
      first.kill('SIGKILL');
    }
    // the killed run's lock is stale (its process is gone): the next run breaks it, says so, and continues
    expect((await fs.readdir(model)).includes('.captioner.lock')).toBe(true);
    const done = Math.max(...(await epochsIn(model)));
    const resumed = await runCli(
      args(dir, '--epochs', String(done + 1), '--resume', '--set', 'train.patience=0', '--set', 'train.seed=7'),
    );
    expect(resumed.stderr).toMatch(
      /^warning: run folder .*: removing a stale lock \(pid \d+ on host .*; process \d+ is gone\)\n$/,
    );
    expect(resumed.code).toBe(0);
    expect((await fs.readdir(model)).includes('.captioner.lock')).toBe(false);
    const state = JSON.parse(await fs.readFile(path.join(model, 'last', 'state.json'), 'utf8'));
    expect(state.seed).toBe(7);
    expect(await fs.readFile(path.join(model, 'config.yaml'), 'utf8')).toMatch(/\n {2}seed: 7\n/);
  });

  it('refuses --resume with fewer epochs than the run has done, leaving config.yaml and history as they were', async () => {
    const dir = path.join(work, 'epochs');
    await writeFixture(dir);
    const model = path.join(dir, 'model');
    expect((await runCli(args(dir, '--epochs', '3', '--set', 'train.patience=0'))).code).toBe(0);
    const config = await fs.readFile(path.join(model, 'config.yaml'), 'utf8');
    const manifest = await fs.readFile(path.join(model, 'manifest.json'), 'utf8');
    const r = await runCli(args(dir, '--epochs', '2', '--resume', '--set', 'train.patience=0'), {
      env: { CAPTIONER_QUIET: '0' },
    });
    expect(r.code).toBe(2);
    expect(r.stderr).toBe(
      `error: --resume: ${model} has already trained 3 epochs, and train.epochs (--epochs) asks for 2 in total, so there is nothing to train; to train more, give the new total (e.g. --epochs 8); the run is left as it is\n`,
    );
    expect(r.stderr).not.toMatch(/epochs 4\.\.2/);
    expect(await fs.readFile(path.join(model, 'config.yaml'), 'utf8')).toBe(config);
    expect(await fs.readFile(path.join(model, 'manifest.json'), 'utf8')).toBe(manifest);
    expect(await epochsIn(model)).toEqual([1, 2, 3]);
  });
});

describe('train --scst: the run it starts from', () => {
  it('refuses an --init run being trained now, warns about one that says running but is not, and about train.workers', async () => {
    const { buildTrainedRun } = await import('../eval/run-fixture.js');
    const fx = await buildTrainedRun(path.join(work, 'scst'));
    const scst = (...more: string[]) =>
      runCli([
        'train',
        '--scst',
        '--set',
        `workdir=${fx.dir}`,
        '--backend',
        'cpu',
        '--set',
        'train.scst={k: 2, maxLength: 8}',
        '--init',
        fx.model,
        '--epochs',
        '1',
        ...more,
      ]);
    // a live process of this host holds the init run's lock, as a training run does
    const lock = path.join(fx.model, '.captioner.lock');
    await fs.writeFile(
      lock,
      JSON.stringify({
        kind: 'captioner.lock',
        host: os.hostname(),
        pid: process.pid,
        started: new Date().toISOString(),
        command: 'captioner train --out model',
        token: 't',
      }),
    );
    const busy = await scst('--out', path.join(fx.dir, 'tuned-busy'));
    expect(busy.code).toBe(2);
    expect(busy.stderr).toBe(
      `error: --init ${fx.model}: is being trained right now by pid ${process.pid} on host ${os.hostname()} (since ${JSON.parse(await fs.readFile(lock, 'utf8')).started}: captioner train --out model); fine-tune it once that training has finished\n`,
    );
    await expect(fs.stat(path.join(fx.dir, 'tuned-busy'))).rejects.toThrow(); // nothing written
    await fs.rm(lock);
    // a run killed during training: its manifest still says running, no process holds it
    const mfile = path.join(fx.model, 'manifest.json');
    const m = JSON.parse(await fs.readFile(mfile, 'utf8'));
    await fs.writeFile(mfile, JSON.stringify({ ...m, status: 'running' }));
    const killed = await scst('--out', path.join(fx.dir, 'tuned'), '--set', 'train.workers=2');
    expect(killed.code).toBe(0);
    expect(killed.stderr).toContain(
      `warning: --init ${fx.model}: its manifest says status "running", but no process is training it (it was killed or crashed after 2 epochs); fine-tuning its best/ checkpoint (epoch `,
    );
    expect(killed.stderr).toContain(`To finish its training first: captioner train --resume --out ${fx.model}\n`);
    expect(killed.stderr).toContain(
      'warning: train.workers 2 is not used by self-critical training: train --scst samples, scores and updates on the main thread (set train.workers 1 to silence this)\n',
    );
    // and --resume of the fine-tuning run with fewer epochs than it has done is refused, as for train
    await fs.writeFile(
      path.join(fx.dir, 'tuned', 'last', 'state.json'),
      JSON.stringify({
        ...JSON.parse(await fs.readFile(path.join(fx.dir, 'tuned', 'last', 'state.json'), 'utf8')),
        epoch: 3,
      }),
    );
    const less = await runCli([
      'train',
      '--scst',
      '--set',
      `workdir=${fx.dir}`,
      '--backend',
      'cpu',
      '--set',
      'train.scst={k: 2, maxLength: 8}',
      '--init',
      fx.model,
      '--out',
      path.join(fx.dir, 'tuned'),
      '--epochs',
      '2',
      '--resume',
    ]);
    expect(less.code).toBe(2);
    expect(less.stderr).toMatch(
      /has already trained 3 epochs, and train\.scst\.epochs \(--epochs\) asks for 2 in total/,
    );
  });
});
