// Downloads a weights file into the cache: streams to <dest>.part with a progress bar, resumes a
// partial file with an HTTP Range request (also retrying after a cut connection), checks the md5,
// then renames into place. Also imports a local copy (md5 checked, copied atomically).
import { promises as fs } from 'node:fs';
import * as http from 'node:http';
import * as https from 'node:https';
import * as path from 'node:path';
import { ModelError } from '../../errors.js';
import { log, progress } from '../../log.js';
import { hashFiles, recordDigest, type Digest } from './hash.js';
import { ensureDir } from '../../util/fsx.js';

export interface DownloadOptions {
  url: string;
  dest: string;
  /** Expected md5 (hex) of the whole file; mismatch deletes the download and throws. */
  md5?: string;
  /** Tries in all, resuming each time (default 4). */
  attempts?: number;
  /** Wait before a retry, doubled each time (default 1000 ms). */
  retryDelayMs?: number;
  /** Where to record the digest (see hash.ts fileDigest); none when absent. */
  sidecar?: string;
}

export interface DownloadResult extends Digest {
  bytes: number;
  /** Bytes that were already there (from an earlier, interrupted run) when this run started. */
  resumedFrom: number;
  attempts: number;
}

class Fatal extends Error {}

const mb = (n: number) => `${(n / 1048576).toFixed(1)} MB`;

async function sizeOf(file: string): Promise<number> {
  try {
    return (await fs.stat(file)).size;
  } catch {
    return 0;
  }
}

/** Download `url` to `dest` (resumable; see the file header). */
export async function downloadFile(opts: DownloadOptions): Promise<DownloadResult> {
  const part = `${opts.dest}.part`;
  const attempts = opts.attempts ?? 4;
  let delay = opts.retryDelayMs ?? 1000;
  await ensureDir(path.dirname(opts.dest));
  const resumedFrom = await sizeOf(part);
  if (resumedFrom > 0) log.info(`resuming ${path.basename(opts.dest)} at ${mb(resumedFrom)}`);
  let attempt = 0;
  for (;;) {
    attempt++;
    try {
      await fetchInto(opts.url, part);
      break;
    } catch (e) {
      const msg = (e as Error).message;
      if (e instanceof Fatal || attempt >= attempts) {
        const have = await sizeOf(part);
        throw new ModelError(
          `download of ${opts.url} failed: ${msg}` +
            (have > 0 ? `; ${mb(have)} kept in ${part}, run the command again to resume` : ''),
        );
      }
      log.warn(`download interrupted (${msg}); retrying in ${delay / 1000}s from ${mb(await sizeOf(part))}`);
      await new Promise((r) => setTimeout(r, delay));
      delay *= 2;
    }
  }
  const digest = await hashFiles([part], 'checking');
  if (opts.md5 && digest.md5 !== opts.md5.toLowerCase()) {
    await fs.rm(part, { force: true });
    throw new ModelError(
      `${opts.url}: md5 ${digest.md5} does not match the expected ${opts.md5}; the download was deleted (corrupt or a different file), run the command again`,
    );
  }
  await fs.rename(part, opts.dest);
  if (opts.sidecar) await recordDigest([opts.dest], opts.sidecar, digest);
  return { ...digest, bytes: await sizeOf(opts.dest), resumedFrom, attempts: attempt };
}

/** GET `url` (following up to 5 redirects) with node:http(s), which hands over every byte received. */
function get(url: string, headers: Record<string, string>, redirects = 5): Promise<http.IncomingMessage> {
  return new Promise((resolve, reject) => {
    let u: URL;
    try {
      u = new URL(url);
    } catch {
      reject(new Fatal(`not a URL: ${url}`));
      return;
    }
    if (u.protocol !== 'http:' && u.protocol !== 'https:') {
      reject(new Fatal(`unsupported URL scheme ${u.protocol}`));
      return;
    }
    const req = (u.protocol === 'https:' ? https : http).get(
      u,
      { headers: { 'user-agent': 'captioner', ...headers } },
      (res) => {
        const loc = res.headers.location;
        if (res.statusCode && res.statusCode >= 300 && res.statusCode < 400 && loc) {
          res.resume();
          if (redirects <= 0) reject(new Fatal('too many redirects'));
          else get(new URL(loc, u).toString(), headers, redirects - 1).then(resolve, reject);
          return;
        }
        resolve(res);
      },
    );
    req.setTimeout(60_000, () => req.destroy(new Error('no data for 60 s')));
    req.on('error', (e: NodeJS.ErrnoException) => reject(new Error(e.code ?? e.message)));
  });
}

