// Routing for the HTTP server: request dispatch (target and Host, Origin, method, draining) and the routes:
// the page at `/`, `GET /api/health`, `POST /api/caption` (upload slot -> body -> multipart or raw ->
// magic bytes -> pixel count from the header -> the fair queue, under the client's address).
// Part of the HTTP server of `captioner serve` (entry: src/serve/server.ts).
import type * as http from 'node:http';
import type { Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import type { CaptionOutcome, Captioner, ImageErrorKind } from '../caption/types.js';
import type { ServeConfig } from '../config/schema.js';
import { log } from '../log.js';
import { imageHeader, ImageError } from '../features/image.js';
import { sniffImage } from '../util/imagetype.js';
import { ClientGone, declaredLength, multipartOrThrow, readBody, refuse, send, sendJson } from './body.js';
import { HttpError } from './http-error.js';
import type { Connections } from './connections.js';
import { checkOrigin, checkTarget, type AllowedHosts } from './host.js';
import { MultipartError, parseMultipart } from './multipart.js';
import { CancelledError, QueueFullError, type BatchQueue } from './queue.js';
import { clientKey, type Slot, type UploadSlots } from './slots.js';
import { WorkerCrashedError } from './threaded-captioner.js';

const KIND_STATUS: Record<ImageErrorKind, number> = { unsupported: 415, corrupt: 422, too_large: 413 };

const ROUTES: Record<string, string[]> = {
  '/': ['GET', 'HEAD'],
  '/index.html': ['GET', 'HEAD'],
  '/api/health': ['GET', 'HEAD'],
  '/api/caption': ['POST'],
};

const PAGE_CSP =
  "default-src 'none'; img-src 'self' blob: data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/** What the routes and the server's lifecycle share: one per server. */
export interface ServerState {
  /** The captioner once loaded (null while loading or after a failed load). */
  model: Captioner | null;
  loadError: string | null;
  queue: BatchQueue;
  /** Uploads being received (at most serve.maxUploads, serve.maxUploadsPerClient per address). */
  uploads: UploadSlots;
  /** The upload being received on a connection (a timed-out one is answered through its request). */
  uploadOf: WeakMap<Socket, Slot>;
  /** The open connections; set once listening. */
  connections: Connections | null;
  /** Caption requests fully received and not yet answered. */
  admitted: number;
  draining: boolean;
  /** The Host names answered to; set once listening. */
  allowed: AllowedHosts;
}

/** The request handler of a server: never throws, every failure becomes a JSON `{ "error": "..." }` answer. */
export function createHandler(
  state: ServerState,
  cfg: ServeConfig,
  app: { page: string; formats: string; defaultBeam?: number },
): (req: http.IncomingMessage, res: http.ServerResponse) => Promise<void> {
  let nextId = 0;

  async function handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const started = performance.now();
    let status = 0;
    try {
      const url = checkTarget(req, state.allowed);
      checkOrigin(req, state.allowed);
      const methods = ROUTES[url.pathname];
      if (!methods) throw new HttpError(404, `no such page: ${url.pathname}`);
      if (!methods.includes(req.method ?? ''))
        throw new HttpError(405, `${req.method} is not allowed on ${url.pathname}`, { Allow: methods.join(', ') });
      if (state.draining) throw new HttpError(503, 'the server is shutting down', { Connection: 'close' });

      if (url.pathname === '/api/health') {
        status = health(res);
      } else if (url.pathname === '/api/caption') {
        status = await captionRoute(req, res, url, started);
      } else {
        status = 200;
        send(res, 200, app.page, {
          'Content-Type': 'text/html; charset=utf-8',
          'Cache-Control': 'no-cache',
          'Content-Security-Policy': PAGE_CSP,
          'Referrer-Policy': 'no-referrer',
        });
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
    const failure = (state.model as { failure?: () => string | null } | null)?.failure?.() ?? null;
    const status = state.model && !failure ? 'ok' : state.loadError || failure ? 'error' : 'loading';
    const body: Record<string, unknown> = {
      status,
      model: state.model?.info.name ?? null,
      encoder: state.model?.info.encoder ?? null,
      backend: state.model?.info.backend ?? null,
    };
    if (state.loadError || failure) body.error = state.loadError ?? failure;
    // How full the server is, so a monitor can tell "ok but refusing everything" from "ok".
    body.load = {
      uploading: state.uploads.size,
      maxUploads: cfg.maxUploads,
      waiting: state.queue.waiting,
      queueSize: cfg.queueSize,
    };
    const code = status === 'ok' ? 200 : 503;
    sendJson(res, code, body, { 'Cache-Control': 'no-store' });
    return code;
  }

  async function captionRoute(
    req: http.IncomingMessage,
    res: http.ServerResponse,
    url: URL,
    started: number,
  ): Promise<number> {
    if (!state.model)
      throw new HttpError(
        503,
        state.loadError
          ? `the model failed to load: ${state.loadError}`
          : 'the model is still loading; try again in a moment',
        { 'Retry-After': '2' },
      );
    const client = clientKey(req.socket.remoteAddress);
    // Refuse before reading the body when the queue has no room for this client now (only received
    // images count against it), or no upload slot is free for it.
    if (!state.queue.accepts(client)) throw busy();
    const slot = state.uploads.acquire(client, declaredLength(req), performance.now());
    slot.arrived = () => req.complete;
    // The client is gone when the connection closes. Listen on the socket, not only on the response: a
    // pipelined request's response has no socket yet, and would never hear of it.
    const socket = req.socket;
    const abort = new AbortController();
    const unwatch = watchClose(socket, abort);
    const onClose = () => {
      if (!res.writableEnded) abort.abort();
    };
    res.on('close', onClose);
    let body: Buffer;
    state.uploadOf.set(socket, slot);
    try {
      body = await readBody(req, cfg.maxUploadBytes, slot);
    } catch (e) {
      res.off('close', onClose);
      unwatch();
      throw e;
    } finally {
      state.uploads.release(slot);
      if (state.uploadOf.get(socket) === slot) state.uploadOf.delete(socket);
    }
    state.admitted++;
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
        if (images.length > 1)
          throw new HttpError(400, `the form has ${images.length} "image" fields; send one image per request`);
        bytes = images[0].data;
        if (bytes.length === 0) throw new HttpError(400, 'the image file is empty');
        const beamPart = parts.find((p) => p.name === 'beam');
        if (beamPart && beamPart.data.length <= 16) beamText = beamPart.data.toString('utf8').trim() || beamText;
        else if (beamPart) throw new HttpError(400, 'the "beam" field is not a number');
      } else {
        bytes = body;
      }
      if (bytes.length === 0)
        throw new HttpError(
          400,
          'no image in the request (send multipart field "image" or the image bytes as the body)',
        );
      const beam = parseBeam(beamText, cfg.maxBeam) ?? app.defaultBeam;
      if (!sniffImage(bytes))
        throw new HttpError(415, `that file is not an image we can read (expected ${app.formats})`);
      const pixels = await checkPixels(bytes);

      if (abort.signal.aborted || socket.destroyed) throw new ClientGone();
      let outcome: CaptionOutcome;
      try {
        outcome = await state.queue.submit(
          { id: `req-${++nextId}`, bytes },
          { beam, signal: abort.signal, client, pixels },
        );
      } catch (e) {
        if (e instanceof QueueFullError) throw busy();
        if (e instanceof CancelledError) throw new ClientGone();
        // the worker captioner has logged the crash once; the client may simply try again
        if (e instanceof WorkerCrashedError)
          throw new HttpError(503, `${e.message}; try again in a moment`, { 'Retry-After': '2' });
        throw e;
      }
      if (!outcome.ok) {
        const code = KIND_STATUS[outcome.kind] ?? 422;
        throw new HttpError(
          code,
          outcome.kind === 'corrupt' ? `the image could not be decoded: ${outcome.error}` : outcome.error,
        );
      }
      const ms = Math.round((performance.now() - started) * 10) / 10;
      // an attention model also says where it looked for each word (the page draws it; 4 decimals are plenty)
      const a = outcome.attention;
      const attention = a
        ? { grid: a.grid, words: a.words, rows: a.rows.map((r) => r.map((v) => Math.round(v * 1e4) / 1e4)) }
        : undefined;
      sendJson(res, 200, {
        caption: outcome.caption,
        logprob: outcome.logprob,
        ms,
        ...(attention ? { attention } : {}),
      });
      return 200;
    } finally {
      state.admitted--;
      res.off('close', onClose);
      unwatch();
    }
  }

  /** The image's pixel count from its header, before anything decodes it: 413 past serve.maxPixels, 415/422 for a header that cannot be read. */
  async function checkPixels(bytes: Buffer): Promise<number> {
    let header;
    try {
      header = await imageHeader(bytes);
    } catch (e) {
      if (!(e instanceof ImageError)) throw e;
      throw new HttpError(
        KIND_STATUS[e.kind] ?? 422,
        e.kind === 'corrupt' ? `the image could not be decoded: ${e.reason}` : e.reason,
      );
    }
    const pixels = header.width * header.height;
    if (pixels > cfg.maxPixels) {
      throw new HttpError(
        413,
        `the image has ${header.width} x ${header.height} = ${pixels.toLocaleString('en-US')} pixels; this server takes at most ${cfg.maxPixels.toLocaleString('en-US')} (serve.maxPixels)`,
      );
    }
    return pixels;
  }

  function busy(): HttpError {
    return new HttpError(
      503,
      `the server is busy (serve.queueSize: ${cfg.queueSize} images waiting); try again in a moment`,
      { 'Retry-After': '1' },
    );
  }

  return handle;
}

