// In a real terminal (tmux), log lines print ABOVE the progress bar: per-file warnings and the final
// summary stay readable instead of being glued onto the bar and overwritten (src/log.ts). Waits for a
// marker file, not for time. Skipped VISIBLY when tmux is not installed.
import { execFileSync } from 'node:child_process';
import { existsSync, promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bin } from '../helpers/cli.js';
import { imageFile, makeRun } from './fixtures.js';

const hasTmux = (() => {
  try {
    execFileSync('tmux', ['-V'], { stdio: 'pipe' });
    return true;
  } catch {
    return false;
  }
})();
if (!hasTmux)
  process.stderr.write(
    '\n*** SKIPPING the progress-bar terminal test: tmux is not installed (apt-get install -y tmux) ***\n',
  );

let dir: string;
const session = `captioner-test-${process.pid}`;

beforeAll(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), 'captioner-tmux-'));
});

afterAll(async () => {
  if (hasTmux) {
    try {
      execFileSync('tmux', ['kill-session', '-t', session], { stdio: 'pipe' });
    } catch {
      /* already gone */
    }
  }
  await fs.rm(dir, { recursive: true, force: true });
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe.skipIf(!hasTmux)('caption progress in a terminal', () => {
  it('prints each warning and the summary on their own lines above the bar', async () => {
    const { run } = await makeRun(path.join(dir, 'model'));
    const imgs = path.join(dir, 'i');
    for (let i = 0; i < 6; i++) await imageFile(path.join(imgs, `ok${i}.jpg`), i + 1);
    for (let i = 0; i < 3; i++) await fs.writeFile(path.join(imgs, `bad${i}.jpg`), 'not an image');
    const marker = path.join(dir, 'done');
    const cmd = `cd ${JSON.stringify(dir)} && CAPTIONER_QUIET=0 ${JSON.stringify(process.execPath)} ${JSON.stringify(bin)} caption i --model ${JSON.stringify(run)} --set backend=cpu --set threads=1 > out.jsonl; echo "exit $?" > ${JSON.stringify(marker)}; sleep 600`;
    execFileSync('tmux', ['new-session', '-d', '-s', session, '-x', '200', '-y', '50', cmd], {
      env: { ...process.env, TERM: 'xterm-256color' },
    });
    for (let i = 0; i < 1200 && !existsSync(marker); i++) await sleep(100); // the run's own pace, up to 2 minutes
    expect(await fs.readFile(marker, 'utf8')).toBe('exit 3\n');
    const screen = execFileSync('tmux', ['capture-pane', '-p', '-t', session, '-S', '-100'], { encoding: 'utf8' });
    const rows = screen.split('\n').map((l) => l.trimEnd());
    for (let i = 0; i < 3; i++)
      expect(rows).toContain(
        `warning: i/bad${i}.jpg: not an image: the content is not JPEG, PNG, GIF, WebP, TIFF or AVIF`,
      );
    expect(rows.some((r) => /^caption: 6 captioned, 3 failed in [\d.]+ s \([\d.]+ img\/s\)$/.test(r))).toBe(true);
    expect(rows.some((r) => /^caption .*100% \| 9\/9/.test(r))).toBe(true); // the bar itself, complete, on its own line
    expect(rows.some((r) => /^error: 3 of 9 images could not be captioned/.test(r))).toBe(true);
  }, 180_000);
});
