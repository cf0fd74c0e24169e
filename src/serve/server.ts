// The HTTP server behind `captioner serve`: the page at `/`, `POST /api/caption`, `GET /api/health`.
//
// Built on node:http with no framework: there are three routes, and what matters here (stopping an
// upload at the byte limit, answering 413 before reading a body the client announced as too big,
// bounded multipart parsing, draining on shutdown) is easier to get exactly right on the raw
// request/response objects than through a framework's body parsers, and it adds no dependency.
//
// Every request first passes the Host check (403 unless the Host header names this server: blocks DNS
// rebinding). Flow of a caption request: 503 at once when the queue is already full -> an upload slot
// (503 when serve.maxUploads uploads are already arriving) -> read the body up to serve.maxUploadBytes
// (413), within serve.requestTimeoutMs (408) -> multipart or raw body (400) -> magic-byte check (415) ->
// the batching queue, which holds only fully received images (503 when full) -> Captioner.captionBatch
// (503 when the model worker crashed) -> JSON. A request whose connection closes while it waits leaves
// the queue. Nothing a client sends can throw out of the handler: every failure becomes a JSON
// `{ "error": "..." }` answer.
import * as http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import * as os from 'node:os';
import { performance } from 'node:perf_hooks';
import type { CaptionOutcome, Captioner, ImageErrorKind } from '../caption/types.js';
import type { ServeConfig } from '../config/schema.js';
import { ConfigError } from '../errors.js';
import { log } from '../log.js';
import { MultipartError, multipartBoundary, parseMultipart } from './multipart.js';
import { renderPage } from './page.js';
import { BatchQueue, CancelledError, QueueFullError } from './queue.js';
import { WorkerCrashedError } from './worker-captioner.js';
import { sniffImage } from '../util/imagetype.js';
import { formatList, readableFormats } from '../features/image.js';

export interface ServerOptions {
  /** Beam size for requests that do not ask for one (undefined: the model's default). */
  defaultBeam?: number;
  /** Shown as the page title (the experiment name). */
  title?: string;
}

export interface ServerStats {
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

/** An answer with a status and a message for the client. */
class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }
}

/** The client went away mid-request: nobody to answer. */
class ClientGone extends Error {}

/** An upload being received: when it last got data, and how to cut it short. */
interface Upload {
  lastData: number;
  evict(): void;
}

/** After refusing a body, how much more of it we read (and drop) so the client sees the answer. */
const LINGER_BYTES = 4 * 1024 * 1024;

const KIND_STATUS: Record<ImageErrorKind, number> = { unsupported: 415, corrupt: 422, too_large: 413 };

const ROUTES: Record<string, string[]> = {
  '/': ['GET', 'HEAD'],
  '/index.html': ['GET', 'HEAD'],
  '/api/health': ['GET', 'HEAD'],
  '/api/caption': ['POST'],
};

const PAGE_CSP =
  "default-src 'none'; img-src 'self' blob: data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

const mib = (n: number) => (n >= 1024 * 1024 ? `${+(n / 1024 / 1024).toFixed(1)} MB` : `${+(n / 1024).toFixed(1)} KB`);

