// The server under abuse, with a raw-socket client on 127.0.0.1: stalled uploads (slowloris), request
// timeouts, clients that leave while their request waits, Host checks. Every loop here is bounded and
// every socket is closed in `finally`; the only clock is vitest's test timeout.
import * as http from 'node:http';
import * as net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { createFakeCaptioner } from './fake.js';
import { allowedHosts, hostAllowed, serverUrls, startServer, type RunningServer } from '../../src/serve/server.js';
import { RED, serveConfig, solid } from './fixtures.js';

process.env.CAPTIONER_QUIET = '1';

const sockets: net.Socket[] = [];
const servers: RunningServer[] = [];
afterEach(async () => {
  for (const s of sockets.splice(0)) s.destroy();
  for (const s of servers.splice(0)) await s.close({ timeoutMs: 200 });
});

/** A raw client: connects to 127.0.0.1, writes `data`, collects what comes back (`received()` so far, `reply` once the server closes). */
function rawClient(
  port: number,
  data: Buffer | string,
): { socket: net.Socket; received: () => string; reply: Promise<string> } {
  const socket = net.connect(port, '127.0.0.1');
  sockets.push(socket);
  socket.on('error', () => {});
  socket.write(data);
  let text = '';
  socket.on('data', (d) => (text += d));
  const reply = new Promise<string>((resolve) => socket.on('close', () => resolve(text)));
  return { socket, received: () => text, reply };
}

/** Headers announcing a 100 KB upload, and the first 10 bytes of it: then nothing more (a stalled upload). */
const stalledUpload = (port: number) =>
  rawClient(
    port,
    `POST /api/caption HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nContent-Type: image/png\r\nContent-Length: 100000\r\n\r\n0123456789`,
  );

/** A whole caption request as raw bytes. */
const captionRequest = (port: number, img: Buffer) =>
  Buffer.concat([
    Buffer.from(
      `POST /api/caption HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nContent-Type: image/png\r\nContent-Length: ${img.length}\r\n\r\n`,
    ),
    img,
  ]);

async function until(cond: () => boolean | Promise<boolean>, tries = 5000): Promise<void> {
  for (let i = 0; i < tries && !(await cond()); i++) await new Promise((r) => setTimeout(r, 2));
  expect(await cond()).toBe(true);
}

async function start(...args: Parameters<typeof serveConfig>) {
  const fake = createFakeCaptioner();
  const server = await startServer(fake, serveConfig(...args));
  servers.push(server);
  return { fake, server };
}

describe('stalled uploads (slowloris)', () => {
  it('do not count against the queue; concurrent uploads are bounded apart, and captioning goes on', async () => {
    // 3 upload slots, a queue of 1: before the fix, 2 stalled uploads (queue + batch) refused everyone
    // (uploadStallMs: never, here: a stalled upload keeps its slot until it times out)
    const { server } = await start({ maxUploads: 3, queueSize: 1, maxBatch: 1, uploadStallMs: 600_000 });
    const img = await solid(RED, 'png');
    const api = `${server.url}/api/caption`;
    const stalled = [stalledUpload(server.port), stalledUpload(server.port)];
    await until(() => server.stats().uploading === 2);
    expect(server.stats().admitted).toBe(0);
    // a third, whole upload still gets its caption
    const ok = await fetch(api, { method: 'POST', body: img });
    expect(ok.status).toBe(200);
    expect((await ok.json()).caption).toBe('a red image');
    // with all three slots stalled, a new upload is refused at once, and health says how full it is
    stalled.push(stalledUpload(server.port));
    await until(() => server.stats().uploading === 3);
    const refused = await fetch(api, { method: 'POST', body: img });
    expect(refused.status).toBe(503);
    expect(refused.headers.get('retry-after')).toBe('1');
    expect((await refused.json()).error).toMatch(/too many uploads/);
    const health = await (await fetch(server.url + '/api/health')).json();
    expect(health).toMatchObject({ status: 'ok', load: { uploading: 3, maxUploads: 3, waiting: 0, queueSize: 1 } });
    // one stalled client gives up: its slot is free again
    stalled[0].socket.destroy();
    await until(() => server.stats().uploading === 2);
    expect((await fetch(api, { method: 'POST', body: img })).status).toBe(200);
  });

  it('give their slot to a new upload when all slots are taken (serve.uploadStallMs)', async () => {
    const { server } = await start({ maxUploads: 2, uploadStallMs: 50 });
    const img = await solid(RED, 'png');
    const stalled = [stalledUpload(server.port), stalledUpload(server.port)];
    await until(() => server.stats().uploading === 2);
    // once a stalled upload has had nothing for 50 ms, a new upload takes its slot (bounded retries)
    let status = 0;
    for (let i = 0; i < 500 && status !== 200; i++) {
      status = (await fetch(`${server.url}/api/caption`, { method: 'POST', body: img })).status;
      if (status !== 200) {
        expect(status).toBe(503);
        await new Promise((r) => setTimeout(r, 10));
      }
    }
    expect(status).toBe(200);
    // one stalled client was told why (and will be hung up on); the other still holds its slot
    await until(() => stalled.some((s) => s.received().includes('serve.uploadStallMs')));
    expect(stalled.filter((s) => /^HTTP\/1\.1 408 /.test(s.received()))).toHaveLength(1);
    expect(server.stats().uploading).toBe(1);
  });

  it("are answered 408 and cut when serve.requestTimeoutMs passes, without waiting for node's 30 s check", async () => {
    // node checks request timeouts every connectionsCheckingInterval (30 s by default): this test would
    // then run into vitest's 5 s timeout. The server checks every requestTimeoutMs / 10.
    const { server } = await start({ requestTimeoutMs: 300 });
    const { reply } = stalledUpload(server.port);
    await until(() => server.stats().uploading === 1);
    const text = await reply; // the server closes the connection
    expect(text).toMatch(/^HTTP\/1\.1 408 /);
    expect(text).toContain('serve.requestTimeoutMs');
    await until(() => server.stats().uploading === 0);
    expect((await fetch(server.url + '/api/health')).status).toBe(200);
  });
});

