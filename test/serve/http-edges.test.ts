// The server at the edges of HTTP, over raw sockets: the Host rules of RFC 9112 (one Host, a valid one,
// absolute-form targets judged by their authority), the Origin check for POSTs, pipelined requests
// (errors keep the connection and answers keep their order), JSON bodies for what node itself refuses
// (no Host, CONNECT, a URL or headers too large, headers too slow, malformed requests), a truncated TIFF,
// and slow senders from several addresses (bound with the socket's localAddress). No timing assertions.
import * as net from 'node:net';
import sharp from 'sharp';
import { afterEach, describe, expect, it } from 'vitest';
import { createFakeCaptioner } from './fake.js';
import {
  allowedHosts,
  hostAllowed,
  originAllowed,
  parseHost,
  startServer,
  type RunningServer,
} from '../../src/serve/server.js';
import { RED, serveConfig, solid } from './fixtures.js';

process.env.CAPTIONER_QUIET = '1';

const sockets: net.Socket[] = [];
const servers: RunningServer[] = [];
const timers: NodeJS.Timeout[] = [];
afterEach(async () => {
  for (const t of timers.splice(0)) clearInterval(t);
  for (const s of sockets.splice(0)) s.destroy();
  for (const s of servers.splice(0)) await s.close({ timeoutMs: 200 });
});

async function start(...args: Parameters<typeof serveConfig>) {
  const fake = createFakeCaptioner();
  const server = await startServer(fake, serveConfig(...args));
  servers.push(server);
  return { fake, server };
}

/** A raw connection (from `from`, default 127.0.0.1): send(), the text so far, and the parsed answers. */
function connect(port: number, from = '127.0.0.1') {
  const socket = net.connect({ port, host: '127.0.0.1', localAddress: from });
  sockets.push(socket);
  socket.on('error', () => {});
  let text = '';
  socket.on('data', (d) => (text += d.toString('latin1')));
  const closed = new Promise<void>((resolve) => socket.on('close', () => resolve()));
  return {
    socket,
    closed,
    send: (data: string | Buffer) => socket.write(data),
    text: () => text,
    answers: () => parseAnswers(text),
  };
}

interface Answer {
  status: number;
  headers: Record<string, string>;
  body: string;
}

/** The complete HTTP answers in `text` (Content-Length framed), in order. */
function parseAnswers(text: string): Answer[] {
  const out: Answer[] = [];
  let pos = 0;
  for (;;) {
    const end = text.indexOf('\r\n\r\n', pos);
    if (end < 0) return out;
    const [statusLine, ...lines] = text.slice(pos, end).split('\r\n');
    const headers: Record<string, string> = {};
    for (const l of lines) headers[l.slice(0, l.indexOf(':')).toLowerCase()] = l.slice(l.indexOf(':') + 1).trim();
    const length = Number(headers['content-length'] ?? 0);
    if (text.length < end + 4 + length) return out;
    out.push({ status: Number(statusLine.split(' ')[1]), headers, body: text.slice(end + 4, end + 4 + length) });
    pos = end + 4 + length;
  }
}

async function until(cond: () => boolean | Promise<boolean>): Promise<void> {
  while (!(await cond())) await new Promise((r) => setTimeout(r, 5));
}

const errorOf = (a: Answer) => (JSON.parse(a.body) as { error: string }).error;
const get = (path: string, host: string, extra = '') => `GET ${path} HTTP/1.1\r\nHost: ${host}\r\n${extra}\r\n`;
const post = (port: number, img: Buffer, extra = '') =>
  Buffer.concat([
    Buffer.from(
      `POST /api/caption HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nContent-Type: image/png\r\nContent-Length: ${img.length}\r\n${extra}\r\n`,
      'latin1',
    ),
    img,
  ]);

