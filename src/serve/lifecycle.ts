// The HTTP server's lifecycle: create and listen (a failed listen as a config error), track connections
// and their requests in progress (connections.ts), answer malformed, oversized or timed-out requests and
// CONNECT in JSON, and drain on close.
// Part of the HTTP server of `captioner serve` (entry: src/serve/server.ts).
import * as http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import * as os from 'node:os';
import type { ServeConfig } from '../config/schema.js';
import { ConfigError } from '../errors.js';
import { log } from '../log.js';
import { rawAnswer, refuse, tooLarge } from './body.js';
import { seconds } from './http-error.js';
import { clientErrorAnswer, Connections, MAX_HEAD_BYTES } from './connections.js';
import { allowedHosts, WILDCARD } from './host.js';
import type { ServerState } from './routes.js';

/** Listen with `handle` answering requests; close() drains (see RunningServer in server.ts). */
export async function listen(
  state: ServerState,
  cfg: ServeConfig,
  handle: (req: http.IncomingMessage, res: http.ServerResponse) => Promise<void>,
): Promise<{
  url: string;
  networkUrls: string[];
  port: number;
  close(options?: { timeoutMs?: number }): Promise<{ cut: number }>;
  destroy(): void;
}> {
  let cut = 0;
  const active = new Set<Promise<void>>();

  // Node checks request timeouts only every connectionsCheckingInterval (30 s by default), so a 60 s
  // timeout fired after up to 90 s: check often enough that it fires within a tenth of the limit.
  // Host is checked by the routes (checkTarget), so that a request without one gets a JSON answer.
  const headersTimeout = Math.min(cfg.headersTimeoutMs, cfg.requestTimeoutMs);
  const server = http.createServer({
    requestTimeout: cfg.requestTimeoutMs,
    headersTimeout,
    connectionsCheckingInterval: Math.max(50, Math.min(1000, Math.floor(headersTimeout / 10))),
    maxHeaderSize: MAX_HEAD_BYTES,
    requireHostHeader: false,
  });

  // `Expect: 100-continue` clients wait before sending the body: refuse oversized ones without it.
  server.on('checkContinue', (req: http.IncomingMessage, res: http.ServerResponse) => {
    const declared = Number(req.headers['content-length']);
    if (Number.isFinite(declared) && declared > cfg.maxUploadBytes) {
      void refuse(req, res, tooLarge(cfg.maxUploadBytes));
      return;
    }
    res.writeContinue();
    server.emit('request', req, res);
  });

  // Connections and their requests in progress, so draining can close the connections with none
  // (idle keep-alive ones, and ones a client opened ahead of time) and ask the busy ones to close after.
  const connections = new Connections(cfg);
  state.connections = connections;
  const openResponses = new Set<http.ServerResponse>();
  server.on('connection', (socket: Socket) => connections.open(socket));
  server.on('request', (req: http.IncomingMessage, res: http.ServerResponse) => {
    const conn = connections.requestStarted(req.socket, req);
    if (!conn) return; // its connection was answered on the socket and is closing: nothing more is served on it
    openResponses.add(res);
    if (state.draining) res.shouldKeepAlive = false;
    res.once('close', () => {
      openResponses.delete(res);
      connections.requestDone(conn);
    });
    track(handle(req, res));
  });
  // A proxy request: this is not a proxy (without a listener node would just drop the connection).
  server.on('connect', (_req: http.IncomingMessage, socket: Socket) => {
    socket.on('error', () => {});
    const conn = connections.all.get(socket);
    const answer = rawAnswer(405, 'CONNECT is not supported: this server is not a proxy', { Allow: 'GET, HEAD, POST' });
    if (conn) connections.answer(conn, answer);
    else socket.end(answer);
  });
  server.on('clientError', (err: NodeJS.ErrnoException, socket: Socket) => {
    // Malformed HTTP, a head too large, or a request that took too long to arrive: answer in JSON when
    // the socket still can, never crash.
    const conn = connections.all.get(socket);
    if (!conn || !socket.writable || err.code === 'ECONNRESET') {
      socket.destroy();
      return;
    }
    if (conn.last && !conn.last.complete) {
      // The error concerns the body of the request in progress. An upload is answered by its own
      // request, in its turn among the answers on this connection: 408 naming serve.requestTimeoutMs,
      // or 400 when the client ended the connection before the body it announced.
      const slot = state.uploadOf.get(socket);
      if (slot) {
        if (err.code === 'ERR_HTTP_REQUEST_TIMEOUT')
          slot.evict(`it did not arrive within ${seconds(cfg.requestTimeoutMs)} (serve.requestTimeoutMs)`);
        else if (err.code === 'HPE_INVALID_EOF_STATE')
          slot.evict(
            'the upload ended early: the client closed its side of the connection before the body it announced had arrived',
            400,
          );
        else slot.evict(`malformed upload: ${(err as { reason?: string }).reason ?? err.code}`, 400);
        return;
      }
      // a refused body still arriving: its answer is already under way
      if ((socket as Socket & { _httpMessage?: http.ServerResponse })._httpMessage?.headersSent) {
        socket.destroy();
        return;
      }
    }
    // The error concerns a request after every one so far (its head): answered after theirs.
    const [status, message] = clientErrorAnswer(err, conn, cfg);
    connections.answer(conn, rawAnswer(status, message));
  });

  function track(p: Promise<void>): void {
    active.add(p);
    void p.finally(() => active.delete(p));
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
  state.allowed = allowedHosts(cfg.host, addr.address, cfg.allowedHosts, interfaces, os.hostname());
  const { url, networkUrls } = serverUrls(addr, interfaces);

  /** Cut every connection; those with a request in progress count as cut. */
  function cutAll(): void {
    for (const [socket, conn] of connections.all) {
      if (conn.inProgress > 0) cut++;
      connections.all.delete(socket); // counted once, even when called again before its 'close' event
      socket.destroy();
    }
  }

  let closing: Promise<{ cut: number }> | null = null;
  return {
    url,
    networkUrls,
    port: addr.port,
    destroy() {
      state.draining = true;
      server.close();
      cutAll();
    },
    close(options = {}) {
      closing ??= (async () => {
        state.draining = true;
        for (const res of openResponses) if (!res.headersSent) res.shouldKeepAlive = false;
        const closed = new Promise<void>((resolve) => server.close(() => resolve()));
        const timeoutMs = options.timeoutMs ?? cfg.drainTimeoutMs;
        let timer: NodeJS.Timeout | undefined;
        const deadline = new Promise<'timeout'>((resolve) => (timer = setTimeout(() => resolve('timeout'), timeoutMs)));
        // Let every admitted request finish (they may still be uploading), then the queue empties too.
        const finished = (async () => {
          while (active.size) await Promise.allSettled([...active]);
          await state.queue.idle();
        })();
        const r = await Promise.race([finished.then(() => 'done' as const), deadline]);
        if (r === 'timeout')
          log.warn(
            `serve: ${active.size} request(s) still running after ${timeoutMs} ms (serve.drainTimeoutMs); cutting their connections`,
          );
        // Connections with nothing in progress (idle keep-alive, or opened but never used) go now.
        if (r === 'timeout') cutAll();
        else for (const [socket, conn] of connections.all) if (conn.inProgress === 0) socket.destroy();
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
      return new ConfigError(
        `cannot listen on ${where}: port ${cfg.port} is already in use (another captioner serve?); choose another with --port (serve.port), or 0 for any free port`,
      );
    case 'EACCES':
      return new ConfigError(
        `cannot listen on ${where}: permission denied (ports below 1024 need privileges); choose another with --port (serve.port)`,
      );
    case 'EADDRNOTAVAIL':
      return new ConfigError(
        `cannot listen on ${where}: ${cfg.host} is not an address of this machine (--host, serve.host)`,
      );
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      return new ConfigError(
        `cannot listen on ${where}: the host name ${cfg.host} does not resolve (--host, serve.host)`,
      );
    default:
      return e;
  }
}

/** This machine's interface addresses (without IPv6 zone ids). */
function localAddresses(): { address: string; family: string; internal: boolean }[] {
  return Object.values(os.networkInterfaces())
    .flat()
    .filter((i): i is os.NetworkInterfaceInfo => !!i)
    .map((i) => ({ address: i.address.replace(/%.*$/, ''), family: i.family, internal: i.internal }));
}

/**
 * URLs to print for a bound address. On 0.0.0.0 / :: nobody can open http://0.0.0.0:PORT, so `url` is
 * the loopback one and `networkUrls` lists this machine's other addresses (of the bound family; both for ::).
 */
export function serverUrls(
  addr: AddressInfo,
  interfaces: { address: string; family: string; internal: boolean }[],
): { url: string; networkUrls: string[] } {
  const at = (a: string) => `http://${a.includes(':') ? `[${a}]` : a}:${addr.port}`;
  if (!WILDCARD.has(addr.address)) return { url: at(addr.address), networkUrls: [] };
  const v4only = addr.address === '0.0.0.0';
  const networkUrls = interfaces
    .filter((i) => !i.internal && (!v4only || i.family === 'IPv4') && !i.address.toLowerCase().startsWith('fe80:'))
    .map((i) => at(i.address));
  return { url: at(v4only ? '127.0.0.1' : '::1'), networkUrls };
}
