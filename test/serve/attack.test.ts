// The server against a patient attacker on another address (127.0.0.2, bound with the socket's
// localAddress), while a normal client on 127.0.0.1 uses it:
//  - 64 connections that trickle one byte a second (half of them upload bodies, half request headers),
//    reconnecting whenever the server hangs up on them: the normal client's photos are all captioned;
//  - 40 large-pixel PNGs (each within serve.maxPixels) queued by one address, then a photo from another:
//    the photo goes into the batch after the one in progress, ahead of the other client's queue.
// Nothing here asserts how fast anything is: the model is stepped batch by batch by the test, and the
// only time bound (the 20 s per upload) is far beyond any limit the server is configured with.
import * as http from 'node:http';
import * as net from 'node:net';
import sharp from 'sharp';
import { afterEach, describe, expect, it } from 'vitest';
import { createFakeCaptioner } from './fake.js';
import { startServer, type RunningServer } from '../../src/serve/server.js';
import { serveConfig } from './fixtures.js';

process.env.CAPTIONER_QUIET = '1';

const ATTACKER = '127.0.0.2';
const servers: RunningServer[] = [];
const cleanups: (() => void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0)) c();
  for (const s of servers.splice(0)) await s.close({ timeoutMs: 200 });
});

/** A photo-like JPEG (noise, so it is not tiny): about 100 KB. */
function photo(seed: number): Promise<Buffer<ArrayBuffer>> {
  return sharp({
    create: {
      width: 480,
      height: 360,
      channels: 3,
      background: '#000000',
      noise: { type: 'gaussian', mean: 100 + seed * 10, sigma: 40 },
    },
  })
    .jpeg({ quality: 80 })
    .toBuffer()
    .then((b) => Buffer.from(b));
}

/** Poll until `cond` holds (vitest's timeout is the only limit). */
async function until(cond: () => boolean | Promise<boolean>): Promise<void> {
  while (!(await cond())) await new Promise((r) => setTimeout(r, 5));
}

/**
 * `count` connections from `from`, each sending a request's start and then one byte per tick (1 s); one
 * the server closes is opened again on the next tick, as a patient attacker would. Half trickle an
 * upload's body (100 KB announced), half the request headers themselves.
 */
function trickle(port: number, count: number, from: string) {
  const slots: (net.Socket | null)[] = new Array(count).fill(null);
  const stats = { opened: 0, connected: 0, closedByServer: 0, statuses: new Map<string, number>() };
  const open = (i: number) => {
    const socket = net.connect({ port, host: '127.0.0.1', localAddress: from });
    stats.opened++;
    slots[i] = socket;
    socket.on('error', () => {});
    let text = '';
    socket.on('data', (d) => (text += d));
    socket.once('connect', () => {
      stats.connected++;
      socket.write(
        i % 2 === 0
          ? `POST /api/caption HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nContent-Type: image/jpeg\r\nContent-Length: 100000\r\n\r\n0`
          : `POST /api/caption HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nX-Slow: `,
      );
    });
    socket.once('close', () => {
      if (slots[i] === socket) slots[i] = null;
      if (!stopped) stats.closedByServer++;
      const status = /^HTTP\/1\.1 (\d+)/.exec(text)?.[1] ?? 'none';
      stats.statuses.set(status, (stats.statuses.get(status) ?? 0) + 1);
    });
  };
  let stopped = false;
  for (let i = 0; i < count; i++) open(i);
  const timer = setInterval(() => {
    for (let i = 0; i < count; i++) {
      const s = slots[i];
      if (!s) open(i);
      else if (s.writable && !s.connecting) s.write('x');
    }
  }, 1000);
  const stop = () => {
    stopped = true;
    clearInterval(timer);
    for (const s of slots) s?.destroy();
  };
  cleanups.push(stop);
  return { stats, stop };
}

