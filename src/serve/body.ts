// Request intake and answers for the HTTP server: reading an upload (the byte limit, 413 before reading a
// body announced as too big, stalled uploads losing their slot), the multipart Content-Type, the Host check
// (DNS rebinding), and sending answers (refusing a body the server did not read without a connection reset).
// Part of the HTTP server of `captioner serve` (entry: src/serve/server.ts).
import type * as http from 'node:http';
import { performance } from 'node:perf_hooks';
import { log } from '../log.js';
import { multipartBoundary } from './multipart.js';

/** An answer with a status and a message for the client. */
export class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }
}

/** The client went away mid-request: nobody to answer. */
export class ClientGone extends Error {}

/** An upload being received: when it last got data, and how to cut it short. */
export interface Upload {
  lastData: number;
  evict(): void;
}

/** After refusing a body, how much more of it we read (and drop) so the client sees the answer. */
const LINGER_BYTES = 4 * 1024 * 1024;

const mib = (n: number) => (n >= 1024 * 1024 ? `${+(n / 1024 / 1024).toFixed(1)} MB` : `${+(n / 1024).toFixed(1)} KB`);

/** 413 for an upload over `limit` bytes (serve.maxUploadBytes). */
export function tooLarge(limit: number): HttpError {
  return new HttpError(413, `the upload is larger than ${mib(limit)} (serve.maxUploadBytes)`, { Connection: 'close' });
}

/**
 * All upload slots are taken: free the one that has received nothing for longest, if that is at least
 * `stallMs` (serve.uploadStallMs; its client gets 408). A slow but moving upload keeps its slot; one that trickles a
 * byte now and then (slowloris) loses it to a new client instead of holding it until requestTimeoutMs.
 */
export function evictStalledUpload(uploads: Set<Upload>, stallMs: number): boolean {
  let stalest: Upload | undefined;
  for (const u of uploads) if (!stalest || u.lastData < stalest.lastData) stalest = u;
  if (!stalest || performance.now() - stalest.lastData < stallMs) return false;
  uploads.delete(stalest);
  stalest.evict();
  return true;
}

/** Read the whole body, refusing (413) as soon as it passes `limit` bytes; `upload` hears of progress. */
export function readBody(req: http.IncomingMessage, limit: number, upload: Upload, stallMs: number): Promise<Buffer> {
  const declared = Number(req.headers['content-length']);
  if (Number.isFinite(declared) && declared > limit) return Promise.reject(tooLarge(limit));
  return new Promise<Buffer>((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const cleanup = () => {
      req.off('data', onData);
      req.off('end', onEnd);
      req.off('error', onGone);
      req.off('close', onClose);
    };
    upload.evict = () => {
      cleanup();
      req.pause();
      reject(new HttpError(408, `the upload stalled (nothing for ${stallMs / 1000} s or more) while other clients were waiting`, { Connection: 'close' }));
    };
    const onData = (chunk: Buffer) => {
      upload.lastData = performance.now();
      size += chunk.length;
      if (size > limit) {
        cleanup();
        req.pause();
        reject(tooLarge(limit));
      } else chunks.push(chunk);
    };
    const onEnd = () => {
      cleanup();
      resolve(Buffer.concat(chunks, size));
    };
    const onGone = () => {
      cleanup();
      reject(new ClientGone());
    };
    const onClose = () => {
      if (!req.complete) onGone();
    };
    req.on('data', onData);
    req.on('end', onEnd);
    req.on('error', onGone);
    req.on('close', onClose);
  });
}

/** The multipart boundary, null for a raw body, or 400 for a broken multipart Content-Type. */
export function multipartOrThrow(contentType: string | undefined): string | null {
  try {
    return multipartBoundary(contentType);
  } catch (e) {
    throw new HttpError(400, `malformed multipart request: ${(e as Error).message}`);
  }
}

/** Which Host header names the server answers to. */
export interface AllowedHosts {
  any: boolean;
  names: Set<string>;
}

export const WILDCARD = new Set(['0.0.0.0', '::', '']);

/**
 * The Host names a server listening on `host` (bound to `bound`) answers to: always localhost and the
 * loopback addresses, the listen address, the configured extra names ("*": any), and when listening on
 * every address (0.0.0.0 or ::) this machine's addresses and host name. Any other name may be a DNS
 * rebinding attack: a web page whose own host name now points at us.
 */
export function allowedHosts(host: string, bound: string, extra: readonly string[], interfaces: { address: string }[], hostname: string): AllowedHosts {
  const names = new Set(['localhost', '127.0.0.1', '::1', host, bound, ...extra].map(normalHost));
  if (WILDCARD.has(host) || WILDCARD.has(bound)) {
    for (const i of interfaces) names.add(normalHost(i.address));
    names.add(normalHost(hostname));
  }
  return { any: extra.includes('*'), names };
}

/** Lowercase, without brackets or a trailing dot. */
function normalHost(h: string): string {
  return h.toLowerCase().replace(/^\[(.*)\]$/, '$1').replace(/\.$/, '');
}

/** Whether a request's Host header (name or address, with or without a port) is one we answer to. */
export function hostAllowed(header: string | undefined, allowed: AllowedHosts): boolean {
  if (allowed.any) return true;
  if (header === undefined) return true; // HTTP/1.0 without Host (node refuses HTTP/1.1 without); browsers always send one
  const h = header.trim();
  const name = h.startsWith('[') ? h.slice(0, h.indexOf(']') + 1) : h.replace(/:\d*$/, '');
  return allowed.names.has(normalHost(name));
}

export function sendJson(res: http.ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  send(res, status, JSON.stringify(body), { 'Content-Type': 'application/json; charset=utf-8', ...headers });
}

export function send(res: http.ServerResponse, status: number, body: string, headers: Record<string, string>): void {
  if (res.headersSent) {
    res.end();
    return;
  }
  res.writeHead(status, { 'Content-Length': Buffer.byteLength(body), 'X-Content-Type-Options': 'nosniff', ...headers });
  res.end(body);
}

/**
 * Answer an error. When the request body was not read to its end (413, or an early 404/405/503), the
 * connection is closed after the answer, and whatever the client is still sending is discarded for a
 * short while first, so it gets to read the answer instead of a connection reset.
 */
export function refuse(req: http.IncomingMessage, res: http.ServerResponse, e: HttpError): Promise<void> {
  const unread = !req.complete;
  const headers = { ...e.headers };
  if (unread) headers.Connection = 'close';
  sendJson(res, e.status, { error: e.message }, headers);
  if (!unread) return Promise.resolve();
  return new Promise<void>((resolve) => {
    const socket = req.socket;
    let discarded = 0;
    let done = false;
    const hangUp = (graceful: boolean) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      if (discarded) log.debug(`serve: refused a body, dropped ${discarded} more bytes of it before hanging up`);
      if (graceful) socket.end();
      else socket.destroy();
      resolve();
    };
    // Discard (not buffer) what is still coming, for at most 2 s and 4 MiB, then hang up.
    const timer = setTimeout(() => hangUp(false), 2000);
    timer.unref();
    req.on('data', (chunk: Buffer) => {
      discarded += chunk.length;
      if (discarded > LINGER_BYTES) hangUp(false);
    });
    req.once('end', () => hangUp(true));
    req.once('close', () => hangUp(true));
    req.once('error', () => hangUp(false));
    req.resume();
  });
}
