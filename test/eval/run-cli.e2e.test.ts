// `captioner eval` through the built CLI on a tiny trained run: the metrics table on stdout, --json,
// the report files, and the exit codes of the refusals.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { runCli } from '../helpers/cli.js';
import { openCacheWriter } from '../../src/features/cache.js';
import { buildTrainedRun, fakeSpec, imageName, vectorOf, type EvalFixture } from './run-fixture.js';

let work: string;
let fx: EvalFixture;

beforeAll(async () => {
  process.env.CAPTIONER_QUIET = '1';
  work = await fs.mkdtemp(path.join(os.tmpdir(), 'captioner-evalcli-'));
  fx = await buildTrainedRun(path.join(work, 'run'));
});

afterAll(async () => {
  await fs.rm(work, { recursive: true, force: true });
});

const base = () => ['eval', '--bleu', '--model', fx.model, '--set', 'backend=cpu'];

describe('captioner eval', () => {
  it('prints the metrics table and writes the report', async () => {
    const out = path.join(work, 'report');
    const r = await runCli([...base(), '--beam', '2', '--out', out]);
    expect(r.stderr).toMatch(/^warning: eval: .* UNTRAINED \(random-weight\) VGG16; expect low scores\n$/); // the only stderr line when quiet
    expect(r.code).toBe(0);
    const rows = r.stdout.trim().split('\n');
    expect(rows[0]).toMatch(/^metric\s+model\s+image-blind$/);
    expect(rows.map((l) => l.split(/\s+/)[0])).toEqual([
      'metric',
      'images',
      'BLEU-1',
      'BLEU-2',
      'BLEU-3',
      'BLEU-4',
      'CIDEr-D',
      'ROUGE_L',
    ]);
    expect(rows[1]).toMatch(/^images\s+4\s+4$/);
    for (const f of ['predictions.jsonl', 'results.json', 'report.json', 'report.html'])
      expect((await fs.stat(path.join(out, f))).size).toBeGreaterThan(0);
    const rep = JSON.parse(await fs.readFile(path.join(out, 'report.json'), 'utf8'));
    expect(rep.decode.beam).toBe(2);
  });

  it('--json prints the metrics as one object; --split/--limit select images', async () => {
    const out = path.join(work, 'json');
    const r = await runCli([...base(), '--json', '--split', 'train', '--limit', '3', '--out', out, '--no-thumbnails']);
    expect(r.code).toBe(0);
    const j = JSON.parse(r.stdout);
    expect(j).toMatchObject({
      split: 'train',
      metrics: { images: 3 },
      baseline: { metrics: { images: 3 } },
      files: { dir: out },
    });
    expect(Object.keys(j.metrics).sort()).toEqual([
      'Bleu_1',
      'Bleu_2',
      'Bleu_3',
      'Bleu_4',
      'CIDEr',
      'ROUGE_L',
      'images',
    ]);
    const html = await fs.readFile(path.join(out, 'report.html'), 'utf8');
    expect(html).not.toContain('data:image/jpeg');
    // thumbnails off: said once, not "image not found" on every row; and no absolute local paths
    expect(html).not.toContain('image not found');
    expect(html.match(/thumbnails off/g)).toHaveLength(1);
    expect(html).not.toContain(work);
  });

  it('exit 3 for a feature cache of other settings; exit 4 for a folder that is not a run; exit 2 for bad flags', async () => {
    const other = path.join(work, 'other-features');
    const w = await openCacheWriter(other, fakeSpec('another-encoder'), { chunkSize: 64 });
    for (let i = 0; i < 16; i++) await w.add(imageName(i), vectorOf(i));
    await w.close();
    const bad = await runCli([...base(), '--set', `features.out=${other}`]);
    expect(bad.code).toBe(3);
    expect(bad.stderr).toMatch(/^error: .*different settings/);
    expect(bad.stdout).toBe('');
    const notRun = await runCli(['eval', '--model', work]);
    expect(notRun.code).toBe(4);
    expect(notRun.stderr).toMatch(/manifest\.json: cannot read the model manifest/);
    expect((await runCli([...base(), '--split', 'dev'])).code).toBe(2);
    expect((await runCli([...base(), '--beam', '0'])).code).toBe(2);
  });
});

