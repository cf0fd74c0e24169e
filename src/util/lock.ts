// One writer per output: an exclusive lock file that a stage takes before it writes an output (a run folder,
// a caption output file) and removes on every way out (its `finally`, and a process 'exit' hook for the
// second Ctrl-C). The file is created with O_EXCL and holds who took it: host, pid, the process's start
// (boot id and start tick, where /proc tells them) and the command. SIGTERM and SIGHUP remove the locks too
// (then the process dies of the signal as before). A lock whose holder is gone is broken,
// but only when that is certain: the host is this one and its pid is dead (or belongs to a newer process,
// or the machine rebooted since). A lock from another host is always honoured, since its pid means nothing
// here; the error says which file to delete if that run is known to be gone. Breaking is itself race-free:
// the stale file is renamed aside and removed only if it still holds the token that was judged stale.
// Node has no flock(2), and flock does not hold across NFS clients, which is where two machines meet.
import { randomBytes } from 'node:crypto';
import { readFileSync, unlinkSync, constants as fsc, promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { DataError, UsageError } from '../errors.js';
import { log } from '../log.js';
import { ensureDir, ioReason } from './fsx.js';

/** The lock file's name inside a folder that a stage owns (a run folder); stage folder checks ignore it. */
export const LOCK_NAME = '.captioner.lock';

/** The lock file that guards writes to the file `file` (a hidden sibling: folder scans skip it). */
export function lockFileFor(file: string): string {
  const abs = path.resolve(file);
  return path.join(path.dirname(abs), `.${path.basename(abs)}.lock`);
}

/** What a lock file holds. */
export interface LockInfo {
  kind: 'captioner.lock';
  host: string;
  pid: number;
  /** When the lock was taken (ISO time). */
  started: string;
  /** The command line of the holder, for the error message. */
  command: string;
  /** /proc/sys/kernel/random/boot_id of the holder's machine (Linux). */
  bootId?: string;
  /** The holder's start time in clock ticks since boot (/proc/<pid>/stat field 22; Linux). */
  procStart?: string;
  /** Random, per lock taken: release and stale-breaking touch only the file they judged. */
  token: string;
}

export interface Lock {
  readonly file: string;
  /** Remove the lock (only if it is still this one). Idempotent. */
  release(): Promise<void>;
}

/** Locks this process holds: removed by the 'exit' hook when a stage could not release them itself. */
const held = new Map<string, string>(); // file -> token
let exitHook = false;

function readProc(file: string): string | undefined {
  try {
    return readFileSync(file, 'utf8');
  } catch {
    return undefined;
  }
}

function bootId(): string | undefined {
  return readProc('/proc/sys/kernel/random/boot_id')?.trim() || undefined;
}

/** A process's start in clock ticks since boot (Linux), which tells it from a later process given the same pid. */
export function processStart(pid: number): string | undefined {
  const stat = readProc(`/proc/${pid}/stat`);
  if (!stat) return undefined;
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' '); // fields 3.. (the name may hold spaces)
  return fields[19]; // field 22: starttime
}

/** Whether `pid` is a live process on this machine (EPERM: alive, but another user's). */
export function pidAlive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function selfInfo(): LockInfo {
  const command = ['captioner', ...process.argv.slice(2)].join(' ');
  return {
    kind: 'captioner.lock',
    host: os.hostname(),
    pid: process.pid,
    started: new Date().toISOString(),
    command: command.length > 300 ? `${command.slice(0, 300)}...` : command,
    ...(bootId() ? { bootId: bootId() } : {}),
    ...(processStart(process.pid) ? { procStart: processStart(process.pid) } : {}),
    token: randomBytes(12).toString('hex'),
  };
}

function parseLock(text: string): LockInfo | null {
  try {
    const v = JSON.parse(text) as Partial<LockInfo>;
    if (
      v?.kind === 'captioner.lock' &&
      typeof v.host === 'string' &&
      typeof v.pid === 'number' &&
      typeof v.token === 'string'
    )
      return v as LockInfo;
  } catch {
    /* damaged */
  }
  return null;
}

