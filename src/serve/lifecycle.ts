// The HTTP server's lifecycle: create and listen (a failed listen as a config error), track connections
// and their requests in progress, answer malformed or timed-out requests, and drain on close.
// Part of the HTTP server of `captioner serve` (entry: src/serve/server.ts).
import * as http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import * as os from 'node:os';
import type { ServeConfig } from '../config/schema.js';
import { ConfigError } from '../errors.js';
import { log } from '../log.js';
import { allowedHosts, refuse, tooLarge, WILDCARD } from './body.js';
import type { ServerState } from './routes.js';

/** Listen with `handle` answering requests; close() drains (see RunningServer in server.ts). */
export async function listen(
  state: ServerState,
  cfg: ServeConfig,
  handle: (req: http.IncomingMessage, res: http.ServerResponse) => Promise<void>,
): Promise<{ url: string; networkUrls: string[]; port: number; close(options?: { timeoutMs?: number }): Promise<{ cut: number }>; destroy(): void }> {
  let cut = 0;
  const active = new Set<Promise<void>>();

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
      void refuse(req, res, tooLarge(cfg.maxUploadBytes));
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
    if (state.draining) res.shouldKeepAlive = false;
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
export function serverUrls(addr: AddressInfo, interfaces: { address: string; family: string; internal: boolean }[]): { url: string; networkUrls: string[] } {
  const at = (a: string) => `http://${a.includes(':') ? `[${a}]` : a}:${addr.port}`;
  if (!WILDCARD.has(addr.address)) return { url: at(addr.address), networkUrls: [] };
  const v4only = addr.address === '0.0.0.0';
  const networkUrls = interfaces
    .filter((i) => !i.internal && (!v4only || i.family === 'IPv4') && !i.address.toLowerCase().startsWith('fe80:'))
    .map((i) => at(i.address));
  return { url: at(v4only ? '127.0.0.1' : '::1'), networkUrls };
}