describe('captioner eval decode settings', () => {
  it("uses the run's own decode settings (config.yaml), overridden by --config, --set and flags in that order", async () => {
    const YAML = (await import('yaml')).default;
    const cfgFile = path.join(fx.model, 'config.yaml');
    const original = await fs.readFile(cfgFile, 'utf8');
    const runCfg = YAML.parse(original) as { decode: Record<string, unknown> };
    runCfg.decode = { ...runCfg.decode, beam: 1, maxLength: 4 };
    await fs.writeFile(cfgFile, YAML.stringify(runCfg));
    const userCfg = path.join(work, 'user.yaml');
    await fs.writeFile(userCfg, 'decode:\n  beam: 4\n');
    try {
      const decodeOf = async (extra: string[]) => {
        const out = path.join(work, `dec-${extra.join('_').replace(/[^\w]/g, '')}`);
        const r = await runCli([...base(), '--out', out, '--no-baseline', ...extra]);
        expect(r.code).toBe(0);
        return JSON.parse(await fs.readFile(path.join(out, 'report.json'), 'utf8')).decode as {
          beam: number;
          maxLength: number;
        };
      };
      expect(await decodeOf([])).toMatchObject({ beam: 1, maxLength: 4 });
      expect(await decodeOf(['--config', userCfg])).toMatchObject({ beam: 4, maxLength: 4 });
      expect(await decodeOf(['--config', userCfg, '--set', 'decode.beam=3'])).toMatchObject({ beam: 3, maxLength: 4 });
      expect(
        await decodeOf(['--config', userCfg, '--set', 'decode.beam=3', '--beam', '2', '--set', 'decode.maxLength=9']),
      ).toMatchObject({ beam: 2, maxLength: 9 });
    } finally {
      await fs.writeFile(cfgFile, original);
    }
  });

  it('ends quietly when stdout is closed by its reader (exit 141, no stack trace)', async () => {
    const { spawn } = await import('node:child_process');
    const { bin } = await import('../helpers/cli.js');
    const child = spawn(process.execPath, [bin, ...base(), '--out', path.join(work, 'epipe')], {
      env: { ...process.env, CAPTIONER_QUIET: '1' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    child.stdout.destroy(); // the reader is gone before anything is written
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += d));
    const code = await new Promise<number | null>((r) => child.on('close', r));
    expect(stderr).not.toMatch(/EPIPE|at .*\.js/);
    expect(code).toBe(141);
  });

  it("checks the report folder before decoding (issue 24): /proc/nope is exit 3 at once, another stage's folder exit 2", async () => {
    const r = await runCli([...base(), '--out', '/proc/nope'], { env: { CAPTIONER_QUIET: '0' } });
    expect(r.code).toBe(3);
    expect(r.stderr).toMatch(
      /error: \/proc\/nope: cannot create folder: \/proc\/nope: \/proc does not accept new folders\n$/,
    );
    expect(r.stderr).not.toMatch(/eval: \d+ test images/); // logged when decoding starts
    const other = await runCli([...base(), '--out', fx.prepared]);
    expect(other.code).toBe(2);
    expect(other.stderr).toContain(
      `error: ${fx.prepared}: holds a prepared dataset, not an eval report; refusing to write over it (choose another folder with --out or eval.out)`,
    );
  });

  it('names the dataset the run recorded (or the one the user gave) when it has moved, never a default the user did not use', async () => {
    const moved = path.join(work, 'moved-run');
    await fs.cp(fx.model, moved, { recursive: true });
    const mfile = path.join(moved, 'manifest.json');
    const m = JSON.parse(await fs.readFile(mfile, 'utf8'));
    const gone = path.join(work, 'gone', 'prepared');
    await fs.writeFile(mfile, JSON.stringify({ ...m, dataset: { ...m.dataset, dir: gone } }));
    const r = await runCli(['eval', '--model', moved, '--set', 'backend=cpu']);
    expect(r.code).toBe(3);
    expect(r.stderr).toMatch(
      new RegExp(
        `error: ${gone.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: the prepared dataset that .*moved-run was trained on is not there any more \\(moved or deleted\\?\\); give its new place with --set prep\\.out=DIR\\n$`,
      ),
    );
    expect(r.stderr).not.toMatch(/work\/prepared/);
    const given = path.join(work, 'typo', 'prepared');
    const mine = await runCli(['eval', '--model', moved, '--set', 'backend=cpu', '--set', `prep.out=${given}`]);
    expect(mine.code).toBe(3);
    expect(mine.stderr).toContain(`error: ${given}: `);
    // given its new place, it evaluates
    expect(
      (await runCli(['eval', '--model', moved, '--set', 'backend=cpu', '--set', `prep.out=${fx.prepared}`, '--json']))
        .code,
    ).toBe(0);
  });
});
