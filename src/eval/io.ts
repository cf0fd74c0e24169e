// Reading captions to score: candidate files (COCO results JSON, or the JSONL written by caption/eval) and
// reference files (COCO captions JSON, Flickr8k token file, Karpathy JSON, or a prepared dataset folder),
// and matching candidates to references by image id. Every problem is a DataError naming the file.
// Ids: a candidate's image_id may be a COCO id (an integer, as eval writes for COCO data) or a file name
// (path-like names match by basename). COCO references know both; Karpathy and prepared references know
// file names and, for COCO images, cocoid/cocoId; Flickr token files only file names. Each candidate is
// matched on its own, so a file mixing ids and names works; two candidates naming one image are refused.
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { DataError } from '../errors.js';
import type { ScorePair } from './score.js';

export type ReferenceFormat = 'coco' | 'flickr8k' | 'karpathy' | 'prepared';

export interface ReferenceSet {
  format: ReferenceFormat;
  /** Canonical image id -> its reference captions, in file order. */
  byId: Map<string, string[]>;
  /** Other names of an image (file name, numeric id, basename) -> canonical id. Ambiguous names are left out. */
  aliases: Map<string, string>;
  /** Canonical ids the file lists (COCO `images`) without any caption: they cannot be scored. */
  uncaptioned: Set<string>;
  /** Whether the references know integer COCO image ids (COCO JSON, Karpathy COCO, prepared COCO sets). */
  cocoIds: boolean;
  source: string;
}

export interface Candidate {
  id: string;
  caption: string;
  /** `file:line` (JSONL) or `file: entry N` (JSON), for messages. */
  where: string;
  /** The id was a JSON integer (a COCO image id). */
  integer?: boolean;
}

export interface CandidateFile {
  candidates: Candidate[];
  /** JSONL lines carrying an "error" field (images that failed to caption): skipped. */
  skippedErrors: number;
}

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);
const isId = (v: unknown): v is string | number =>
  (typeof v === 'string' && v.length > 0) || (typeof v === 'number' && Number.isFinite(v));

