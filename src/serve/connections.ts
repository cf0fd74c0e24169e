// The server's open connections: the client address each belongs to, the requests in progress on each
// (draining waits for them), serve.maxConnectionsPerClient with the slow-sender rules of slots.ts for
// connections that are still sending request headers (header trickling) or sit idle, and the JSON
// answers to what node refuses before there is a response object (a malformed request, headers too
// large or too slow), which are written only after the answers still owed on that connection, so
// pipelined answers always arrive, in order.
// Part of the HTTP server of `captioner serve` (entry: src/serve/server.ts).
import type * as http from 'node:http';
import type { Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import type { ServeConfig } from '../config/schema.js';
import { rawAnswer } from './body.js';
import { seconds } from './http-error.js';
import { clientKey, evictable, type SlowRules } from './slots.js';

/** How long a connection we answered on the socket itself may stay half-open before it is cut. */
const CLOSE_LINGER_MS = 1000;

/** node's limit on a request's head (request line and headers), passed to http.createServer. */
export const MAX_HEAD_BYTES = 16 * 1024;

export interface Conn {
  readonly socket: Socket;
  readonly client: string;
  /** Requests on it whose answer has not been written. */
  inProgress: number;
  /** Requests started on it so far, and the last of them. */
  requests: number;
  last: http.IncomingMessage | null;
  /** performance.now() since when nothing has been in progress on it, and socket.bytesRead then. */
  idleSince: number;
  bytesAtIdle: number;
  /** Whether the first request's request line has ended (so a head that is too large gets 431, not 414). */
  lineEnded: boolean;
  /** An error answer owed after the answers still in progress on it; then it closes. */
  owed: string | null;
  /** Answered on the socket and closing: requests still arriving on it are not served. */
  closing: boolean;
}

export class Connections {
  readonly all = new Map<Socket, Conn>();
  private readonly byClient = new Map<string, Set<Conn>>();
  private readonly rules: SlowRules;

  constructor(private readonly cfg: ServeConfig) {
    // the headers of a request have no announced length: only the stall and rate rules apply
    this.rules = {
      graceMs: cfg.uploadGraceMs,
      minRate: cfg.minUploadRate,
      stallMs: cfg.uploadStallMs,
      deadlineMs: Infinity,
    };
  }

  /** Connections from `client` now (closing ones excluded). */
  countOf(client: string): number {
    return this.byClient.get(client)?.size ?? 0;
  }

  /**
   * A new connection. When its address already has serve.maxConnectionsPerClient, its idle connection or
   * slowest one still sending headers (past the grace, see slots.ts) is closed to make room; when none
   * is, the new connection is answered 429 and closed.
   */
  open(socket: Socket): void {
    const now = performance.now();
    const conn: Conn = {
      socket,
      client: clientKey(socket.remoteAddress),
      inProgress: 0,
      requests: 0,
      last: null,
      idleSince: now,
      bytesAtIdle: 0,
      lineEnded: false,
      owed: null,
      closing: false,
    };
    this.all.set(socket, conn);
    socket.once('close', () => this.forget(conn));
    const max = this.cfg.maxConnectionsPerClient;
    if (this.countOf(conn.client) >= max && !this.evictWaiting(conn.client, now)) {
      this.answer(
        conn,
        rawAnswer(
          429,
          `too many connections from your address (serve.maxConnectionsPerClient: ${max}); close some, or try again in a moment`,
          { 'Retry-After': '1' },
        ),
      );
      return;
    }
    let mine = this.byClient.get(conn.client);
    if (!mine) this.byClient.set(conn.client, (mine = new Set()));
    mine.add(conn);
    // Until the first request line has ended, watch for its end: a head too large is then 414 (the
    // URL) or 431 (the headers). Listening for 'data' makes node hand the socket's data over in JS.
    const watch = (chunk: Buffer) => {
      if (conn.requests > 0 || chunk.includes(10)) {
        conn.lineEnded = true;
        socket.off('data', watch);
      }
    };
    socket.on('data', watch);
  }

  /** A request has arrived on `socket` (its headers are in); undefined when the connection is not served. */
  requestStarted(socket: Socket, req: http.IncomingMessage): Conn | undefined {
    const conn = this.all.get(socket);
    if (!conn || conn.closing) return undefined;
    conn.requests++;
    conn.last = req;
    conn.inProgress++;
    return conn;
  }

  /** A request's answer is written (or its connection gone). */
  requestDone(conn: Conn): void {
    conn.inProgress = Math.max(0, conn.inProgress - 1);
    if (conn.inProgress > 0) return;
    conn.idleSince = performance.now();
    conn.bytesAtIdle = conn.socket.bytesRead;
    if (conn.owed !== null) this.closeWith(conn, conn.owed);
  }

  /**
   * Answer on the socket itself (raw bytes from rawAnswer) and close: at once when nothing is in progress
   * on it, else after the answers still owed (the first such answer wins).
   */
  answer(conn: Conn, bytes: string): void {
    if (conn.closing || conn.owed !== null) return;
    if (conn.inProgress > 0) conn.owed = bytes;
    else this.closeWith(conn, bytes);
  }

  private closeWith(conn: Conn, bytes: string | null): void {
    if (conn.closing) return;
    conn.closing = true;
    this.byClient.get(conn.client)?.delete(conn);
    const { socket } = conn;
    if (!socket.writable) socket.destroy();
    else if (bytes) socket.end(bytes);
    else socket.end();
    // half-closed: give the client a moment to read the answer, then cut whatever it still sends
    setTimeout(() => socket.destroy(), CLOSE_LINGER_MS).unref();
  }

  /** Close the slowest evictable connection of `client` that is waiting for a request; false when none is. */
  private evictWaiting(client: string, now: number): boolean {
    let worst: Conn | undefined;
    let why: { reason: string; rate: number } | undefined;
    for (const c of this.byClient.get(client) ?? []) {
      if (c.inProgress > 0 || c.closing) continue;
      const received = c.socket.bytesRead - c.bytesAtIdle;
      const e = evictable(
        { started: c.idleSince, received, lastData: received > 0 ? now : c.idleSince },
        this.rules,
        now,
      );
      if (e && (!why || e.rate < why.rate)) [worst, why] = [c, e];
    }
    if (!worst || !why) return false;
    const headersStarted = worst.socket.bytesRead > worst.bytesAtIdle;
    this.closeWith(
      worst,
      headersStarted
        ? rawAnswer(
            408,
            `the request headers were cut: ${why.reason}, and this address opened more than serve.maxConnectionsPerClient (${this.cfg.maxConnectionsPerClient}) connections`,
          )
        : null,
    );
    return true;
  }

  private forget(conn: Conn): void {
    this.all.delete(conn.socket);
    const mine = this.byClient.get(conn.client);
    mine?.delete(conn);
    if (mine && mine.size === 0) this.byClient.delete(conn.client);
  }
}

/**
 * The status and message for an error node raised on a connection before there was a response to
 * answer through (node's 'clientError'): a head too large (414 when it is the request line, else 431),
 * a request or its headers too slow (408, naming the limit that fired), anything else malformed (400).
 */
export function clientErrorAnswer(
  err: NodeJS.ErrnoException & { rawPacket?: Buffer; bytesParsed?: number; reason?: string },
  conn: Conn | undefined,
  cfg: ServeConfig,
): [number, string] {
  switch (err.code) {
    case 'HPE_HEADER_OVERFLOW':
      return requestLineTooLong(err, conn)
        ? [414, `the request URL is too long: the request line and headers may have ${MAX_HEAD_BYTES / 1024} KB in all`]
        : [431, `the request headers are too large: ${MAX_HEAD_BYTES / 1024} KB at most, request line included`];
    case 'ERR_HTTP_REQUEST_TIMEOUT': {
      const [ms, key] =
        cfg.headersTimeoutMs <= cfg.requestTimeoutMs
          ? [cfg.headersTimeoutMs, 'serve.headersTimeoutMs']
          : [cfg.requestTimeoutMs, 'serve.requestTimeoutMs'];
      return [408, `the request headers did not arrive within ${seconds(ms)} (${key})`];
    }
    case 'HPE_CHUNK_EXTENSIONS_OVERFLOW':
      return [413, 'the chunk extensions of the request body are too large'];
    default:
      return [400, `malformed HTTP request${err.reason ? `: ${err.reason}` : ''}`];
  }
}

/**
 * Whether a head that overflowed node's limit is still in its request line (the URL is too long). For a
 * connection's first request this is known exactly (Connections watches for the end of the line);
 * for later ones, from the bytes node was parsing: the line it stopped in starts with `METHOD `.
 */
function requestLineTooLong(err: { rawPacket?: Buffer; bytesParsed?: number }, conn: Conn | undefined): boolean {
  const raw = err.rawPacket;
  const seen = raw
    ? raw.subarray(0, typeof err.bytesParsed === 'number' ? err.bytesParsed : raw.length).toString('latin1')
    : '';
  if (conn && conn.requests === 0) return !conn.lineEnded && !seen.includes('\n');
  const nl = seen.lastIndexOf('\n');
  return nl >= 0 && /^[A-Z]+ /.test(seen.slice(nl + 1));
}