/** POST raw image bytes from a given source address (node:http, so the socket can be bound). */
function postFrom(
  port: number,
  from: string,
  body: Buffer,
  id: string,
): Promise<{ id: string; status: number; body: Record<string, unknown> }> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        host: '127.0.0.1',
        port,
        localAddress: from,
        method: 'POST',
        path: '/api/caption',
        agent: false,
        headers: { 'content-type': 'image/png', 'content-length': body.length },
      },
      (res) => {
        let text = '';
        res.on('data', (d) => (text += d));
        res.on('end', () => resolve({ id, status: res.statusCode ?? 0, body: JSON.parse(text) }));
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

describe('a patient attacker', () => {
  it('64 connections trickling 1 byte/s from one address do not keep a normal client from uploading', async () => {
    // short limits: a trickler is evictable after 1 s (below 1 KB/s), headers must arrive within 10 s
    const cfg = serveConfig({ uploadGraceMs: 1000, headersTimeoutMs: 10_000, requestTimeoutMs: 15_000 });
    const server = await startServer(createFakeCaptioner(), cfg);
    servers.push(server);
    const photos = await Promise.all([1, 2, 3, 4, 5].map(photo));

    const attack = trickle(server.port, 64, ATTACKER);
    // the attack is in place: every connection was opened, and tricklers hold upload slots
    await until(
      () =>
        attack.stats.connected >= 64 && server.stats().uploading >= Math.min(cfg.maxUploadsPerClient, cfg.maxUploads),
    );
    await until(() => attack.stats.opened > 64); // a second round: refused connections came back

    // a normal client uploads five photos, one after another: every one is captioned
    const bound = 20_000; // the bound; no limit of ours comes near it
    const answers: { status: number; ms: number }[] = [];
    for (const p of photos) {
      const t0 = performance.now();
      const res = await fetch(`${server.url}/api/caption`, {
        method: 'POST',
        body: p,
        headers: { 'content-type': 'image/jpeg' },
      });
      answers.push({ status: res.status, ms: performance.now() - t0 });
      await res.text();
    }
    expect(answers.map((a) => a.status)).toEqual([200, 200, 200, 200, 200]);
    for (const a of answers) expect(a.ms).toBeLessThan(bound);
    // the attacker got no more than its share: its uploads are capped per address, its connections too
    expect(server.stats().uploading).toBeLessThanOrEqual(cfg.maxUploadsPerClient);
    expect(attack.stats.statuses.get('429')).toBeGreaterThan(0);
    attack.stop();
  });

  it('40 large-pixel PNGs from one address do not hold up a photo from another', async () => {
    // the model is stepped: each batch waits until the test lets it go (or runs at once once `free`)
    const mine = await photo(3);
    const batches: string[][] = [];
    const gates: (() => void)[] = [];
    let free = false;
    const fake = createFakeCaptioner({
      beforeBatch: (inputs) => {
        batches.push(inputs.map((i) => (i.bytes.length === mine.length ? 'photo' : 'png')));
        return free ? Promise.resolve() : new Promise<void>((r) => gates.push(r));
      },
    });
    // each queued image holds its connection open until answered: allow the attacker 40 of them
    const cfg = serveConfig({
      maxPixels: 2_000_000,
      maxBatch: 4,
      batchWindowMs: 0,
      queueSize: 64,
      maxConnectionsPerClient: 64,
    });
    const server = await startServer(fake, cfg);
    servers.push(server);
    cleanups.push(() => ((free = true), gates.splice(0).forEach((g) => g())));
    // 1000 x 2000: exactly the pixel limit, in few bytes (one colour)
    const png = Buffer.from(
      await sharp({ create: { width: 1000, height: 2000, channels: 3, background: '#336699' } })
        .png()
        .toBuffer(),
    );
    const over = Buffer.from(
      await sharp({ create: { width: 1001, height: 2000, channels: 3, background: '#336699' } })
        .png()
        .toBuffer(),
    );

    // one pixel too many: refused from the header, before the queue
    const refused = await postFrom(server.port, ATTACKER, over, 'over');
    expect(refused.status).toBe(413);
    expect(refused.body.error).toMatch(/serve\.maxPixels/);
    expect(batches).toHaveLength(0);

    // the attacker uploads 40, as many at once as it may (serve.maxUploadsPerClient): each upload is
    // over once its image is queued, and then the next starts
    const bombs: Promise<{ id: string; status: number }>[] = [];
    let sent = 0;
    const sender = async () => {
      while (sent < 40) {
        const target = ++sent;
        let answered = false;
        const p = postFrom(server.port, ATTACKER, png, `png-${target}`);
        p.then(
          () => (answered = true),
          () => (answered = true),
        );
        bombs.push(p);
        await until(() => server.stats().admitted >= target || answered);
      }
    };
    await Promise.all(Array.from({ length: Math.min(4, cfg.maxUploadsPerClient) }, sender));
    // all received, and all queued (past their checks) but the first batch, which is being captioned
    await until(() => server.stats().admitted === 40 && server.stats().waiting === 40 - batches[0].length);
    expect(batches).toHaveLength(1);

    // now the photo, from 127.0.0.1
    const answer = fetch(`${server.url}/api/caption`, {
      method: 'POST',
      body: mine,
      headers: { 'content-type': 'image/jpeg' },
    });
    await until(() => server.stats().waiting === 41 - batches[0].length);
    // step the model until the photo's batch starts: it is the one right after the batch in progress
    while (!batches.some((b) => b.includes('photo'))) {
      const n = batches.length;
      gates.shift()!();
      await until(() => batches.length > n);
    }
    const photoBatch = batches.findIndex((b) => b.includes('photo'));
    const pngsBefore = batches.slice(0, photoBatch).flat().length;
    expect(photoBatch).toBe(1);
    expect(pngsBefore).toBeLessThanOrEqual(cfg.maxBatch);
    // let everything finish: all 41 are captioned
    free = true;
    gates.splice(0).forEach((g) => g());
    expect((await answer).status).toBe(200);
    expect((await Promise.all(bombs)).map((b) => b.status)).toEqual(Array(40).fill(200));
  });
});
