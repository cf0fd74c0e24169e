// The feature cache's manifest I/O: reading and checking manifest.json and the writers' fragments, and
// merging them into one view.
// Part of src/features/cache/, the one module that writes, reads and versions the feature cache (entry:
// src/features/cache.ts).
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { DataError } from '../../errors.js';
import { readJson } from '../../util/fsx.js';
import {
  byName,
  FEATURES_KIND,
  FEATURES_VERSION,
  MANIFEST,
  PART_KIND,
  PART_RE,
  type ChunkEntry,
  type FailedImage,
  type FeaturesManifest,
  type ManifestPart,
} from './format.js';

export async function readBase(dir: string): Promise<FeaturesManifest | null> {
  const file = path.join(dir, MANIFEST);
  try {
    await fs.access(file);
  } catch {
    return null;
  }
  const m = await readJson<FeaturesManifest>(file, 'feature cache manifest');
  if (!m || m.kind !== FEATURES_KIND)
    throw new DataError(
      `${file}: not a feature cache manifest (kind ${JSON.stringify(m?.kind)}, expected "${FEATURES_KIND}")`,
    );
  if (m.version !== 1 && m.version !== 2 && m.version !== FEATURES_VERSION)
    throw new DataError(
      `${file}: feature cache version ${m.version} is not supported (this captioner reads versions 1 to ${FEATURES_VERSION}); recompute with \`captioner features\` into a fresh --out`,
    );
  if (!Array.isArray(m.shape) || (m.dtype !== 'float32' && m.dtype !== 'float16'))
    throw new DataError(`${file}: malformed feature cache manifest (shape or dtype missing)`);
  const chunks = chunkList(m);
  if (m.version === 1 && !Array.isArray(chunks))
    throw new DataError(`${file}: malformed feature cache manifest (shards missing)`);
  m.chunks = chunks ?? [];
  m.failed ??= [];
  return m;
}

/**
 * The chunk list of a manifest or fragment as written: `chunks` from version 3 on, `shards` before (the
 * same entries; version 3 only renamed the word). Both are read so that caches written by earlier
 * captioners keep working; the older key is removed from the object, so the rest of the code sees `chunks` only.
 */
function chunkList(o: FeaturesManifest | ManifestPart): ChunkEntry[] | undefined {
  const old = o as { shards?: ChunkEntry[] };
  const list = o.version < 3 ? old.shards : o.chunks;
  delete old.shards;
  return list;
}

export async function readPart(file: string, fingerprint: string): Promise<ManifestPart> {
  const p = await readJson<ManifestPart>(file, 'feature cache fragment');
  const chunks = p && (p.version === 2 || p.version === FEATURES_VERSION) ? chunkList(p) : undefined;
  if (!p || p.kind !== PART_KIND || !Array.isArray(chunks) || !Array.isArray(p.failed) || !p.writer) {
    throw new DataError(`${file}: malformed feature cache fragment; delete it (its images will be computed again)`);
  }
  p.chunks = chunks;
  if (p.fingerprint !== fingerprint)
    throw new DataError(
      `${file}: this fragment was computed with other settings than ${MANIFEST}; delete it (its images will be computed again)`,
    );
  return p;
}

export interface Snapshot {
  base: FeaturesManifest;
  /** Fragment file name -> fragment, sorted by name. */
  parts: Map<string, ManifestPart>;
}

export async function readSnapshot(dir: string): Promise<Snapshot | null> {
  const base = await readBase(dir);
  if (!base) return null;
  const parts = new Map<string, ManifestPart>();
  for (const name of (await fs.readdir(dir)).filter((n) => PART_RE.test(n)).sort(byName)) {
    let p: ManifestPart;
    try {
      p = await readPart(path.join(dir, name), base.fingerprint);
    } catch (e) {
      if (e instanceof DataError && /ENOENT/.test(e.message)) continue; // an empty fragment cleaned up meanwhile
      throw e;
    }
    parts.set(name, p);
  }
  return { base, parts };
}

/** The merged view: base chunks, then each fragment's (by name); failures minus anything cached. */
export function merge(snap: Snapshot): FeaturesManifest {
  // chunks: base first, then each fragment's, fragments by file name (the first copy of a key wins)
  const chunks = [...snap.base.chunks, ...[...snap.parts.values()].flatMap((p) => p.chunks)];
  const cached = new Set(chunks.flatMap((s) => s.keys));
  // failures: the latest attempt per image wins (writers keep their timestamps after all they saw)
  const failed = new Map<string, FailedImage>();
  for (const f of snap.base.failed) failed.set(f.image, f);
  let updated = snap.base.updated;
  for (const p of [...snap.parts.values()].sort(
    (a, b) => byName(a.updated, b.updated) || byName(a.writer.id, b.writer.id),
  )) {
    for (const f of p.failed) failed.set(f.image, f);
    if (p.updated > updated) updated = p.updated;
  }
  return {
    ...snap.base,
    version: FEATURES_VERSION,
    count: cached.size,
    chunks,
    failed: [...failed.values()].filter((f) => !cached.has(f.image)).sort((a, b) => byName(a.image, b.image)),
    updated,
    parts: [...snap.parts.keys()],
  };
}

export function describeSpec(
  m: Pick<FeaturesManifest, 'encoder' | 'layer' | 'dtype' | 'weights' | 'preprocessing'>,
): string {
  return `${m.encoder.name} ${m.layer}, weights ${m.weights === 'random' ? 'random' : path.basename(m.weights)}, ${m.dtype}, ${m.preprocessing.interpolation} resize`;
}
