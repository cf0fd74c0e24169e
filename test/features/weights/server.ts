// A loopback HTTP server for download tests: serves fixed bytes with Range support, and can cut the
// connection part-way, ignore Range, or answer 404. Never reaches outside 127.0.0.1.
import { createHash } from 'node:crypto';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';

export interface TestServer {
  base: string;
  requests: { path: string; range?: string }[];
  /** Cut the next `count` responses after `bytes` body bytes. */
  cutNext(bytes: number, count?: number): void;
  ignoreRange: boolean;
  close(): Promise<void>;
}

export function payload(n: number, seed = 1): Buffer {
  const b = Buffer.alloc(n);
  let x = seed;
  for (let i = 0; i < n; i++) {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0;
    b[i] = x >>> 24;
  }
  return b;
}
export const md5 = (b: Buffer) => createHash('md5').update(b).digest('hex');

export async function startServer(files: Record<string, Buffer>): Promise<TestServer> {
  let cut: { bytes: number; count: number } | null = null;
  const state: TestServer = {
    base: '',
    requests: [],
    ignoreRange: false,
    cutNext(bytes, count = 1) {
      cut = { bytes, count };
    },
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
  const server = http.createServer((req, res) => {
    const name = decodeURIComponent((req.url ?? '/').split('/').pop() ?? '');
    state.requests.push({ path: req.url ?? '', range: req.headers.range });
    const body = files[name];
    if (!body) {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found');
      return;
    }
    let start = 0;
    const m = /^bytes=(\d+)-$/.exec(req.headers.range ?? '');
    if (m && !state.ignoreRange) {
      start = Number(m[1]);
      if (start >= body.length) {
        res.writeHead(416, { 'content-range': `bytes */${body.length}` }).end();
        return;
      }
      res.writeHead(206, {
        'content-length': body.length - start,
        'content-range': `bytes ${start}-${body.length - 1}/${body.length}`,
        'accept-ranges': 'bytes',
      });
    } else {
      res.writeHead(200, { 'content-length': body.length, 'accept-ranges': 'bytes' });
    }
    const rest = body.subarray(start);
    if (cut && cut.count > 0) {
      cut.count--;
      const n = Math.min(cut.bytes, rest.length - 1);
      // FIN after the bytes are flushed (not a reset, which may drop bytes in flight): the client sees a short body
      res.write(rest.subarray(0, n), () => res.socket?.end());
      return;
    }
    res.end(rest);
  });
  server.keepAliveTimeout = 1;
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  state.base = `http://127.0.0.1:${(server.address() as AddressInfo).port}/`;
  return state;
}
