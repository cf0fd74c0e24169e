// File digests (sha256 + md5 in one pass) with a sidecar cache keyed by size and mtime, so a 528 MB
// weights file is hashed once, not at every run.
import { createHash } from 'node:crypto';
import { createReadStream, promises as fs } from 'node:fs';
import * as path from 'node:path';
import { progress } from '../../log.js';
import { writeJsonAtomic } from '../../util/fsx.js';
import { ModelError } from '../../errors.js';

export interface Digest {
  sha256: string;
  md5: string;
}

interface Sidecar extends Digest {
  version: 1;
  files: { name: string; size: number; mtimeMs: number }[];
}

/**
 * Where a weights file's digest is cached (keyed by size + mtime): beside the file for files in the
 * cache folder, else in <cacheDir>/digests/ (user folders stay untouched).
 */
export function sidecarFor(file: string, cacheDir: string): string {
  const abs = path.resolve(file);
  if (path.dirname(abs) === path.resolve(cacheDir)) return `${abs}.digest.json`;
  return path.join(cacheDir, 'digests', `${createHash('sha256').update(abs).digest('hex').slice(0, 24)}.json`);
}

/** sha256 and md5 of the concatenation of `files` (one file: the usual sha256sum / md5sum). */
export async function hashFiles(files: readonly string[], label = 'hashing'): Promise<Digest> {
  const sha = createHash('sha256');
  const md5 = createHash('md5');
  let total = 0;
  for (const f of files) total += (await fs.stat(f)).size;
  const bar = total > 64 * 1024 * 1024 ? progress(label, total, '{bar} {percentage}% | ETA {eta_formatted}') : null;
  try {
    for (const f of files) {
      for await (const chunk of createReadStream(f, { highWaterMark: 1 << 20 })) {
        sha.update(chunk as Buffer);
        md5.update(chunk as Buffer);
        bar?.tick((chunk as Buffer).length);
      }
    }
  } catch (e) {
    throw new ModelError(
      `cannot read ${files.join(', ')}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`,
    );
  } finally {
    bar?.stop();
  }
  return { sha256: sha.digest('hex'), md5: md5.digest('hex') };
}

async function stamp(files: readonly string[]): Promise<Sidecar['files']> {
  return Promise.all(
    files.map(async (name) => {
      const st = await fs.stat(name);
      return { name, size: st.size, mtimeMs: st.mtimeMs };
    }),
  );
}

/**
 * Digest of `files`, reusing `sidecar` when it records the same files with the same sizes and mtimes.
 * The sidecar is (re)written best-effort: a read-only folder just means hashing again next time.
 */
export async function fileDigest(files: readonly string[], sidecar: string): Promise<Digest> {
  const now = await stamp(files);
  try {
    const old = JSON.parse(await fs.readFile(sidecar, 'utf8')) as Sidecar;
    if (
      old.version === 1 &&
      typeof old.sha256 === 'string' &&
      typeof old.md5 === 'string' &&
      JSON.stringify(old.files) === JSON.stringify(now)
    ) {
      return { sha256: old.sha256, md5: old.md5 };
    }
  } catch {
    // absent or unreadable: hash
  }
  const digest = await hashFiles(files);
  await recordDigest(files, sidecar, digest);
  return digest;
}

/** Store a digest computed elsewhere (e.g. while downloading), best-effort. */
export async function recordDigest(files: readonly string[], sidecar: string, digest: Digest): Promise<void> {
  try {
    const value: Sidecar = { version: 1, files: await stamp(files), ...digest };
    await writeJsonAtomic(sidecar, value);
  } catch {
    // read-only location: fine
  }
}