/** Whose lock `file` is now: null when there is none; info null when it cannot be read as a lock. */
async function readLock(file: string): Promise<{ info: LockInfo | null } | null> {
  let text: string;
  try {
    text = await fs.readFile(file, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    return { info: null };
  }
  return { info: parseLock(text) };
}

/**
 * Why a lock is certainly stale (its holder is gone), or null when it may be alive. Only locks of this host
 * can be judged; a lock of this very process is alive.
 */
export function staleReason(info: LockInfo): string | null {
  if (info.host !== os.hostname()) return null;
  const boot = bootId();
  if (info.bootId && boot && info.bootId !== boot) return 'the machine has restarted since';
  if ([...held.values()].includes(info.token)) return null; // this process's own
  if (!pidAlive(info.pid)) return `process ${info.pid} is gone`;
  const now = processStart(info.pid);
  if (info.procStart && now && now !== info.procStart)
    return `process ${info.pid} is gone (the pid now belongs to another process)`;
  return null;
}

/** "pid 123 on host h (since 2026-01-01T10:00:00Z: captioner train --out x)". */
function describeHolder(info: LockInfo): string {
  return `pid ${info.pid} on host ${info.host} (since ${info.started}: ${info.command})`;
}

/** The error for an output another writer holds (exit 2). */
export class LockHeldError extends UsageError {
  constructor(
    readonly lockFile: string,
    readonly holder: LockInfo | null,
    what: string,
  ) {
    const mine = holder !== null && [...held.values()].includes(holder.token);
    const sameHost = holder?.host === os.hostname();
    const who = holder ? describeHolder(holder) : 'a writer whose lock file cannot be read';
    const advice = mine
      ? 'this process is already writing it'
      : sameHost
        ? 'wait for it to finish (or stop it), or write somewhere else'
        : `wait for it to finish, or write somewhere else; if that run is gone (its machine crashed or was reset), delete ${lockFile} and run again`;
    super(`${what}: in use by another captioner run, ${who}; ${advice}`);
    if (!holder)
      this.message = `${what}: in use by another captioner run (its lock file ${lockFile} is empty or damaged); if no captioner run is writing it, delete ${lockFile} and run again`;
  }
}

/** Move a stale lock aside and remove it, unless it is no longer the one judged stale (then it is put back). */
async function breakStale(file: string, stale: LockInfo): Promise<void> {
  const aside = `${file}.stale-${process.pid}-${randomBytes(4).toString('hex')}`;
  try {
    await fs.rename(file, aside);
  } catch {
    return; // gone meanwhile (its holder released it, or another process broke it): try again
  }
  const moved = parseLock(await fs.readFile(aside, 'utf8').catch(() => ''));
  if (moved?.token !== stale.token) {
    // another writer took the lock between our read and the rename: give it back
    await fs.link(aside, file).catch(() => {});
    await fs.unlink(aside).catch(() => {});
    return;
  }
  await fs.unlink(aside).catch(() => {});
}

function onExit(): void {
  for (const [file, token] of held) {
    try {
      if (parseLock(readFileSync(file, 'utf8'))?.token === token) unlinkSync(file);
    } catch {
      /* already gone */
    }
  }
  held.clear();
}

/**
 * Take the lock `file` for writing `what` (named in messages, e.g. "--output x.jsonl" or "run folder x").
 * Throws LockHeldError (exit 2) when another live writer holds it; a certainly stale lock of this host is
 * broken (logged). The folder of `file` must exist.
 */
export async function acquireLock(file: string, what: string): Promise<Lock> {
  for (let attempt = 0; attempt < 10; attempt++) {
    let handle: fs.FileHandle;
    try {
      handle = await fs.open(file, fsc.O_CREAT | fsc.O_EXCL | fsc.O_WRONLY, 0o644);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code !== 'EEXIST') throw new DataError(`${what}: cannot create the lock file ${file}: ${ioReason(e)}`);
      const current = await readLock(file);
      if (!current) continue; // released meanwhile
      if (!current.info) throw new LockHeldError(file, null, what);
      const why = staleReason(current.info);
      if (!why) throw new LockHeldError(file, current.info, what);
      log.warn(`${what}: removing a stale lock (${describeHolder(current.info)}; ${why})`);
      await breakStale(file, current.info);
      continue;
    }
    const info = selfInfo();
    try {
      await handle.writeFile(JSON.stringify(info) + '\n');
      await handle.sync();
      await handle.close();
    } catch (e) {
      await handle.close().catch(() => {});
      await fs.unlink(file).catch(() => {});
      throw new DataError(`${what}: cannot write the lock file ${file}: ${ioReason(e)}`);
    }
    held.set(file, info.token);
    if (!exitHook) {
      exitHook = true;
      process.on('exit', onExit);
      // killed by a supervisor or a timeout (SIGTERM, SIGHUP): remove the locks, then die of the signal as
      // before; a command that handles the signal itself keeps doing so
      for (const sig of ['SIGTERM', 'SIGHUP'] as const) {
        if (process.listenerCount(sig) > 0) continue;
        const die = () => {
          onExit();
          process.removeListener(sig, die);
          process.kill(process.pid, sig);
        };
        process.on(sig, die);
      }
    }
    let released = false;
    return {
      file,
      async release() {
        if (released) return;
        released = true;
        held.delete(file);
        const now = await readLock(file);
        if (now?.info?.token === info.token) await fs.unlink(file).catch(() => {});
      },
    };
  }
  throw new UsageError(`${what}: could not take the lock ${file}: other writers keep taking it`);
}

/** The state of a lock without taking it: free (no file), stale (its holder is certainly gone), or held. */
export async function inspectLock(
  file: string,
): Promise<
  { state: 'free' } | { state: 'stale'; info: LockInfo; why: string } | { state: 'held'; info: LockInfo | null }
> {
  const current = await readLock(file);
  if (!current) return { state: 'free' };
  if (!current.info) return { state: 'held', info: null };
  const why = staleReason(current.info);
  return why ? { state: 'stale', info: current.info, why } : { state: 'held', info: current.info };
}

/** A description of a lock's holder, for messages of other stages ("pid 1 on host h (since ...)"). */
export function holderText(info: LockInfo | null): string {
  return info ? describeHolder(info) : 'a writer whose lock file cannot be read';
}

/**
 * Take the lock of an output folder (`dir/.captioner.lock`), creating the folder if needed. Releasing also
 * removes the folder again when this call created it and nothing else was written into it (a stage that
 * failed its checks leaves no empty folder behind).
 */
export async function lockFolder(dir: string, what: string): Promise<Lock> {
  const existed = await fs.stat(dir).then(
    (s) => s.isDirectory(),
    () => false,
  );
  await ensureDir(dir);
  let lock: Lock;
  try {
    lock = await acquireLock(path.join(dir, LOCK_NAME), what);
  } catch (e) {
    if (!existed) await fs.rmdir(dir).catch(() => {});
    throw e;
  }
  return {
    file: lock.file,
    async release() {
      await lock.release();
      if (!existed) await fs.rmdir(dir).catch(() => {}); // only succeeds when empty
    },
  };
}