describe('Host (RFC 9112)', () => {
  it('parses host[:port] strictly', () => {
    expect(parseHost('127.0.0.1:8080')).toEqual({ name: '127.0.0.1', port: '8080' });
    expect(parseHost('[::1]:8080')).toEqual({ name: '[::1]', port: '8080' });
    expect(parseHost('localhost')).toEqual({ name: 'localhost', port: null });
    for (const bad of [
      '[::1]evil.com',
      '[::1]:80evil',
      'localhost:abc',
      '',
      'a b',
      'user@localhost',
      'localhost/x',
      '[::1',
    ])
      expect(parseHost(bad), bad).toBeNull();
    const allowed = allowedHosts('127.0.0.1', '127.0.0.1', [], [], 'pc');
    expect(hostAllowed('[::1]:8080', allowed)).toBe(true);
    expect(hostAllowed('[::1]evil.com', allowed)).toBe(false);
    expect(hostAllowed('[::1]evil.com', allowedHosts('127.0.0.1', '127.0.0.1', ['*'], [], 'pc'))).toBe(false); // not a host at all
  });

  it('400 for two Host headers, an invalid one, or none in HTTP/1.1; HTTP/1.0 may omit it', async () => {
    const { server } = await start();
    const p = server.port;
    const cases: [string, number, RegExp][] = [
      [
        `GET /api/health HTTP/1.1\r\nHost: 127.0.0.1:${p}\r\nHost: evil.example\r\n\r\n`,
        400,
        /2 Host headers; HTTP\/1\.1 allows exactly one/,
      ],
      [
        `GET /api/health HTTP/1.1\r\nHost: [::1]evil.com\r\n\r\n`,
        400,
        /Host header "\[::1\]evil\.com" is not a valid host/,
      ],
      [`GET /api/health HTTP/1.1\r\n\r\n`, 400, /no Host header; HTTP\/1\.1 requires one/],
    ];
    for (const [request, status, message] of cases) {
      const c = connect(p);
      c.send(request);
      await until(() => c.answers().length === 1);
      const [a] = c.answers();
      expect(a.status, request).toBe(status);
      expect(a.headers['content-type']).toMatch(/application\/json/);
      expect(errorOf(a)).toMatch(message);
    }
    const old = connect(p);
    old.send('GET /api/health HTTP/1.0\r\n\r\n');
    await until(() => old.answers().length === 1);
    expect(old.answers()[0].status).toBe(200);
  });

  it('judges an absolute-form target by its own authority, not by Host', async () => {
    const { server } = await start();
    const p = server.port;
    const c = connect(p);
    c.send(get('http://evil.example/api/health', `127.0.0.1:${p}`));
    await until(() => c.answers().length === 1);
    expect(c.answers()[0].status).toBe(403);
    expect(errorOf(c.answers()[0])).toMatch(/evil\.example.*serve\.allowedHosts/);
    const d = connect(p);
    d.send(get(`http://127.0.0.1:${p}/api/health`, 'evil.example'));
    d.send(get(`ftp://127.0.0.1:${p}/api/health`, `127.0.0.1:${p}`));
    await until(() => d.answers().length === 2);
    expect(d.answers().map((a) => a.status)).toEqual([200, 400]);
  });
});

describe('Origin', () => {
  it('refuses a POST from a page of another site (403), before reading it; same site, no Origin and GETs are fine', async () => {
    const { server, fake } = await start({ allowedHosts: ['captioner.lan'] });
    const img = await solid(RED, 'png');
    const send = (origin?: string) =>
      fetch(`${server.url}/api/caption`, {
        method: 'POST',
        body: img,
        headers: { 'content-type': 'image/png', ...(origin ? { origin } : {}) },
      }).then(async (r) => ({ status: r.status, body: (await r.json()) as { error?: string } }));
    for (const foreign of [
      'http://evil.example',
      'http://127.0.0.1.evil.example',
      'null',
      'http://[::1]evil.com',
      'file://',
    ]) {
      const a = await send(foreign);
      expect(a.status, foreign).toBe(403);
      expect(a.body.error).toMatch(/cross-origin request refused/);
    }
    expect(fake.calls).toHaveLength(0);
    for (const ours of [undefined, server.url, 'http://localhost:9999', 'https://captioner.lan'])
      expect((await send(ours)).status, String(ours)).toBe(200);
    // a GET (reading nothing of ours a page could use) is not refused
    expect((await fetch(`${server.url}/api/health`, { headers: { origin: 'http://evil.example' } })).status).toBe(200);
    const allowed = allowedHosts('127.0.0.1', '127.0.0.1', [], [], 'pc');
    expect(originAllowed('http://127.0.0.1:8080', allowed)).toBe(true);
    expect(originAllowed('http://127.0.0.1:8080/path', allowed)).toBe(false);
    expect(originAllowed('http://user@127.0.0.1', allowed)).toBe(false);
  });
});

