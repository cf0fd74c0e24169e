// The feature cache's housekeeping when a writer opens: deleting what finished writers left behind, and
// upgrading an older base manifest (version 1 or 2) in place (under the version 1 writers' lock file).
// Part of src/features/cache/, the one module that writes, reads and versions the feature cache (entry:
// src/features/cache.ts).
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { DataError } from '../../errors.js';
import { writeJsonAtomic } from '../../util/fsx.js';
import {
  FEATURES_VERSION,
  MANIFEST,
  OWNED_RE,
  PART_RE,
  STALE_MS,
  UPGRADE_LOCK,
  V1_CHUNK_RE,
  V1_TMP_RE,
  type ManifestPart,
  type WriterIdentity,
} from './format.js';
import { readBase, readPart, type Snapshot } from './manifest.js';

function alive(pid: number): boolean {
  if (pid === process.pid) return true;
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Whether the writer of a fragment has provably finished (so files it did not reference are garbage). */
function writerGone(p: ManifestPart, mtimeMs: number, me: WriterIdentity, now: number): boolean {
  if (p.closed) return true;
  const w = p.writer;
  // a pid only means something in our own PID namespace on this boot of this host
  if (me.boot && me.pidns && w.boot === me.boot && w.pidns === me.pidns && w.host === me.host && !alive(w.pid))
    return true;
  return now - mtimeMs > STALE_MS;
}

export const mtimeOf = (file: string) =>
  fs.stat(file).then(
    (s) => s.mtimeMs,
    () => null,
  );

/** Delete what no fragment names and whose writer provably finished; never a running writer's files. */
export async function removeGarbage(dir: string, snap: Snapshot, me: WriterIdentity): Promise<void> {
  const now = Date.now();
  const referenced = new Set(
    [...snap.base.chunks, ...[...snap.parts.values()].flatMap((p) => p.chunks)].map((s) => s.file),
  );
  const owners = new Map<string, { name: string; part: ManifestPart }>();
  for (const [name, part] of snap.parts) owners.set(PART_RE.exec(name)![1], { name, part });
  // verdict per writer, from its fragment as it is now (it may have changed since `snap` was read)
  const verdicts = new Map<string, { gone: boolean; refs: Set<string>; empty: boolean }>();
  const gone = async (owner: string, name: string): Promise<boolean> => {
    const o = owners.get(owner);
    if (!o) {
      const t = await mtimeOf(path.join(dir, name)); // no fragment (yet): judge by the file's own age
      return t !== null && now - t > STALE_MS;
    }
    if (!verdicts.has(owner)) {
      const file = path.join(dir, o.name);
      const t = await mtimeOf(file);
      const part = await readPart(file, snap.base.fingerprint).catch(() => null);
      const empty = part !== null && !part.chunks.length && !part.failed.length;
      verdicts.set(owner, {
        gone: t !== null && part !== null && writerGone(part, t, me, now),
        refs: new Set(part?.chunks.map((s) => s.file)),
        empty,
      });
    }
    const v = verdicts.get(owner)!;
    return v.gone && !v.refs.has(name);
  };
  // fragments last, so that the verdict on their writer is reached while they still exist
  const names = (await fs.readdir(dir)).sort((a, b) => Number(PART_RE.test(a)) - Number(PART_RE.test(b)));
  for (const name of names) {
    const m = OWNED_RE.exec(name);
    let remove = false;
    if (m) {
      const owner = m[2] ?? m[3] ?? m[4];
      const tmp = m[5] !== undefined || m[1] === '.';
      if (owner === me.id) continue;
      if (m[3] && !tmp) {
        // a fragment is data: only an empty one of a finished writer goes
        remove = snap.parts.has(name) && (await gone(owner, name)) && verdicts.get(owner)!.empty;
      } else if (m[2] && !tmp && referenced.has(name)) remove = false;
      else remove = await gone(owner, name);
    } else if ((V1_CHUNK_RE.test(name) && !referenced.has(name)) || V1_TMP_RE.test(name) || name === UPGRADE_LOCK) {
      const t = await mtimeOf(path.join(dir, name)); // left by a version 1 writer
      remove = t !== null && now - t > STALE_MS;
    }
    if (remove) await fs.rm(path.join(dir, name), { force: true });
  }
}

/**
 * Rewrite an older base manifest (version 1 or 2) as the current version, in place: the same chunks and
 * files (readBase has read the older `shards` list as `chunks`). Version 1 writers, and other upgrades, are
 * excluded by the version 1 writers' lock; the manifest is re-read under it, so a second upgrade is a no-op.
 */
export async function upgradeBase(dir: string): Promise<void> {
  const lock = path.join(dir, UPGRADE_LOCK);
  const deadline = Date.now() + 120_000;
  for (;;) {
    try {
      await (await fs.open(lock, 'wx')).close();
      break;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST')
        throw new DataError(`${lock}: cannot create the cache lock (${(e as NodeJS.ErrnoException).code})`);
      const t = await mtimeOf(lock);
      if (t !== null && Date.now() - t > STALE_MS) await fs.rm(lock, { force: true });
      else if (Date.now() > deadline)
        throw new DataError(
          `${lock}: another captioner holds this feature cache's lock (an older one writing a version 1 cache, or one upgrading it); wait for it to finish, or delete the lock file if none is running`,
        );
      else await new Promise((r) => setTimeout(r, 50 + Math.random() * 100));
    }
  }
  try {
    const m = await readBase(dir);
    if (m && m.version < FEATURES_VERSION)
      await writeJsonAtomic(path.join(dir, MANIFEST), { ...m, version: FEATURES_VERSION });
  } finally {
    await fs.rm(lock, { force: true });
  }
}