/** Start listening. `captioner` may still be loading (a promise): health says 'loading' meanwhile. */
export async function startServer(captioner: Captioner | Promise<Captioner>, cfg: ServeConfig, opts: ServerOptions = {}): Promise<RunningServer> {
  let model: Captioner | null = null;
  let loadError: string | null = null;
  if (isPromise(captioner)) {
    captioner.then(
      (c) => (model = c),
      (e) => (loadError = (e as Error)?.message ?? String(e)),
    );
  } else model = captioner;

  const queue = new BatchQueue((inputs, options) => (model as Captioner).captionBatch(inputs, options), {
    maxBatch: cfg.maxBatch,
    queueSize: cfg.queueSize,
    windowMs: cfg.batchWindowMs,
  });
  // what this build of sharp decodes (BMP and HEIC are not always there): said in 415s and on the page
  const formats = formatList(await readableFormats());
  const page = renderPage({ title: opts.title ?? 'captioner', maxUploadBytes: cfg.maxUploadBytes, maxBeam: cfg.maxBeam, defaultBeam: opts.defaultBeam, formats });
  const uploads = new Set<Upload>();
  let admitted = 0;
  let draining = false;
  let nextId = 0;
  let cut = 0;
  const active = new Set<Promise<void>>();
  let allowed: AllowedHosts = { any: true, names: new Set() }; // set once listening

  // Node checks request timeouts only every connectionsCheckingInterval (30 s by default), so a 60 s
  // timeout fired after up to 90 s: check often enough that it fires within a tenth of the limit.
  const server = http.createServer({
    requestTimeout: cfg.requestTimeoutMs,
    headersTimeout: Math.min(cfg.requestTimeoutMs, 20_000),
    connectionsCheckingInterval: Math.max(50, Math.min(1000, Math.floor(cfg.requestTimeoutMs / 10))),
  });

  // `Expect: 100-continue` clients wait before sending the body: refuse oversized ones without it.
  server.on('checkContinue', (req: http.IncomingMessage, res: http.ServerResponse) => {
    const declared = Number(req.headers['content-length']);
    if (Number.isFinite(declared) && declared > cfg.maxUploadBytes) {
      void refuse(req, res, tooLarge());
      return;
    }
    res.writeContinue();
    server.emit('request', req, res);
  });

  // Connections and their requests in progress, so draining can close the connections with none
  // (idle keep-alive ones, and ones a client opened ahead of time) and ask the busy ones to close after.
  const connections = new Map<Socket, number>();
  const openResponses = new Set<http.ServerResponse>();
  server.on('connection', (socket: Socket) => {
    connections.set(socket, 0);
    socket.once('close', () => connections.delete(socket));
  });
  server.on('request', (req: http.IncomingMessage, res: http.ServerResponse) => {
    const socket = req.socket;
    connections.set(socket, (connections.get(socket) ?? 0) + 1);
    openResponses.add(res);
    if (draining) res.shouldKeepAlive = false;
    res.once('close', () => {
      openResponses.delete(res);
      if (connections.has(socket)) connections.set(socket, Math.max(0, (connections.get(socket) ?? 1) - 1));
    });
    track(handle(req, res));
  });
  server.on('clientError', (err: NodeJS.ErrnoException, socket) => {
    // Malformed HTTP or a request that took too long to arrive: answer when the socket still can (and no
    // answer has started on it), never crash. ERR_HTTP_REQUEST_TIMEOUT: serve.requestTimeoutMs passed
    // before the request (headers and body) had arrived, e.g. a stalled upload.
    const answering = (socket as Socket & { _httpMessage?: http.ServerResponse })._httpMessage?.headersSent;
    if (socket.writable && err.code !== 'ECONNRESET' && !answering) {
      const [status, reason, message] =
        err.code === 'HPE_HEADER_OVERFLOW'
          ? [431, 'Request Header Fields Too Large', 'request headers too large']
          : err.code === 'ERR_HTTP_REQUEST_TIMEOUT'
            ? [408, 'Request Timeout', `the request did not arrive within ${cfg.requestTimeoutMs / 1000} s (serve.requestTimeoutMs)`]
            : [400, 'Bad Request', 'malformed HTTP request'];
      const body = JSON.stringify({ error: message });
      socket.end(`HTTP/1.1 ${status} ${reason}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`);
    } else socket.destroy();
  });

  function track(p: Promise<void>): void {
    active.add(p);
    void p.finally(() => active.delete(p));
  }

  async function handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const started = performance.now();
    let status = 0;
    try {
      let url: URL;
      try {
        url = new URL(req.url ?? '/', 'http://localhost');
      } catch {
        throw new HttpError(400, 'the request URL is malformed');
      }
      if (!hostAllowed(req.headers.host, allowed)) {
        throw new HttpError(403, `this server does not answer to the host name ${JSON.stringify(String(req.headers.host).slice(0, 100))}; add it to serve.allowedHosts if it is yours`);
      }
      const methods = ROUTES[url.pathname];
      if (!methods) throw new HttpError(404, `no such page: ${url.pathname}`);
      if (!methods.includes(req.method ?? '')) throw new HttpError(405, `${req.method} is not allowed on ${url.pathname}`, { Allow: methods.join(', ') });
      if (draining) throw new HttpError(503, 'the server is shutting down', { Connection: 'close' });

      if (url.pathname === '/api/health') {
        status = health(res);
      } else if (url.pathname === '/api/caption') {
        status = await captionRoute(req, res, url, started);
      } else {
        status = 200;
        send(res, 200, page, { 'Content-Type': 'text/html; charset=utf-8', 'Cache-Control': 'no-cache', 'Content-Security-Policy': PAGE_CSP, 'Referrer-Policy': 'no-referrer' });
      }
    } catch (e) {
      if (e instanceof ClientGone) {
        status = 499;
        if (!res.writableEnded) res.destroy();
      } else if (e instanceof HttpError) {
        status = e.status;
        void refuse(req, res, e); // its lingering does not hold up draining
      } else {
        status = 500;
        log.error(`serve: ${req.method} ${req.url}: ${(e as Error)?.stack ?? String(e)}`);
        void refuse(req, res, new HttpError(500, 'internal error while captioning; see the server log'));
      }
    } finally {
      log.debug(`serve: ${req.method} ${req.url} ${status} ${(performance.now() - started).toFixed(1)}ms`);
    }
  }

  function health(res: http.ServerResponse): number {
    // A captioner may report that it can no longer caption (the worker captioner, after repeated crashes).
    const failure = (model as { failure?: () => string | null } | null)?.failure?.() ?? null;
    const status = model && !failure ? 'ok' : loadError || failure ? 'error' : 'loading';
    const body: Record<string, unknown> = {
      status,
      model: model?.info.name ?? null,
      encoder: model?.info.encoder ?? null,
      backend: model?.info.backend ?? null,
    };
    if (loadError || failure) body.error = loadError ?? failure;
    // How full the server is, so a monitor can tell "ok but refusing everything" from "ok".
    body.load = { uploading: uploads.size, maxUploads: cfg.maxUploads, waiting: queue.waiting, queueSize: cfg.queueSize };
    const code = status === 'ok' ? 200 : 503;
    sendJson(res, code, body, { 'Cache-Control': 'no-store' });
    return code;
  }

  async function captionRoute(req: http.IncomingMessage, res: http.ServerResponse, url: URL, started: number): Promise<number> {
    if (!model) throw new HttpError(503, loadError ? `the model failed to load: ${loadError}` : 'the model is still loading; try again in a moment', { 'Retry-After': '2' });
    // Refuse before reading the body when the queue is full now; only received images count against it.
    if (queue.waiting >= cfg.queueSize) throw busy();
    if (uploads.size >= cfg.maxUploads && !evictStalledUpload()) {
      throw new HttpError(503, 'the server is receiving too many uploads at once; try again in a moment', { 'Retry-After': '1' });
    }
    // The client is gone when the connection closes. Listen on the socket, not only on the response: a
    // pipelined request's response has no socket yet, and would never hear of it.
    const abort = new AbortController();
    const socket = req.socket;
    const onClose = () => {
      if (!res.writableEnded) abort.abort();
    };
    res.on('close', onClose);
    socket.on('close', onClose);
    let body: Buffer;
    const upload: Upload = { lastData: performance.now(), evict: () => {} };
    uploads.add(upload);
    try {
      body = await readBody(req, cfg.maxUploadBytes, upload);
    } catch (e) {
      res.off('close', onClose);
      socket.off('close', onClose);
      throw e;
    } finally {
      uploads.delete(upload);
    }
    admitted++;
    try {
      let bytes: Buffer;
      let beamText = url.searchParams.get('beam');
      const boundary = multipartOrThrow(req.headers['content-type']);
      if (boundary) {
        let parts;
        try {
          parts = parseMultipart(body, boundary);
        } catch (e) {
          if (e instanceof MultipartError) throw new HttpError(400, `malformed multipart body: ${e.message}`);
          throw e;
        }
        const images = parts.filter((p) => p.name === 'image');
        if (images.length === 0) throw new HttpError(400, 'the form has no "image" field');
        if (images.length > 1) throw new HttpError(400, `the form has ${images.length} "image" fields; send one image per request`);
        bytes = images[0].data;
        if (bytes.length === 0) throw new HttpError(400, 'the image file is empty');
        const beamPart = parts.find((p) => p.name === 'beam');
        if (beamPart && beamPart.data.length <= 16) beamText = beamPart.data.toString('utf8').trim() || beamText;
        else if (beamPart) throw new HttpError(400, 'the "beam" field is not a number');
      } else {
        bytes = body;
      }
      if (bytes.length === 0) throw new HttpError(400, 'no image in the request (send multipart field "image" or the image bytes as the body)');
      const beam = parseBeam(beamText, cfg.maxBeam) ?? opts.defaultBeam;
      if (!sniffImage(bytes)) throw new HttpError(415, `that file is not an image we can read (expected ${formats})`);

      if (abort.signal.aborted || socket.destroyed) throw new ClientGone();
      let outcome: CaptionOutcome;
      try {
        outcome = await queue.submit({ id: `req-${++nextId}`, bytes }, beam, abort.signal);
      } catch (e) {
        if (e instanceof QueueFullError) throw busy();
        if (e instanceof CancelledError) throw new ClientGone();
        // the worker captioner has logged the crash once; the client may simply try again
        if (e instanceof WorkerCrashedError) throw new HttpError(503, `${e.message}; try again in a moment`, { 'Retry-After': '2' });
        throw e;
      }
      if (!outcome.ok) {
        const code = KIND_STATUS[outcome.kind] ?? 422;
        throw new HttpError(code, outcome.kind === 'corrupt' ? `the image could not be decoded: ${outcome.error}` : outcome.error);
      }
      const ms = Math.round((performance.now() - started) * 10) / 10;
      sendJson(res, 200, { caption: outcome.caption, logprob: outcome.logprob, ms });
      return 200;
    } finally {
      admitted--;
      res.off('close', onClose);
      socket.off('close', onClose);
    }
  }

  function busy(): HttpError {
    return new HttpError(503, 'the server is busy; try again in a moment', { 'Retry-After': '1' });
  }

  function tooLarge(): HttpError {
    return new HttpError(413, `the upload is larger than ${mib(cfg.maxUploadBytes)} (serve.maxUploadBytes)`, { Connection: 'close' });
  }

  /**
   * All upload slots are taken: free the one that has received nothing for longest, if that is at least
   * serve.uploadStallMs (its client gets 408). A slow but moving upload keeps its slot; one that trickles a
   * byte now and then (slowloris) loses it to a new client instead of holding it until requestTimeoutMs.
   */
  function evictStalledUpload(): boolean {
    let stalest: Upload | undefined;
    for (const u of uploads) if (!stalest || u.lastData < stalest.lastData) stalest = u;
    if (!stalest || performance.now() - stalest.lastData < cfg.uploadStallMs) return false;
    uploads.delete(stalest);
    stalest.evict();
    return true;
  }

  /** Read the whole body, refusing (413) as soon as it passes `limit` bytes; `upload` hears of progress. */
  function readBody(req: http.IncomingMessage, limit: number, upload: Upload): Promise<Buffer> {
    const declared = Number(req.headers['content-length']);
    if (Number.isFinite(declared) && declared > limit) return Promise.reject(tooLarge());
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
        reject(new HttpError(408, `the upload stalled (nothing for ${cfg.uploadStallMs / 1000} s or more) while other clients were waiting`, { Connection: 'close' }));
      };
      const onData = (chunk: Buffer) => {
        upload.lastData = performance.now();
        size += chunk.length;
        if (size > limit) {
          cleanup();
          req.pause();
          reject(tooLarge());
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

  await new Promise<void>((resolve, reject) => {
    server.once('error', (e) => reject(listenError(e as NodeJS.ErrnoException, cfg)));
    server.listen(cfg.port, cfg.host, () => {
      server.removeAllListeners('error');
      resolve();
    });
  });
  server.on('error', (e) => log.error(`serve: ${(e as Error).message}`));
  const addr = server.address() as AddressInfo;
  const interfaces = localAddresses();
  allowed = allowedHosts(cfg.host, addr.address, cfg.allowedHosts, interfaces, os.hostname());
  const { url, networkUrls } = serverUrls(addr, interfaces);

  /** Cut every connection; those with a request in progress count as cut. */
  function cutAll(): void {
    for (const [socket, inProgress] of connections) {
      if (inProgress > 0) cut++;
      connections.delete(socket); // counted once, even when called again before its 'close' event
      socket.destroy();
    }
  }

  let closing: Promise<{ cut: number }> | null = null;
  return {
    url,
    networkUrls,
    port: addr.port,
    stats: () => ({ uploading: uploads.size, admitted, waiting: queue.waiting, batchSizes: queue.batchSizes, draining }),
    destroy() {
      draining = true;
      server.close();
      cutAll();
    },
    close(options = {}) {
      closing ??= (async () => {
        draining = true;
        for (const res of openResponses) if (!res.headersSent) res.shouldKeepAlive = false;
        const closed = new Promise<void>((resolve) => server.close(() => resolve()));
        const timeoutMs = options.timeoutMs ?? cfg.drainTimeoutMs;
        let timer: NodeJS.Timeout | undefined;
        const deadline = new Promise<'timeout'>((resolve) => (timer = setTimeout(() => resolve('timeout'), timeoutMs)));
        // Let every admitted request finish (they may still be uploading), then the queue empties too.
        const finished = (async () => {
          while (active.size) await Promise.allSettled([...active]);
          await queue.idle();
        })();
        const r = await Promise.race([finished.then(() => 'done' as const), deadline]);
        if (r === 'timeout') log.warn(`serve: ${active.size} request(s) still running after ${timeoutMs} ms (serve.drainTimeoutMs); cutting their connections`);
        // Connections with nothing in progress (idle keep-alive, or opened but never used) go now.
        if (r === 'timeout') cutAll();
        else for (const [socket, inProgress] of connections) if (inProgress === 0) socket.destroy();
        const r2 = await Promise.race([closed.then(() => 'done' as const), deadline]);
        if (r2 === 'timeout') cutAll();
        await closed;
        clearTimeout(timer);
        return { cut };
      })();
      return closing;
    },
  };
}

/** A failed listen as a config error (exit 2) the user can act on; anything unexpected as it is. */
function listenError(e: NodeJS.ErrnoException, cfg: ServeConfig): Error {
  const where = `${cfg.host}:${cfg.port}`;
  switch (e.code) {
    case 'EADDRINUSE':
      return new ConfigError(`cannot listen on ${where}: port ${cfg.port} is already in use (another captioner serve?); choose another with --port (serve.port), or 0 for any free port`);
    case 'EACCES':
      return new ConfigError(`cannot listen on ${where}: permission denied (ports below 1024 need privileges); choose another with --port (serve.port)`);
    case 'EADDRNOTAVAIL':
      return new ConfigError(`cannot listen on ${where}: ${cfg.host} is not an address of this machine (--host, serve.host)`);
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      return new ConfigError(`cannot listen on ${where}: the host name ${cfg.host} does not resolve (--host, serve.host)`);
    default:
      return e;
  }
}

/** Which Host header names the server answers to. */
export interface AllowedHosts {
  any: boolean;
  names: Set<string>;
}

const WILDCARD = new Set(['0.0.0.0', '::', '']);

/** This machine's interface addresses (without IPv6 zone ids). */
function localAddresses(): { address: string; family: string; internal: boolean }[] {
  return Object.values(os.networkInterfaces())
    .flat()
    .filter((i): i is os.NetworkInterfaceInfo => !!i)
    .map((i) => ({ address: i.address.replace(/%.*$/, ''), family: i.family, internal: i.internal }));
}

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

/**
 * URLs to print for a bound address. On 0.0.0.0 / :: nobody can open http://0.0.0.0:PORT, so `url` is
 * the loopback one and `networkUrls` lists this machine's other addresses (of the bound family; both for ::).
 */
export function serverUrls(addr: AddressInfo, interfaces: { address: string; family: string; internal: boolean }[]): { url: string; networkUrls: string[] } {
  const at = (a: string) => `http://${a.includes(':') ? `[${a}]` : a}:${addr.port}`;
  if (!WILDCARD.has(addr.address)) return { url: at(addr.address), networkUrls: [] };
  const v4only = addr.address === '0.0.0.0';
  const networkUrls = interfaces
    .filter((i) => !i.internal && (!v4only || i.family === 'IPv4') && !i.address.toLowerCase().startsWith('fe80:'))
    .map((i) => at(i.address));
  return { url: at(v4only ? '127.0.0.1' : '::1'), networkUrls };
}

/** The multipart boundary, null for a raw body, or 400 for a broken multipart Content-Type. */
function multipartOrThrow(contentType: string | undefined): string | null {
  try {
    return multipartBoundary(contentType);
  } catch (e) {
    throw new HttpError(400, `malformed multipart request: ${(e as Error).message}`);
  }
}

/** `?beam=K` / form field: undefined when absent, 400 unless an integer in 1..maxBeam. */
export function parseBeam(text: string | null | undefined, maxBeam: number): number | undefined {
  if (text === null || text === undefined || text === '') return undefined;
  if (!/^\d{1,6}$/.test(text)) throw new HttpError(400, `beam must be an integer from 1 to ${maxBeam}, got ${JSON.stringify(text.slice(0, 20))}`);
  const k = Number(text);
  if (k < 1 || k > maxBeam) throw new HttpError(400, `beam must be an integer from 1 to ${maxBeam}, got ${k}`);
  return k;
}

function sendJson(res: http.ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  send(res, status, JSON.stringify(body), { 'Content-Type': 'application/json; charset=utf-8', ...headers });
}

function send(res: http.ServerResponse, status: number, body: string, headers: Record<string, string>): void {
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
function refuse(req: http.IncomingMessage, res: http.ServerResponse, e: HttpError): Promise<void> {
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

function isPromise<T>(v: T | Promise<T>): v is Promise<T> {
  return typeof (v as Promise<T>)?.then === 'function';
}
