// The one-writer lock (src/util/lock.ts): a second writer is refused naming the holder; a lock is broken
// only when its holder is certainly gone (this host, dead pid or reused pid); a lock from another host is
// honoured and the error says which file to delete; a damaged lock is never broken; release removes only
// its own lock; a process that exits without releasing (process.exit, as the second Ctrl-C does) leaves none.
import { spawnSync } from 'node:child_process';
import { promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { UsageError } from '../../src/errors.js';
import {
  acquireLock,
  inspectLock,
  LockHeldError,
  lockFileFor,
  lockFolder,
  pidAlive,
  processStart,
  staleReason,
  type LockInfo,
} from '../../src/util/lock.js';
import { quietly } from '../helpers/quiet.js';
import { repoRoot } from '../helpers/cli.js';

let dir: string;
beforeAll(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), 'captioner-lock-'));
});
afterAll(async () => {
  await fs.rm(dir, { recursive: true, force: true });
});

const info = (o: Partial<LockInfo>): LockInfo => ({
  kind: 'captioner.lock',
  host: os.hostname(),
  pid: process.pid,
  started: '2026-01-01T00:00:00.000Z',
  command: 'captioner train --out x',
  token: 'other',
  ...o,
});
/** The pid of a process that has exited. */
const deadPid = () => spawnSync(process.execPath, ['-e', '0']).pid!;

