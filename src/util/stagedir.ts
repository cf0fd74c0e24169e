// The one check every stage writer (prep, features, train) runs on its output folder before writing:
// a folder that holds another stage's artifact (prepared dataset, feature cache, run folder; each
// marks itself with manifest.json `kind`) or unrelated files is refused, so `--out` never overwrites
// something else. Allowed: a missing or empty folder, a folder whose manifest has this stage's kind,
// and a folder holding only this stage's own file names (what an interrupted first write leaves).
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { UsageError } from '../errors.js';
import { LOCK_NAME } from './lock.js';

/** What each artifact kind is called in messages. */
const KIND_NAMES: Record<string, string> = {
  'captioner.prepared': 'a prepared dataset',
  'captioner.features': 'a feature cache',
  'captioner.model': 'a training run (model)',
  'captioner.eval': 'an eval report',
  'captioner.attention-maps': 'a folder of attention maps',
  'captioner.demo-data': 'a demo dataset',
};

export interface StageFolder {
  /** The manifest kind this stage writes. */
  kind: string;
  /** The option naming the folder, for the advice (e.g. "--out / train.out"). */
  option: string;
  /** Names this stage writes at the top of its folder; a folder holding only these (or temporaries) is a
   *  leftover of this stage. Omit to accept any content that is not another stage's artifact. */
  ownNames?: readonly string[];
}

/** Throws UsageError (exit 2) when `dir` holds another stage's artifact or, with ownNames, unrelated files. */
export async function checkStageFolder(dir: string, stage: StageFolder): Promise<void> {
  let names: string[];
  try {
    names = (await fs.readdir(dir)).filter((n) => !n.startsWith(LOCK_NAME)); // a writer's lock (util/lock.ts) is no content
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return;
    // `dir` itself a file: refused here; a file further up the path: the writer's ensureDir names it
    if (code === 'ENOTDIR' && (await fs.stat(dir).catch(() => null))?.isFile())
      throw new UsageError(`${dir}: is a file, not a folder; choose another folder with ${stage.option}`);
    return; // unreadable: the writer reports it with its own message
  }
  if (!names.length) return;
  const kind = await manifestKind(path.join(dir, 'manifest.json'));
  if (kind === stage.kind) return;
  const refuse = (what: string) =>
    new UsageError(
      `${dir}: holds ${what}, not ${KIND_NAMES[stage.kind] ?? stage.kind}; refusing to write over it (choose another folder with ${stage.option})`,
    );
  if (kind !== undefined && KIND_NAMES[kind]) throw refuse(KIND_NAMES[kind]);
  if (!stage.ownNames) {
    if (kind !== undefined) throw refuse(`a manifest.json of another kind (${JSON.stringify(kind)})`);
    return;
  }
  const own = new Set(stage.ownNames);
  const foreign = names.filter(
    (n) =>
      !own.has(n) &&
      !n.endsWith('.tmp') &&
      !stage.ownNames!.some((o) => n.startsWith(`${o}.`) && /\.(tmp|old|new)-/.test(n)),
  );
  if (foreign.length || kind !== undefined) {
    const shown = foreign.length ? foreign : ['manifest.json'];
    throw refuse(`other files (${shown.slice(0, 5).join(', ')}${shown.length > 5 ? ', ...' : ''})`);
  }
}

/** The `kind` of a manifest.json: undefined when there is none, 'unknown' / 'unreadable' for a manifest without one. */
async function manifestKind(file: string): Promise<string | undefined> {
  let text: string;
  try {
    text = await fs.readFile(file, 'utf8');
  } catch {
    return undefined; // no manifest
  }
  try {
    const m = JSON.parse(text) as { kind?: unknown };
    return typeof m?.kind === 'string' ? m.kind : 'unknown';
  } catch {
    return 'unreadable';
  }
}