describe('errors never cost other requests', () => {
  it('404 and 405 on a GET keep the connection; pipelined answers arrive, in order', async () => {
    const { server } = await start();
    const p = server.port;
    const img = await solid(RED, 'png');
    const c = connect(p);
    // a caption, a 404, a 405 and a health check, pipelined in one write
    c.send(
      Buffer.concat([
        post(p, img),
        Buffer.from(
          get('/nope', `127.0.0.1:${p}`) + get('/api/caption', `127.0.0.1:${p}`) + get('/api/health', `127.0.0.1:${p}`),
        ),
      ]),
    );
    await until(() => c.answers().length === 4);
    const answers = c.answers();
    expect(answers.map((a) => a.status)).toEqual([200, 404, 405, 200]);
    expect(JSON.parse(answers[0].body).caption).toBe('a red image');
    expect(errorOf(answers[1])).toMatch(/no such page: \/nope/);
    expect(answers.every((a) => a.headers.connection !== 'close')).toBe(true);
    // still open: one more on the same connection
    c.send(get('/api/health', `127.0.0.1:${p}`));
    await until(() => c.answers().length === 5);
    expect(c.answers()[4].status).toBe(200);
    expect(c.socket.destroyed).toBe(false);
  });

  it('11 pipelined uploads are all answered, in order, without a MaxListenersExceededWarning', async () => {
    const { server } = await start();
    const warnings: string[] = [];
    const onWarning = (w: Error) => warnings.push(`${w.name}: ${w.message}`);
    process.on('warning', onWarning);
    try {
      const images = await Promise.all(
        Array.from({ length: 11 }, (_, i) => solid({ r: i * 20, g: 10, b: 200 - i * 10 }, 'png', 16 + i)),
      );
      const c = connect(server.port);
      c.send(Buffer.concat(images.map((img) => post(server.port, img))));
      await until(() => c.answers().length === 11);
      expect(c.answers().map((a) => a.status)).toEqual(Array(11).fill(200));
      await new Promise((r) => setImmediate(r));
      expect(warnings.filter((w) => /MaxListeners/.test(w))).toEqual([]);
    } finally {
      process.off('warning', onWarning);
    }
  });

  it('what node refuses itself gets the JSON answer too: CONNECT 405, a long URL 414, large headers 431, malformed 400', async () => {
    const { server } = await start();
    const p = server.port;
    const cases: [string, number, RegExp][] = [
      [`CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\n\r\n`, 405, /CONNECT is not supported/],
      [get('/' + 'a'.repeat(20_000), `127.0.0.1:${p}`), 414, /request URL is too long.*16 KB/],
      [
        get('/api/health', `127.0.0.1:${p}`, `X-Big: ${'b'.repeat(20_000)}\r\n`),
        431,
        /request headers are too large: 16 KB/,
      ],
      ['THIS IS NOT HTTP\r\n\r\n', 400, /malformed HTTP request/],
    ];
    for (const [request, status, message] of cases) {
      const c = connect(p);
      c.send(request);
      await c.closed; // each of these closes the connection after its answer
      const [a] = c.answers();
      expect(a?.status, request.slice(0, 40)).toBe(status);
      expect(a.headers['content-type']).toMatch(/application\/json/);
      expect(errorOf(a)).toMatch(message);
    }
    // a long URL as the second request on a connection: the first is answered, then 414
    const c = connect(p);
    c.send(get('/api/health', `127.0.0.1:${p}`) + get('/' + 'a'.repeat(20_000), `127.0.0.1:${p}`));
    await c.closed;
    expect(c.answers().map((a) => a.status)).toEqual([200, 414]);
  });

  it('a malformed request pipelined after a caption waits for the caption to be answered', async () => {
    let open!: () => void;
    const fake = createFakeCaptioner({ gate: new Promise<void>((r) => (open = r)) });
    const server = await startServer(fake, serveConfig());
    servers.push(server);
    const img = await solid(RED, 'png');
    const c = connect(server.port);
    c.send(Buffer.concat([post(server.port, img), Buffer.from('NOT HTTP AT ALL\r\n\r\n')]));
    await until(() => fake.calls.length === 1);
    expect(c.answers()).toHaveLength(0); // the 400 is not written ahead of the caption
    open();
    await c.closed;
    expect(c.answers().map((a) => a.status)).toEqual([200, 400]);
  });

  it('408 for headers that do not arrive in time names serve.headersTimeoutMs and its real value', async () => {
    const { server } = await start({ headersTimeoutMs: 300 });
    const c = connect(server.port);
    c.send(`GET /api/health HTTP/1.1\r\nHost: 127.0.0.1:${server.port}\r\nX-Slow: `);
    await c.closed;
    const [a] = c.answers();
    expect(a.status).toBe(408);
    expect(errorOf(a)).toBe('the request headers did not arrive within 0.3 s (serve.headersTimeoutMs)');
  });

  it('a truncated TIFF is 422 (damaged), not 415', async () => {
    const { server, fake } = await start();
    const tiff = await sharp({ create: { width: 64, height: 64, channels: 3, background: '#804020' } })
      .tiff()
      .toBuffer();
    // cut inside its directory (IFD): the header itself cannot be read (libvips: "unsupported image format")
    const cut = tiff.subarray(0, tiff.readUInt32LE(4) + 4);
    const res = await fetch(`${server.url}/api/caption`, {
      method: 'POST',
      body: cut,
      headers: { 'content-type': 'image/tiff' },
    });
    expect(res.status).toBe(422);
    expect(((await res.json()) as { error: string }).error).toMatch(/damaged or truncated TIFF/);
    expect(fake.calls).toHaveLength(0); // refused from its header, before the queue
  });
});