describe('clients that leave', () => {
  it('a request whose connection closes while it waits is dropped from the queue, pipelined ones too', async () => {
    let open!: () => void;
    const fake = createFakeCaptioner({ gate: new Promise<void>((r) => (open = r)) });
    const server = await startServer(fake, serveConfig({ maxBatch: 1, batchWindowMs: 0 }));
    servers.push(server);
    try {
      const img = await solid(RED, 'png');
      const first = fetch(server.url + '/api/caption', { method: 'POST', body: img });
      await until(() => fake.calls.length === 1); // the model is busy (held) with the first
      // a client sends one request and half-closes; another pipelines two requests and vanishes
      const a = rawClient(server.port, captionRequest(server.port, img));
      await until(() => server.stats().waiting === 1);
      a.socket.end();
      const b = rawClient(
        server.port,
        Buffer.concat([captionRequest(server.port, img), captionRequest(server.port, img)]),
      );
      await until(() => server.stats().waiting === 2);
      b.socket.destroy();
      await until(() => server.stats().waiting === 0 && server.stats().admitted === 1);
      open();
      expect((await first).status).toBe(200);
      await until(() => server.stats().admitted === 0);
      expect(fake.calls).toHaveLength(1); // none of the abandoned images was captioned
    } finally {
      open();
    }
  });
});

describe('Host check (DNS rebinding)', () => {
  const get = (port: number, host: string | undefined, path = '/api/health') =>
    new Promise<{ status: number; body: string }>((resolve, reject) => {
      const headers: Record<string, string> = host === undefined ? {} : { host };
      const req = http.request({ host: '127.0.0.1', port, path, headers, setHost: host !== undefined }, (res) => {
        let body = '';
        res.on('data', (d) => (body += d));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      });
      req.on('error', reject);
      req.end();
    });

  it('answers only to its own names, unless configured', async () => {
    const { server } = await start({ allowedHosts: ['captioner.lan'] });
    const p = server.port;
    for (const host of [
      `127.0.0.1:${p}`,
      `localhost:${p}`,
      'LOCALHOST',
      `[::1]:${p}`,
      `captioner.lan:${p}`,
      'localhost.',
    ]) {
      expect((await get(p, host)).status, host).toBe(200);
    }
    for (const host of [
      `evil.example:${p}`,
      'attacker.example',
      `127.0.0.1.evil.example:${p}`,
      `localhost.evil.example`,
    ]) {
      const a = await get(p, host);
      expect(a.status, host).toBe(403);
      expect(JSON.parse(a.body).error).toMatch(/serve\.allowedHosts/);
      expect((await get(p, host, '/')).status, `${host} /`).toBe(403);
    }
  });

  it('on 0.0.0.0 also answers to this machine\'s addresses and name; "*" answers to any', () => {
    const ifaces = [{ address: '127.0.0.1' }, { address: '192.168.1.20' }, { address: 'fe80::1' }];
    const wild = allowedHosts('0.0.0.0', '0.0.0.0', [], ifaces, 'Studio-PC');
    for (const h of ['192.168.1.20:8080', '[fe80::1]:8080', 'studio-pc:8080', 'localhost'])
      expect(hostAllowed(h, wild), h).toBe(true);
    expect(hostAllowed('rebind.example:8080', wild)).toBe(false);
    const local = allowedHosts('127.0.0.1', '127.0.0.1', [], ifaces, 'studio-pc');
    expect(hostAllowed('192.168.1.20:8080', local)).toBe(false);
    expect(hostAllowed('studio-pc', local)).toBe(false);
    expect(hostAllowed('anything.example', allowedHosts('127.0.0.1', '127.0.0.1', ['*'], ifaces, 'x'))).toBe(true);
  });
});

describe('the URL to open', () => {
  const ifaces = [
    { address: '127.0.0.1', family: 'IPv4', internal: true },
    { address: '192.168.1.20', family: 'IPv4', internal: false },
    { address: '::1', family: 'IPv6', internal: true },
    { address: '2001:db8::5', family: 'IPv6', internal: false },
    { address: 'fe80::1', family: 'IPv6', internal: false },
  ];
  it('is loopback, not 0.0.0.0 or ::, with the network addresses beside it', () => {
    expect(serverUrls({ address: '0.0.0.0', family: 'IPv4', port: 8080 }, ifaces)).toEqual({
      url: 'http://127.0.0.1:8080',
      networkUrls: ['http://192.168.1.20:8080'],
    });
    expect(serverUrls({ address: '::', family: 'IPv6', port: 8080 }, ifaces)).toEqual({
      url: 'http://[::1]:8080',
      networkUrls: ['http://192.168.1.20:8080', 'http://[2001:db8::5]:8080'],
    });
    expect(serverUrls({ address: '127.0.0.1', family: 'IPv4', port: 9000 }, ifaces)).toEqual({
      url: 'http://127.0.0.1:9000',
      networkUrls: [],
    });
  });
});
