// The HTTP server behind `captioner serve`: the page at `/`, `POST /api/caption`, `GET /api/health`.
//
// Built on node:http with no framework: there are three routes, and what matters here (stopping an
// upload at the byte limit, answering 413 before reading a body the client announced as too big,
// bounded multipart parsing, draining on shutdown) is easier to get exactly right on the raw
// request/response objects than through a framework's body parsers, and it adds no dependency.
//
// Every request first passes the Host check (RFC 9112: exactly one valid Host, or an absolute-form
// target's authority; 403 unless it names this server: blocks DNS rebinding), and a POST the Origin
// check (403 for a page of another site). Flow of a caption request: 503 at once when the queue has no
// room for this client -> an upload slot (429 past serve.maxUploadsPerClient for its address, 503 past
// serve.maxUploads, unless a slow sender is evicted) -> read the body up to serve.maxUploadBytes (413),
// within serve.requestTimeoutMs (408) -> multipart or raw body (400) -> magic-byte check (415) -> pixel
// count from the header (413 past serve.maxPixels) -> the fair batching queue, which holds only fully
// received images and serves client addresses in turn (503 when full) -> Captioner.captionBatch (503
// when the model worker crashed) -> JSON. A request whose connection closes while it waits leaves the
// queue. Nothing a client sends can throw out of the handler: every failure becomes a JSON
// `{ "error": "..." }` answer, and so does what node refuses itself (malformed requests, 414, 431, 408
// for slow headers, CONNECT).
//
// This file is the entry (startServer and its types); the server's parts: routes.ts (dispatch and the three
// routes), host.ts (Host and Origin), body.ts (reading uploads, answers), slots.ts (upload slots and the
// slow-sender rules), connections.ts (connections per client, node's refusals) and lifecycle.ts (listen,
// drain).
import type { Captioner } from '../caption/types.js';
import type { ServeConfig } from '../config/schema.js';
import { formatList, readableFormats } from '../features/image.js';
import { renderPage } from './page.js';
import { BatchQueue } from './queue.js';
import { createHandler, type ServerState } from './routes.js';
import { listen } from './lifecycle.js';
import { UploadSlots } from './slots.js';

export { allowedHosts, hostAllowed, originAllowed, parseHost, type AllowedHosts } from './host.js';
export { clientKey, evictable } from './slots.js';
export { parseBeam } from './routes.js';
export { serverUrls } from './lifecycle.js';

export interface ServerOptions {
  /** Beam size for requests that do not ask for one (undefined: the model's default). */
  defaultBeam?: number;
  /** Shown as the page title (the experiment name). */
  title?: string;
}

export interface ServerStats {
  /** Open connections. */
  connections: number;
  /** Caption requests whose upload is still arriving (at most serve.maxUploads). */
  uploading: number;
  /** Caption requests fully received and not yet answered (waiting or being captioned). */
  admitted: number;
  /** Requests waiting in the queue for a batch. */
  waiting: number;
  /** Sizes of the captionBatch calls made so far. */
  batchSizes: readonly number[];
  draining: boolean;
}

export interface RunningServer {
  /** A URL a person on this machine can open, e.g. http://127.0.0.1:8080 (loopback when listening on 0.0.0.0 or ::). */
  url: string;
  /** When listening on every address (0.0.0.0 or ::): URLs other machines may use; otherwise empty. */
  networkUrls: string[];
  port: number;
  /**
   * Drain and stop: stop accepting connections, answer 503 to new requests on open connections, let
   * every request in progress (uploads included) finish, then close. Connections with a request still in
   * progress after `timeoutMs` (default serve.drainTimeoutMs) are cut; `cut` says how many were, in all
   * (counting a destroy() meanwhile). Does not dispose the Captioner (its owner does).
   */
  close(options?: { timeoutMs?: number }): Promise<{ cut: number }>;
  /** Cut every connection now (a second Ctrl-C). */
  destroy(): void;
  stats(): ServerStats;
}

/** Start listening. `captioner` may still be loading (a promise): health says 'loading' meanwhile. */
export async function startServer(
  captioner: Captioner | Promise<Captioner>,
  cfg: ServeConfig,
  opts: ServerOptions = {},
): Promise<RunningServer> {
  const queue = new BatchQueue((inputs, options) => (state.model as Captioner).captionBatch(inputs, options), {
    maxBatch: cfg.maxBatch,
    queueSize: cfg.queueSize,
    windowMs: cfg.batchWindowMs,
    // decoding costs pixels: a batch holds at most two of the largest images allowed, so a photo queued
    // behind huge ones waits for few of them (eight 12 MP phone photos still share a batch)
    maxBatchPixels: 2 * cfg.maxPixels,
  });
  // the allowed Host names are set once listening
  const uploads = new UploadSlots({
    max: cfg.maxUploads,
    perClient: cfg.maxUploadsPerClient,
    rules: {
      graceMs: cfg.uploadGraceMs,
      minRate: cfg.minUploadRate,
      stallMs: cfg.uploadStallMs,
      deadlineMs: cfg.requestTimeoutMs,
    },
  });
  const state: ServerState = {
    model: null,
    loadError: null,
    queue,
    uploads,
    uploadOf: new WeakMap(),
    connections: null,
    admitted: 0,
    draining: false,
    allowed: { any: false, names: new Set() },
  };
  if (isPromise(captioner)) {
    captioner.then(
      (c) => (state.model = c),
      (e) => (state.loadError = (e as Error)?.message ?? String(e)),
    );
  } else state.model = captioner;
  // what this build of sharp decodes (BMP and HEIC are not always there): said in 415s and on the page
  const formats = formatList(await readableFormats());
  const page = renderPage({
    title: opts.title ?? 'captioner',
    maxUploadBytes: cfg.maxUploadBytes,
    maxBeam: cfg.maxBeam,
    defaultBeam: opts.defaultBeam,
    formats,
  });
  const handle = createHandler(state, cfg, { page, formats, defaultBeam: opts.defaultBeam });
  const { url, networkUrls, port, close, destroy } = await listen(state, cfg, handle);
  return {
    url,
    networkUrls,
    port,
    stats: () => ({
      connections: state.connections?.all.size ?? 0,
      uploading: state.uploads.size,
      admitted: state.admitted,
      waiting: queue.waiting,
      batchSizes: queue.batchSizes,
      draining: state.draining,
    }),
    destroy,
    close,
  };
}

function isPromise<T>(v: T | Promise<T>): v is Promise<T> {
  return typeof (v as Promise<T>)?.then === 'function';
}