/** One HTTP request appending to (or restarting) `part`. Throws Fatal for errors a retry cannot fix. */
async function fetchInto(url: string, part: string): Promise<void> {
  const have = await sizeOf(part);
  const res = await get(url, have > 0 ? { range: `bytes=${have}-` } : {});
  const status = res.statusCode ?? 0;
  if (status === 416 && have > 0) {
    // Range not satisfiable: the .part already holds the whole file (the md5 check decides).
    res.resume();
    return;
  }
  let append = false;
  let total: number | null = null;
  if (status === 206) {
    const m = /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(res.headers['content-range'] ?? '');
    if (m && Number(m[1]) === have) {
      append = true;
      total = m[3] === '*' ? null : Number(m[3]);
    } else {
      res.destroy();
      await fs.rm(part, { force: true });
      throw new Error(`server answered an unexpected range (${res.headers['content-range']}); restarting`);
    }
  } else if (status === 200) {
    const len = res.headers['content-length'];
    total = len ? Number(len) : null;
  } else {
    res.resume();
    const err = `HTTP ${status} ${res.statusMessage ?? ''}`.trim();
    if (status >= 500 || status === 429 || status === 408) throw new Error(err);
    throw new Fatal(err);
  }
  const start = append ? have : 0;
  const bar = progress(
    path.basename(part, '.part'),
    total ?? 0,
    '{bar} {percentage}% | {value}/{total} bytes | ETA {eta_formatted}',
  );
  bar.tick(start);
  let got = start;
  // Written chunk by chunk and awaited, so everything received is on disk when the connection fails.
  const out = await fs.open(part, append ? 'a' : 'w');
  try {
    for await (const chunk of res as AsyncIterable<Buffer>) {
      await out.write(chunk);
      got += chunk.length;
      bar.tick(chunk.length);
    }
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new Error(`${(e as Error).message}${code ? ` (${code})` : ''} after ${mb(got)}`);
  } finally {
    bar.stop();
    await out.close();
  }
  if (total !== null && got !== total) throw new Error(`connection closed after ${mb(got)} of ${mb(total)}`);
}

/**
 * Copy a local file into the cache: md5 checked (when given), written to a temporary name and renamed.
 * `digest` skips hashing when the caller already hashed `src`.
 */
export async function importFile(
  src: string,
  dest: string,
  opts: { md5?: string; sidecar?: string; digest?: Digest } = {},
): Promise<Digest & { bytes: number }> {
  try {
    const st = await fs.stat(src);
    if (!st.isFile()) throw new ModelError(`${src}: not a file`);
  } catch (e) {
    if (e instanceof ModelError) throw e;
    throw new ModelError(`${src}: cannot read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  const digest = opts.digest ?? (await hashFiles([src], 'checking'));
  if (opts.md5 && digest.md5 !== opts.md5.toLowerCase()) {
    throw new ModelError(`${src}: md5 ${digest.md5} does not match the expected ${opts.md5}`);
  }
  await ensureDir(path.dirname(dest));
  const tmp = `${dest}.${process.pid}.import.tmp`;
  try {
    await fs.copyFile(src, tmp);
    const h = await fs.open(tmp, 'r+');
    try {
      await h.sync();
    } finally {
      await h.close();
    }
    await fs.rename(tmp, dest);
  } catch (e) {
    await fs.rm(tmp, { force: true });
    throw new ModelError(`cannot copy ${src} to ${dest}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  if (opts.sidecar) await recordDigest([dest], opts.sidecar, digest);
  return { ...digest, bytes: await sizeOf(dest) };
}
