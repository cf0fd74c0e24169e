// Request intake and answers for the HTTP server: reading an upload (the byte limit, 413 before reading a
// body announced as too big, keeping its slot's byte count for the slow-sender rules of slots.ts), the
// multipart Content-Type, and sending answers: JSON errors through a response (refusing a body the server
// did not read without a connection reset, and without cutting the answers to requests pipelined before
// it) or, where node has no response object (malformed requests, CONNECT), as raw bytes on the socket.
// Part of the HTTP server of `captioner serve` (entry: src/serve/server.ts).
import * as http from 'node:http';
import { performance } from 'node:perf_hooks';
import { log } from '../log.js';
import { multipartBoundary } from './multipart.js';
import { HttpError, sizeText } from './http-error.js';
import type { Slot } from './slots.js';

/** The client went away mid-request: nobody to answer. */
export class ClientGone extends Error {}

/** After refusing a body, how much more of it we read (and drop) so the client sees the answer. */
const LINGER_BYTES = 4 * 1024 * 1024;
/** ... and for how long, once the answer is written. */
const LINGER_MS = 2000;

/** 413 for an upload over `limit` bytes (serve.maxUploadBytes). */
export function tooLarge(limit: number): HttpError {
  return new HttpError(413, `the upload is larger than ${sizeText(limit)} (serve.maxUploadBytes)`, {
    Connection: 'close',
  });
}

/** The Content-Length a request announces, when it announces one. */
export function declaredLength(req: http.IncomingMessage): number | undefined {
  const v = req.headers['content-length'];
  if (v === undefined) return undefined;
  const n = Number(v);
  return Number.isSafeInteger(n) && n >= 0 ? n : undefined;
}

/**
 * Read the whole body, refusing (413) as soon as it passes `limit` bytes. Every chunk is counted on
 * `slot` (for the slow-sender rules); `slot.evict(reason)` cuts the upload short with a 408.
 */
export function readBody(req: http.IncomingMessage, limit: number, slot: Slot): Promise<Buffer> {
  const declared = declaredLength(req);
  if (declared !== undefined && declared > limit) return Promise.reject(tooLarge(limit));
  return new Promise<Buffer>((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const cleanup = () => {
      req.off('data', onData);
      req.off('end', onEnd);
      req.off('error', onGone);
      req.off('close', onClose);
    };
    slot.evict = (reason: string, status = 408) => {
      cleanup();
      req.pause();
      reject(new HttpError(status, status === 408 ? `the upload was cut: ${reason}` : reason, { Connection: 'close' }));
    };
    const onData = (chunk: Buffer) => {
      slot.lastData = performance.now();
      slot.received += chunk.length;
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

export function sendJson(
  res: http.ServerResponse,
  status: number,
  body: unknown,
  headers: Record<string, string> = {},
): void {
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
 * A whole JSON error answer as raw bytes, for the socket itself where node gives no response object (a
 * malformed or timed-out request, CONNECT, a connection refused before its request): then the
 * connection closes.
 */
export function rawAnswer(status: number, message: string, headers: Record<string, string> = {}): string {
  const body = JSON.stringify({ error: message });
  const extra = Object.entries(headers)
    .map(([k, v]) => `${k}: ${v}\r\n`)
    .join('');
  return (
    `HTTP/1.1 ${status} ${http.STATUS_CODES[status] ?? 'Error'}\r\nContent-Type: application/json; charset=utf-8\r\n` +
    `Content-Length: ${Buffer.byteLength(body)}\r\nX-Content-Type-Options: nosniff\r\n${extra}Connection: close\r\n\r\n${body}`
  );
}

/** Whether part of the request's body is still to come: it announced one that has not been read to its end. */
function bodyPending(req: http.IncomingMessage): boolean {
  if (req.complete || req.readableEnded) return false;
  return req.headers['transfer-encoding'] !== undefined || (declaredLength(req) ?? 0) > 0;
}

/**
 * Answer an error. A request without a body (a GET, say) keeps its connection, unless the error says
 * otherwise. When a body was announced and not read to its end (413, or an early 404/405/503), the
 * connection is closed after the answer; once the answer is written (after the answers to any requests
 * pipelined before this one: node writes them in order), whatever the client is still sending is
 * discarded for a short while, so it gets to read the answer instead of a connection reset.
 */
export function refuse(req: http.IncomingMessage, res: http.ServerResponse, e: HttpError): Promise<void> {
  const pending = bodyPending(req);
  const headers = { ...e.headers };
  if (pending) headers.Connection = 'close';
  sendJson(res, e.status, { error: e.message }, headers);
  if (!pending) {
    req.resume(); // nothing (more) to read: let node finish the request, and the connection go on
    return Promise.resolve();
  }
  req.pause(); // until our answer is written: an earlier pipelined answer may still be on its way
  return new Promise<void>((resolve) => {
    const socket = req.socket;
    let discarded = 0;
    let done = false;
    let timer: NodeJS.Timeout | undefined;
    const hangUp = (graceful: boolean) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      if (discarded) log.debug(`serve: refused a body, dropped ${discarded} more bytes of it before hanging up`);
      if (graceful) socket.end();
      else socket.destroy();
      resolve();
    };
    const linger = () => {
      // Discard (not buffer) what is still coming, for at most LINGER_MS and LINGER_BYTES, then hang up.
      timer = setTimeout(() => hangUp(false), LINGER_MS);
      timer.unref();
      req.on('data', (chunk: Buffer) => {
        discarded += chunk.length;
        if (discarded > LINGER_BYTES) hangUp(false);
      });
      req.once('end', () => hangUp(true));
      req.resume();
    };
    req.once('close', () => hangUp(true));
    req.once('error', () => hangUp(false));
    if (res.writableFinished) linger();
    else {
      res.once('finish', linger);
      res.once('close', () => {
        if (!res.writableFinished) hangUp(false); // the connection went before our answer was written
      });
    }
  });
}