describe('acquireLock', () => {
  it('is exclusive: a second taker gets a UsageError (exit 2) naming the holder; release frees it', async () => {
    const file = path.join(dir, 'a.lock');
    const lock = await acquireLock(file, '--output a.jsonl');
    const held = JSON.parse(await fs.readFile(file, 'utf8')) as LockInfo;
    expect(held).toMatchObject({ kind: 'captioner.lock', host: os.hostname(), pid: process.pid });
    const e = await acquireLock(file, '--output a.jsonl').catch((x) => x);
    expect(e).toBeInstanceOf(LockHeldError);
    expect(e).toBeInstanceOf(UsageError);
    expect(e.exitCode).toBe(2);
    expect(e.message).toMatch(
      new RegExp(`^--output a\\.jsonl: in use by another captioner run, pid ${process.pid} on host ${os.hostname()}`),
    );
    await lock.release();
    await lock.release(); // idempotent
    await expect(fs.stat(file)).rejects.toThrow();
    const again = await acquireLock(file, 'x');
    await again.release();
  });

  it('honours a live process of this host, and a lock from another host whatever its pid (saying which file to delete)', async () => {
    const file = path.join(dir, 'b.lock');
    await fs.writeFile(file, JSON.stringify(info({ pid: process.ppid })));
    const live = await acquireLock(file, 'run folder b').catch((x) => x);
    expect(live).toBeInstanceOf(LockHeldError);
    expect(live.message).toMatch(/wait for it to finish \(or stop it\), or write somewhere else$/);
    await fs.writeFile(file, JSON.stringify(info({ host: 'another-machine', pid: deadPid() })));
    const remote = await acquireLock(file, 'run folder b').catch((x) => x);
    expect(remote).toBeInstanceOf(LockHeldError);
    expect(remote.message).toContain('on host another-machine');
    expect(remote.message).toContain(
      `if that run is gone (its machine crashed or was reset), delete ${file} and run again`,
    );
    expect(await inspectLock(file)).toMatchObject({ state: 'held' });
  });

  it('breaks a lock of this host whose process is gone, or whose pid now belongs to another process', async () => {
    const file = path.join(dir, 'c.lock');
    await fs.writeFile(file, JSON.stringify(info({ pid: deadPid() })));
    expect(await inspectLock(file)).toMatchObject({ state: 'stale' });
    const lock = await quietly(() => acquireLock(file, 'run folder c'));
    expect((JSON.parse(await fs.readFile(file, 'utf8')) as LockInfo).pid).toBe(process.pid);
    await lock.release();
    // a live pid with another start time: the recorded process is gone, the pid was reused
    const start = processStart(process.ppid);
    if (start) {
      expect(staleReason(info({ pid: process.ppid, procStart: String(Number(start) + 1) }))).toMatch(
        /pid now belongs to another process/,
      );
      expect(staleReason(info({ pid: process.ppid, procStart: start }))).toBeNull();
    }
    expect(staleReason(info({ pid: process.ppid, bootId: 'another-boot' }))).toMatch(/restarted/);
    expect(pidAlive(process.pid)).toBe(true);
  });

  it('never breaks an empty or damaged lock file, and says how to remove it', async () => {
    const file = path.join(dir, 'd.lock');
    await fs.writeFile(file, '');
    const e = await acquireLock(file, '--output d').catch((x) => x);
    expect(e).toBeInstanceOf(LockHeldError);
    expect(e.message).toBe(
      `--output d: in use by another captioner run (its lock file ${file} is empty or damaged); if no captioner run is writing it, delete ${file} and run again`,
    );
    expect(await fs.readFile(file, 'utf8')).toBe('');
  });

  it('release leaves a lock that is no longer its own', async () => {
    const file = path.join(dir, 'e.lock');
    const lock = await acquireLock(file, 'e');
    await fs.writeFile(file, JSON.stringify(info({ token: 'someone-else' })));
    await lock.release();
    expect(JSON.parse(await fs.readFile(file, 'utf8')).token).toBe('someone-else');
  });

  it('is removed when the process exits without releasing it (process.exit, as the second Ctrl-C does)', async () => {
    const file = path.join(dir, 'f.lock');
    const program = `import { acquireLock } from './dist/util/lock.js'; await acquireLock(${JSON.stringify(file)}, 'f'); process.exit(130);`;
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', program], { cwd: repoRoot });
    expect(r.status).toBe(130);
    await expect(fs.stat(file)).rejects.toThrow();
  });

  it('is removed on SIGTERM, and the process still dies of the signal', async () => {
    const file = path.join(dir, 't.lock');
    const program = `import { acquireLock } from './dist/util/lock.js'; await acquireLock(${JSON.stringify(file)}, 't'); process.stdout.write('locked\\n'); setInterval(() => {}, 1000);`;
    const { spawn } = await import('node:child_process');
    const child = spawn(process.execPath, ['--input-type=module', '-e', program], {
      cwd: repoRoot,
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    await new Promise<void>((r) => child.stdout.once('data', () => r()));
    const ended = new Promise<NodeJS.Signals | null>((r) => child.on('close', (_code, signal) => r(signal)));
    child.kill('SIGTERM');
    expect(await ended).toBe('SIGTERM');
    await expect(fs.stat(file)).rejects.toThrow();
  });

  it('a kill -9 leaves a lock the next taker breaks (with a warning)', async () => {
    const file = path.join(dir, 'g.lock');
    const program = `import { acquireLock } from './dist/util/lock.js'; await acquireLock(${JSON.stringify(file)}, 'g'); process.kill(process.pid, 'SIGKILL');`;
    spawnSync(process.execPath, ['--input-type=module', '-e', program], { cwd: repoRoot });
    expect(await inspectLock(file)).toMatchObject({ state: 'stale' });
    const next = spawnSync(
      process.execPath,
      [
        '--input-type=module',
        '-e',
        `import { acquireLock } from './dist/util/lock.js'; const l = await acquireLock(${JSON.stringify(file)}, 'g'); await l.release();`,
      ],
      { cwd: repoRoot, encoding: 'utf8' },
    );
    expect(next.status).toBe(0);
    expect(next.stderr).toMatch(/^warning: g: removing a stale lock \(pid \d+ on host .*; process \d+ is gone\)\n$/);
    await expect(fs.stat(file)).rejects.toThrow();
  });
});

describe('lockFileFor / lockFolder', () => {
  it("puts a file's lock beside it as a hidden file, and a folder's inside it", async () => {
    expect(lockFileFor('/x/y/captions.jsonl')).toBe('/x/y/.captions.jsonl.lock');
    const folder = path.join(dir, 'run');
    const lock = await lockFolder(folder, 'run folder run');
    expect(await fs.readdir(folder)).toEqual(['.captioner.lock']);
    await lock.release();
    await expect(fs.stat(folder)).rejects.toThrow(); // created by the lock, left empty: removed again
    await fs.mkdir(folder);
    await (await lockFolder(folder, 'run folder run')).release();
    expect((await fs.stat(folder)).isDirectory()).toBe(true); // it was there before: kept
  });
});