async function readText(file: string, what: string): Promise<string> {
  try {
    return await fs.readFile(file, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new DataError(
      `${file}: cannot read ${what}: ${code === 'ENOENT' ? 'no such file' : (code ?? (e as Error).message)}`,
    );
  }
}

function parseJson(text: string, file: string): unknown {
  try {
    return JSON.parse(text.charCodeAt(0) === 0xfeff ? text.slice(1) : text);
  } catch (e) {
    throw new DataError(`${file}: not valid JSON: ${(e as Error).message}`);
  }
}

// ---------------------------------------------------------------------------------------------- candidates

/** Read candidate captions: a COCO results JSON array, or JSONL with one {"image"|"image_id", "caption"} a line. */
export async function readCandidates(file: string): Promise<CandidateFile> {
  const text = await readText(file, 'candidates');
  const body = text.replace(/^\uFEFF/, '');
  if (body.trim() === '') throw new DataError(`${file}: candidates file is empty`);
  const candidates: Candidate[] = [];
  let skippedErrors = 0;
  if (body.trimStart().startsWith('[')) {
    const arr = parseJson(body, file) as unknown[];
    arr.forEach((e, i) => {
      const where = `${file}: entry ${i + 1}`;
      if (!isObj(e)) throw new DataError(`${where}: expected an object {"image_id", "caption"}`);
      if (e.error !== undefined && e.caption === undefined) {
        skippedErrors++;
        return;
      }
      candidates.push(candidateOf(e, where));
    });
  } else {
    const lines = body.split(/\r?\n/);
    lines.forEach((line, i) => {
      if (line.trim() === '') return;
      const where = `${file}:${i + 1}`;
      let e: unknown;
      try {
        e = JSON.parse(line);
      } catch (err) {
        throw new DataError(
          `${where}: not valid JSON (expected one {"image", "caption"} object a line, or a COCO results JSON array): ${(err as Error).message}`,
        );
      }
      if (!isObj(e)) throw new DataError(`${where}: expected an object {"image", "caption"}`);
      if (e.error !== undefined) {
        skippedErrors++;
        return;
      }
      candidates.push(candidateOf(e, where));
    });
  }
  if (candidates.length === 0) {
    throw new DataError(
      skippedErrors > 0
        ? `${file}: no candidates to score: all ${skippedErrors} entries carry an "error"`
        : `${file}: no candidates to score`,
    );
  }
  return { candidates, skippedErrors };
}

function candidateOf(e: Obj, where: string): Candidate {
  const id = e.image_id ?? e.image;
  if (!isId(id)) throw new DataError(`${where}: missing image id (expected "image" or "image_id")`);
  if (typeof e.caption !== 'string') throw new DataError(`${where}: missing "caption" string`);
  return { id: String(id), caption: e.caption, where, ...(Number.isInteger(id) ? { integer: true } : {}) };
}

// ---------------------------------------------------------------------------------------------- references

/** Read references from a COCO captions JSON, a Karpathy JSON, a Flickr8k token file, or a prepared folder. */
export async function readReferences(p: string): Promise<ReferenceSet> {
  let stat;
  try {
    stat = await fs.stat(p);
  } catch {
    throw new DataError(`${p}: references not found`);
  }
  if (stat.isDirectory()) return readPrepared(p);
  const text = (await readText(p, 'references')).replace(/^\uFEFF/, '');
  if (text.trim() === '') throw new DataError(`${p}: references file is empty`);
  if (text.trimStart().startsWith('{')) {
    const d = parseJson(text, p);
    if (isObj(d) && Array.isArray(d.annotations)) return readCoco(d, p);
    if (isObj(d) && Array.isArray(d.images)) return readKarpathy(d, p);
    throw new DataError(
      `${p}: JSON is neither COCO captions ({"annotations": [...]}) nor Karpathy ({"images": [{"filename", "sentences"}]})`,
    );
  }
  return readFlickrToken(text, p);
}

class RefBuilder {
  byId = new Map<string, string[]>();
  private alias = new Map<string, string>();
  private ambiguous = new Set<string>();
  cocoIds = false;
  add(id: string, caption: string): void {
    const list = this.byId.get(id);
    if (list) list.push(caption);
    else this.byId.set(id, [caption]);
  }
  ensure(id: string): void {
    if (!this.byId.has(id)) this.byId.set(id, []);
  }
  addAlias(name: string | undefined, id: string): void {
    if (!name || name === id || this.ambiguous.has(name)) return;
    const prev = this.alias.get(name);
    if (prev === undefined) this.alias.set(name, id);
    else if (prev !== id) {
      this.alias.delete(name);
      this.ambiguous.add(name);
    }
  }
  build(format: ReferenceFormat, source: string): ReferenceSet {
    // an alias equal to some canonical id would shadow nothing: canonical ids win in matching anyway
    const uncaptioned = new Set<string>();
    for (const [id, caps] of this.byId) {
      if (caps.length > 0) continue;
      this.byId.delete(id);
      uncaptioned.add(id);
    }
    if (this.byId.size === 0) throw new DataError(`${source}: no reference captions found`);
    return { format, byId: this.byId, aliases: this.alias, uncaptioned, cocoIds: this.cocoIds, source };
  }
}

function readCoco(d: Obj, file: string): ReferenceSet {
  const b = new RefBuilder();
  (d.annotations as unknown[]).forEach((a, i) => {
    if (!isObj(a) || !isId(a.image_id) || typeof a.caption !== 'string') {
      throw new DataError(`${file}: annotations[${i}]: expected {"image_id", "caption"}`);
    }
    b.add(String(a.image_id), a.caption);
    if (Number.isInteger(a.image_id)) b.cocoIds = true;
  });
  if (Array.isArray(d.images)) {
    for (const im of d.images) {
      if (!isObj(im) || !isId(im.id) || typeof im.file_name !== 'string') continue;
      const id = String(im.id);
      b.ensure(id);
      b.addAlias(im.file_name, id);
      b.addAlias(path.posix.basename(im.file_name), id);
    }
  }
  return b.build('coco', file);
}

function readKarpathy(d: Obj, file: string): ReferenceSet {
  const b = new RefBuilder();
  (d.images as unknown[]).forEach((im, i) => {
    if (!isObj(im) || typeof im.filename !== 'string' || !Array.isArray(im.sentences)) {
      throw new DataError(`${file}: images[${i}]: expected {"filename", "sentences": [...]} (Karpathy format)`);
    }
    const id = im.filename;
    for (const s of im.sentences) {
      if (isObj(s) && typeof s.raw === 'string') b.add(id, s.raw);
      else if (isObj(s) && Array.isArray(s.tokens)) b.add(id, s.tokens.join(' '));
      else throw new DataError(`${file}: images[${i}] (${id}): a sentence has neither "raw" nor "tokens"`);
    }
    if (typeof im.filepath === 'string') b.addAlias(`${im.filepath}/${id}`, id);
    if (isId(im.cocoid)) {
      b.addAlias(String(im.cocoid), id);
      b.cocoIds = true;
    }
  });
  return b.build('karpathy', file);
}

function readFlickrToken(text: string, file: string): ReferenceSet {
  const b = new RefBuilder();
  text.split(/\r?\n/).forEach((line, i) => {
    if (line.trim() === '') return;
    const tab = line.indexOf('\t');
    const hash = tab < 0 ? -1 : line.lastIndexOf('#', tab);
    if (tab < 0 || hash <= 0) {
      throw new DataError(
        `${file}:${i + 1}: expected "image.jpg#N<TAB>caption" (Flickr8k token file), COCO captions JSON or Karpathy JSON`,
      );
    }
    b.add(line.slice(0, hash), line.slice(tab + 1).trim());
  });
  return b.build('flickr8k', file);
}

async function readPrepared(dir: string): Promise<ReferenceSet> {
  const manifestFile = path.join(dir, 'manifest.json');
  const m = parseJson(await readText(manifestFile, 'prepared dataset manifest'), manifestFile);
  if (!isObj(m) || m.kind !== 'captioner.prepared') {
    throw new DataError(`${manifestFile}: not a prepared dataset manifest (expected "kind": "captioner.prepared")`);
  }
  const b = new RefBuilder();
  let files = 0;
  for (const split of ['train', 'val', 'test']) {
    const f = path.join(dir, `${split}.jsonl`);
    let text: string;
    try {
      text = await fs.readFile(f, 'utf8');
    } catch {
      continue;
    }
    files++;
    text.split(/\r?\n/).forEach((line, i) => {
      if (line.trim() === '') return;
      let e: unknown;
      try {
        e = JSON.parse(line);
      } catch (err) {
        throw new DataError(`${f}:${i + 1}: not valid JSON: ${(err as Error).message}`);
      }
      if (!isObj(e) || !isId(e.image) || !Array.isArray(e.captions))
        throw new DataError(`${f}:${i + 1}: expected {"image", "captions": [...]}`);
      const id = String(e.image);
      for (const c of e.captions) if (typeof c === 'string') b.add(id, c);
      b.addAlias(path.posix.basename(id.replaceAll('\\', '/')), id);
      if (typeof e.file === 'string') b.addAlias(path.basename(e.file), id);
      if (isId(e.cocoId)) {
        // a set prepared from COCO or Karpathy COCO records each image's COCO id (older sets have none)
        b.addAlias(String(e.cocoId), id);
        b.cocoIds = true;
      }
    });
  }
  if (files === 0) throw new DataError(`${dir}: prepared dataset has no train/val/test.jsonl`);
  return b.build('prepared', dir);
}

// ---------------------------------------------------------------------------------------------- matching

/**
 * Find the reference image of a candidate id: exact id, alias, then (for paths) the basename. The result may
 * be an image listed without captions (`refs.uncaptioned`); matchCandidates reports those.
 */
export function resolveId(id: string, refs: ReferenceSet): string | undefined {
  if (refs.byId.has(id) || refs.uncaptioned.has(id)) return id;
  const a = refs.aliases.get(id);
  if (a !== undefined) return a;
  if (/[/\\]/.test(id)) {
    const base = id.slice(Math.max(id.lastIndexOf('/'), id.lastIndexOf('\\')) + 1);
    if (refs.byId.has(base) || refs.uncaptioned.has(base)) return base;
    return refs.aliases.get(base);
  }
  return undefined;
}

const sample = (xs: string[], n = 5) => xs.slice(0, n).join(', ') + (xs.length > n ? ', ...' : '');

/**
 * Pair every candidate with its references. Throws a DataError for duplicates or unmatched candidates, and
 * for candidates whose image the references list without any caption (nothing to score against: refusing
 * is safer than quietly scoring a subset, as for candidates with no reference image at all).
 */
export function matchCandidates(
  cands: readonly Candidate[],
  refs: ReferenceSet,
  candidatesFile = 'candidates',
): ScorePair[] {
  const firstById = new Map<string, Candidate>();
  const dupes: string[] = [];
  for (const c of cands) {
    const prev = firstById.get(c.id);
    if (prev) dupes.push(`${c.id} (${prev.where} and ${c.where})`);
    else firstById.set(c.id, c);
  }
  if (dupes.length)
    throw new DataError(`${candidatesFile}: ${dupes.length} duplicate candidate id(s): ${sample(dupes, 3)}`);

  const missing: string[] = [];
  const uncaptioned: string[] = [];
  const byRef = new Map<string, Candidate>();
  const clashes: string[] = [];
  const pairs: ScorePair[] = [];
  for (const c of cands) {
    const refId = resolveId(c.id, refs);
    if (refId === undefined) {
      missing.push(c.id);
      continue;
    }
    const references = refs.byId.get(refId);
    if (references === undefined) {
      uncaptioned.push(refId === c.id ? c.id : `${c.id} (image ${refId})`);
      continue;
    }
    const prev = byRef.get(refId);
    if (prev) {
      clashes.push(`${prev.id} and ${c.id} -> ${refId}`);
      continue;
    }
    byRef.set(refId, c);
    pairs.push({ id: c.id, candidate: c.caption, references });
  }
  if (missing.length) {
    const intMissing = cands.filter((c) => c.integer && resolveId(c.id, refs) === undefined).length;
    const hint =
      intMissing > 0 && !refs.cocoIds
        ? `; ${intMissing === missing.length ? 'they are' : `${intMissing} are`} integer COCO image ids, and these references name images by file only ` +
          `(score against the COCO captions JSON, a Karpathy COCO file, or a prepared COCO set made by this captioner version)`
        : pairs.length === 0
          ? ` (reference ids look like: ${sample([...refs.byId.keys()], 3)})`
          : '';
    throw new DataError(
      `${candidatesFile}: ${missing.length} of ${cands.length} candidate(s) have no references in ${refs.source}: ${sample(missing)}${hint}`,
    );
  }
  if (uncaptioned.length) {
    throw new DataError(
      `${candidatesFile}: ${uncaptioned.length} of ${cands.length} candidate(s) name images that ${refs.source} lists without any reference caption, ` +
        `so they cannot be scored: ${sample(uncaptioned)} (leave these candidates out, or use references that caption them)`,
    );
  }
  if (clashes.length)
    throw new DataError(
      `${candidatesFile}: ${clashes.length} pair(s) of candidates name the same reference image: ${sample(clashes, 3)}`,
    );
  return pairs;
}

/** Read both files and pair them up. */
export async function loadScorePairs(
  candidatesFile: string,
  referencesPath: string,
): Promise<{ pairs: ScorePair[]; skippedErrors: number; format: ReferenceFormat }> {
  const [c, r] = await Promise.all([readCandidates(candidatesFile), readReferences(referencesPath)]);
  return { pairs: matchCandidates(c.candidates, r, candidatesFile), skippedErrors: c.skippedErrors, format: r.format };
}
