// `captioner weights vgg16` stage: make Keras's VGG16 ImageNet weights available in the cache, by
// download (resumable, md5 checked) or by importing a local copy. loadVgg16Weights('auto') reads them.
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { ModelError } from '../../errors.js';
import { log } from '../../log.js';
import { KERAS_VGG16_FILES, weightsCacheDir, weightsUrlBase, type WeightsFile } from './cache.js';
import { downloadFile, importFile } from './download.js';
import { fileDigest, hashFiles, sidecarFor } from './hash.js';

export interface FetchVgg16Options {
  /** The full file (default) or the _notop one. */
  includeTop?: boolean;
  cacheDir?: string;
  /** Import this local file instead of downloading. */
  from?: string;
  /** Download from here instead of Keras's location (default: $CAPTIONER_WEIGHTS_URL or Keras's). */
  urlBase?: string;
  /** Download again even when a verified copy is cached. */
  force?: boolean;
  attempts?: number;
  retryDelayMs?: number;
  /** The files and md5s to expect (tests substitute small fixtures; default Keras's). */
  files?: { top: WeightsFile; notop: WeightsFile };
}

export interface FetchVgg16Result {
  file: string;
  includeTop: boolean;
  action: 'cached' | 'downloaded' | 'imported';
  bytes: number;
  md5: string;
  sha256: string;
}

export async function fetchVgg16Weights(opts: FetchVgg16Options = {}): Promise<FetchVgg16Result> {
  const cacheDir = path.resolve(opts.cacheDir ?? weightsCacheDir());
  const files = opts.files ?? KERAS_VGG16_FILES;
  let target: WeightsFile = opts.includeTop === false ? files.notop : files.top;

  if (opts.from) {
    const src = path.resolve(opts.from);
    try {
      await fs.access(src);
    } catch {
      throw new ModelError(`${opts.from}: file not found`);
    }
    const digest = await hashFiles([src], 'checking');
    const other = target === files.top ? files.notop : files.top;
    if (digest.md5 !== target.md5 && digest.md5 === other.md5) {
      log.info(`${opts.from} is Keras's ${other.includeTop ? 'full' : 'no-top'} VGG16 file; importing it as such`);
      target = other;
    } else if (digest.md5 !== target.md5) {
      throw new ModelError(
        `${opts.from}: md5 ${digest.md5} matches neither Keras file (${files.top.name} ${files.top.md5}, ` +
          `${files.notop.name} ${files.notop.md5}); to use other VGG16 weights, set encoder.weights to the file's path instead`,
      );
    }
    const dest = path.join(cacheDir, target.name);
    const r = await importFile(src, dest, { digest, sidecar: sidecarFor(dest, cacheDir) });
    log.info(`imported ${dest}`);
    return { file: dest, includeTop: target.includeTop, action: 'imported', ...r };
  }

  const dest = path.join(cacheDir, target.name);
  if (!opts.force) {
    let st = null;
    try {
      st = await fs.stat(dest);
    } catch {
      // not cached
    }
    if (st) {
      const d = await fileDigest([dest], sidecarFor(dest, cacheDir));
      if (d.md5 === target.md5) {
        log.info(`${dest} is already cached (md5 ok)`);
        return { file: dest, includeTop: target.includeTop, action: 'cached', bytes: st.size, ...d };
      }
      log.warn(`${dest}: md5 ${d.md5} is not ${target.md5}; downloading again`);
    }
  }
  await fs.rm(dest, { force: true });
  const url =
    (opts.urlBase ? (opts.urlBase.endsWith('/') ? opts.urlBase : opts.urlBase + '/') : weightsUrlBase()) + target.name;
  log.info(`downloading ${url} (about ${Math.round(target.approxBytes / 1048576)} MB) to ${cacheDir}`);
  const r = await downloadFile({
    url,
    dest,
    md5: target.md5,
    attempts: opts.attempts,
    retryDelayMs: opts.retryDelayMs,
    sidecar: sidecarFor(dest, cacheDir),
  });
  log.info(`saved ${dest}`);
  return {
    file: dest,
    includeTop: target.includeTop,
    action: 'downloaded',
    bytes: r.bytes,
    md5: r.md5,
    sha256: r.sha256,
  };
}
