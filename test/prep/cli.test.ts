// `captioner prep` through the built CLI (run `npx tsc -p .` first): exit codes and messages.
import { existsSync, mkdirSync, mkdtempSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { runCli } from '../helpers/cli.js';

const dir = mkdtempSync(path.join(tmpdir(), 'prep-cli-'));
const write = (name: string, text: string) => {
  const f = path.join(dir, name);
  mkdirSync(path.dirname(f), { recursive: true });
  writeFileSync(f, text);
  return f;
};
const good = write('good.txt', 'a.jpg#0\tA dog runs .\na.jpg#1\tA dog .\nb.jpg#0\tA cat .\n');

describe('captioner prep (CLI)', () => {
  it('--json prints the manifest on stdout', async () => {
    const j = await runCli([
      'prep',
      '--format',
      'flickr8k',
      '--captions',
      good,
      '--out',
      path.join(dir, 'o2'),
      '--set',
      'prep.minCount=1',
      '--json',
    ]);
    expect(j.code).toBe(0);
    const m = JSON.parse(j.stdout);
    expect(m.kind).toBe('captioner.prepared');
    expect(m.vocabSize).toBe(8); // 4 specials + a, cat, dog, runs (both images fall in train)
    expect(m.fingerprint).toMatch(/^[0-9a-f]{64}$/);
  });

  it('a malformed line exits 3 with file:line:', async () => {
    const bad = write('bad.txt', 'a.jpg#0\tA dog .\nthis line has no tab\n');
    const r = await runCli(['prep', '--captions', bad, '--out', path.join(dir, 'o3')]);
    expect(r.code).toBe(3);
    expect(r.stderr).toContain(`${bad}:2: expected "image.jpg#N<TAB>caption"`);
    expect(r.stderr).not.toMatch(/\bat .*\.js:\d+/); // no stack trace
  });

  it('missing images: warned and excluded (stdout stays empty), or exit 3 with --strict', async () => {
    const images = path.join(dir, 'imgs');
    write('imgs/a.jpg', 'x');
    const r = await runCli([
      'prep',
      '--captions',
      good,
      '--images',
      images,
      '--out',
      path.join(dir, 'o4'),
      '--set',
      'prep.minCount=1',
    ]);
    expect(r.code).toBe(0);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(/warning: 1 image named by the captions is missing from .*: b\.jpg; excluded/);
    const s = await runCli(['prep', '--captions', good, '--images', images, '--out', path.join(dir, 'o5'), '--strict']);
    expect(s.code).toBe(3);
    expect(s.stderr).toMatch(/error: 1 image named by the captions is missing .*b\.jpg/);
  });

  it('an --out that cannot be created exits 3 at once with a clear message (no 100% CPU spin)', async () => {
    const blocker = write('blocker', 'x');
    const r = await runCli(['prep', '--captions', good, '--out', path.join(blocker, 'out')]);
    expect(r.code).toBe(3);
    expect(r.stderr).toContain(
      `error: ${path.join(blocker, 'out')}: cannot create folder: ${blocker} is a file, not a folder`,
    );
    if (existsSync('/proc/self')) {
      const p = await runCli(['prep', '--captions', good, '--out', '/proc/nope']);
      expect(p.code).toBe(3);
      expect(p.stderr).toContain(
        'error: /proc/nope: cannot create folder: /proc/nope: /proc does not accept new folders',
      );
    } else console.warn('skipping prep --out /proc/nope: this system has no /proc');
  });

  it('refuses a device or a file too large for any captions file as input, at once (it read /dev/zero into memory)', async () => {
    const zero = await runCli(['prep', '--captions', '/dev/zero', '--out', path.join(dir, 'zero')]);
    expect(zero.stderr).toBe('error: /dev/zero: cannot read captions file: is a device or socket, not a file\n');
    expect(zero.code).toBe(3);
    const huge = write('huge.txt', '');
    truncateSync(huge, 600 * 1024 ** 2); // sparse: no disk used
    const big = await runCli(['prep', '--captions', huge, '--out', path.join(dir, 'huge')]);
    expect(big.stderr).toBe(
      `error: ${huge}: cannot read captions file: larger than 512 MiB, more than any captions file\n`,
    );
    expect(big.code).toBe(3);
    expect(existsSync(path.join(dir, 'huge'))).toBe(false); // the folder made for the lock is gone again
  });

  it('usage and config problems exit 2', async () => {
    expect((await runCli(['prep', '--out', path.join(dir, 'o6')])).code).toBe(2); // no captions file
    const f = await runCli(['prep', '--format', 'nope', '--captions', good]);
    expect(f.code).toBe(2);
    expect(f.stderr).toMatch(/dataset\.format/);
  });
});