describe('slow senders, from several addresses', () => {
  /** Keep `socket` sending one byte every 100 ms (10 B/s, below serve.minUploadRate). */
  const drip = (socket: net.Socket) => timers.push(setInterval(() => socket.writable && socket.write('x'), 100));

  it('an upload below serve.minUploadRate past the grace gives its slot to a newcomer from elsewhere', async () => {
    const { server } = await start({ maxUploads: 4, uploadGraceMs: 300 });
    const p = server.port;
    const slow = ['127.0.0.2', '127.0.0.3', '127.0.0.4', '127.0.0.5'].map((from) => {
      const c = connect(p, from);
      c.send(
        `POST /api/caption HTTP/1.1\r\nHost: 127.0.0.1:${p}\r\nContent-Type: image/png\r\nContent-Length: 100000\r\n\r\n`,
      );
      drip(c.socket);
      return c;
    });
    await until(() => server.stats().uploading === 4);
    // every slot is taken: 503 while the tricklers are in their grace, then one of them is cut
    const img = await solid(RED, 'png');
    const statuses: number[] = [];
    while (statuses.at(-1) !== 200) {
      const res = await fetch(`${server.url}/api/caption`, { method: 'POST', body: img });
      statuses.push(res.status);
      await res.text();
      if (res.status !== 200) await new Promise((r) => setTimeout(r, 50));
    }
    expect(new Set(statuses.slice(0, -1))).toEqual(statuses.length > 1 ? new Set([503]) : new Set());
    await until(() => slow.some((c) => c.answers().length > 0));
    const cut = slow.flatMap((c) => c.answers());
    expect(cut).toHaveLength(1);
    expect(cut[0].status).toBe(408);
    expect(errorOf(cut[0])).toMatch(
      /^the upload was cut: it averaged \d+ B\/s over [\d.]+ s, below serve\.minUploadRate \(1 KB\/s\)$/,
    );
  });

  it('an address at serve.maxConnectionsPerClient gets 429 for more, until one of its header tricklers can be cut', async () => {
    const { server } = await start({ maxConnectionsPerClient: 3, uploadGraceMs: 300 });
    const p = server.port;
    const tricklers = [0, 1, 2].map(() => {
      const c = connect(p, '127.0.0.2');
      c.send(`GET /api/health HTTP/1.1\r\nHost: 127.0.0.1:${p}\r\nX-Slow: `);
      drip(c.socket);
      return c;
    });
    await until(() => server.stats().connections === 3);
    // other addresses are not affected
    expect((await fetch(`${server.url}/api/health`)).status).toBe(200);
    // a fourth from the same address: refused (429, JSON) while the tricklers are in their grace; then
    // it takes the place of one of them, and is served
    let served = false;
    let refusals = 0;
    while (!served) {
      const c = connect(p, '127.0.0.2');
      c.send(get('/api/health', `127.0.0.1:${p}`));
      await until(() => c.answers().length > 0);
      const [a] = c.answers();
      if (a.status === 429) {
        refusals++;
        expect(errorOf(a)).toMatch(/too many connections from your address \(serve\.maxConnectionsPerClient: 3\)/);
        await new Promise((r) => setTimeout(r, 50));
      } else {
        expect(a.status).toBe(200);
        served = true;
      }
    }
    expect(refusals).toBeGreaterThanOrEqual(0);
    await until(() => tricklers.some((c) => c.answers().length > 0));
    const cut = tricklers.flatMap((c) => c.answers());
    expect(cut.map((a) => a.status)).toEqual([408]);
    expect(errorOf(cut[0])).toMatch(
      /^the request headers were cut: it averaged \d+ B\/s .* below serve\.minUploadRate .*serve\.maxConnectionsPerClient \(3\)/,
    );
  });
});