/** Per connection, the requests to abort when it closes: one 'close' listener per socket, however many requests are pipelined on it. */
const closeWatchers = new WeakMap<Socket, Set<AbortController>>();

/** Abort `ctl` when `socket` closes; returns the function that stops watching. */
function watchClose(socket: Socket, ctl: AbortController): () => void {
  let set = closeWatchers.get(socket);
  if (!set) {
    const mine = new Set<AbortController>();
    closeWatchers.set(socket, mine);
    socket.once('close', () => {
      for (const c of mine) c.abort();
      mine.clear();
    });
    set = mine;
  }
  const watching = set;
  watching.add(ctl);
  return () => void watching.delete(ctl);
}

/** `?beam=K` / form field: undefined when absent, 400 unless an integer in 1..maxBeam. */
export function parseBeam(text: string | null | undefined, maxBeam: number): number | undefined {
  if (text === null || text === undefined || text === '') return undefined;
  if (!/^\d{1,6}$/.test(text))
    throw new HttpError(400, `beam must be an integer from 1 to ${maxBeam}, got ${JSON.stringify(text.slice(0, 20))}`);
  const k = Number(text);
  if (k < 1 || k > maxBeam) throw new HttpError(400, `beam must be an integer from 1 to ${maxBeam}, got ${k}`);
  return k;
}
