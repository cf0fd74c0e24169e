// The JSON API over real HTTP on 127.0.0.1 (random port), with the fake colour captioner.
import { formatList, readableFormats } from '../../src/features/image.js';
import * as http from 'node:http';
import * as net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Captioner } from '../../src/caption/types.js';
import { createFakeCaptioner, type FakeCaptioner } from './fake.js';
import { startServer, type RunningServer } from '../../src/serve/server.js';
import { BLUE, GREEN, RED, serveConfig, solid } from './fixtures.js';

interface Answer {
  status: number;
  body: Record<string, unknown>;
  headers: Headers;
}

async function answer(res: Response): Promise<Answer> {
  const text = await res.text();
  let body: Record<string, unknown>;
  try {
    body = JSON.parse(text);
  } catch {
    throw new Error(`not JSON (status ${res.status}): ${text.slice(0, 200)}`);
  }
  return { status: res.status, body, headers: res.headers };
}

function postForm(url: string, fields: Record<string, Blob | string>): Promise<Answer> {
  const form = new FormData();
  for (const [k, v] of Object.entries(fields)) form.append(k, v as Blob);
  return fetch(url, { method: 'POST', body: form }).then(answer);
}

const pngBlob = (b: Buffer<ArrayBuffer>) => new Blob([b], { type: 'image/png' });

/** A raw request with node:http (for chunked uploads and hand-made bodies). */
function rawRequest(
  url: string,
  opts: { method?: string; headers?: Record<string, string>; chunks?: Buffer[] },
): Promise<{ status: number; body: Record<string, unknown> }> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method: opts.method ?? 'POST', headers: opts.headers }, (res) => {
      let text = '';
      res.on('data', (d) => (text += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: JSON.parse(text) }));
    });
    // The server may hang up while we are still sending a refused body: that is expected.
    req.on('error', (e: NodeJS.ErrnoException) =>
      e.code === 'EPIPE' || e.code === 'ECONNRESET' ? undefined : reject(e),
    );
    let i = 0;
    const chunks = opts.chunks ?? [];
    const write = () => {
      while (i < chunks.length) if (!req.write(chunks[i++])) return void req.once('drain', write);
      req.end();
    };
    write();
  });
}

describe('serve API', () => {
  let fake: FakeCaptioner;
  let server: RunningServer;
  let api: string;
  let red: Buffer<ArrayBuffer>;

  beforeAll(async () => {
    fake = createFakeCaptioner();
    // 20 parallel uploads from this one address below: above its default share of upload slots
    server = await startServer(fake, serveConfig({ maxUploadBytes: 256 * 1024, maxBeam: 6, maxUploadsPerClient: 32 }), {
      title: 'Test <run>',
    });
    api = `${server.url}/api/caption`;
    red = await solid(RED, 'png');
  });
  afterAll(() => server.close());

  it('listens on loopback and serves a self-contained page', async () => {
    expect(server.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    const res = await fetch(server.url + '/');
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/text\/html/);
    expect(res.headers.get('content-security-policy')).toContain("default-src 'none'");
    const html = await res.text();
    expect(html).toContain('name="viewport"');
    expect(html).toContain('Test &lt;run&gt;'); // the title is escaped
    expect(html).not.toMatch(/(src|href)=["']?(https?:)?\/\//); // no CDN, nothing remote
    expect(html).toContain('type="file"');
    const head = await fetch(server.url + '/', { method: 'HEAD' });
    expect(head.status).toBe(200);
    expect(await head.text()).toBe('');
  });

  it('reports health with the model name', async () => {
    const h = await answer(await fetch(server.url + '/api/health'));
    expect(h).toMatchObject({
      status: 200,
      body: { status: 'ok', model: 'fake-colours', encoder: 'sharp-stats', backend: 'cpu' },
    });
  });

  it('captions a PNG sent as multipart field "image"', async () => {
    const a = await postForm(api, { image: pngBlob(red) });
    expect(a.status).toBe(200);
    expect(a.body.caption).toBe('a red image');
    expect(typeof a.body.logprob).toBe('number');
    expect(typeof a.body.ms).toBe('number');
    expect(Object.keys(a.body).sort()).toEqual(['caption', 'logprob', 'ms']);
  });

  it('captions a JPEG sent as the raw body, whatever the content type says', async () => {
    const jpeg = await solid(BLUE, 'jpeg');
    expect(
      (await answer(await fetch(api, { method: 'POST', body: jpeg, headers: { 'content-type': 'image/jpeg' } }))).body
        .caption,
    ).toBe('a blue image');
    // curl --data-binary sends application/x-www-form-urlencoded: the bytes decide
    expect(
      (
        await answer(
          await fetch(api, {
            method: 'POST',
            body: jpeg,
            headers: { 'content-type': 'application/x-www-form-urlencoded' },
          }),
        )
      ).body.caption,
    ).toBe('a blue image');
  });

  it('passes the beam size from the query or the form, and validates it', async () => {
    fake.calls.length = 0;
    expect((await answer(await fetch(`${api}?beam=2`, { method: 'POST', body: red }))).status).toBe(200);
    expect((await postForm(api, { beam: '5', image: pngBlob(red) })).status).toBe(200);
    expect(fake.calls.map((c) => c.options.beam)).toEqual([2, 5]);
    for (const bad of ['0', '7', 'abc', '-1', '2.5']) {
      const a = await answer(await fetch(`${api}?beam=${bad}`, { method: 'POST', body: red }));
      expect(a.status, bad).toBe(400);
      expect(a.body.error).toMatch(/beam must be an integer from 1 to 6/);
    }
  });

  it('413 for uploads over maxUploadBytes, announced or streamed', async () => {
    const big = Buffer.concat([red, Buffer.alloc(300 * 1024)]);
    const a = await answer(await fetch(api, { method: 'POST', body: big, headers: { 'content-type': 'image/png' } }));
    expect(a.status).toBe(413);
    expect(a.body.error).toMatch(/larger than 256 KB/);
    // chunked: no Content-Length, so the server counts and stops reading at the limit
    const chunks = Array.from({ length: 64 }, () => Buffer.alloc(64 * 1024, 7));
    const b = await rawRequest(api, { headers: { 'content-type': 'image/png' }, chunks });
    expect(b.status).toBe(413);
    // and multipart, too
    expect((await postForm(api, { image: pngBlob(big) })).status).toBe(413);
    // Expect: 100-continue: refused before the client sends a byte of the body
    const early = await new Promise<{ status: number; continued: boolean }>((resolve, reject) => {
      let continued = false;
      const req = http.request(api, {
        method: 'POST',
        headers: { 'content-type': 'image/png', 'content-length': String(big.length), expect: '100-continue' },
      });
      req.on('continue', () => ((continued = true), req.end(big)));
      req.on('response', (res) => {
        res.resume();
        resolve({ status: res.statusCode ?? 0, continued });
        req.destroy();
      });
      req.on('error', reject);
      req.flushHeaders();
    });
    expect(early).toEqual({ status: 413, continued: false });
  });

  it('415 for files that are not images', async () => {
    const a = await postForm(api, { image: new Blob(['just some text, not a picture'], { type: 'image/png' }) });
    expect(a.status).toBe(415);
    expect(a.body.error).toMatch(/not an image/);
    // it lists what this build of sharp decodes, not a fixed list (BMP is not decodable here)
    expect(a.body.error).toContain(`(expected ${formatList(await readableFormats())})`);
    expect(a.body.error).not.toMatch(/BMP/);
    expect(
      (
        await answer(
          await fetch(api, { method: 'POST', body: '%PDF-1.4 hello', headers: { 'content-type': 'application/pdf' } }),
        )
      ).status,
    ).toBe(415);
  });

  it('422 for images that are broken', async () => {
    const broken = Buffer.concat([red.subarray(0, 40), Buffer.alloc(200, 0x55)]); // PNG signature, garbage after
    const a = await postForm(api, { image: pngBlob(broken) });
    expect(a.status).toBe(422);
    expect(a.body.error).toMatch(/could not be decoded/);
  });

  it('400 for malformed multipart and requests without an image', async () => {
    const cases: [Record<string, string>, Buffer<ArrayBuffer>][] = [
      [
        { 'content-type': 'multipart/form-data; boundary=XX' },
        Buffer.from('--XX\r\nContent-Disposition: form-data; name="image"\r\n\r\nnever closed'),
      ],
      [{ 'content-type': 'multipart/form-data; boundary=XX' }, Buffer.from('no boundary anywhere')],
      [{ 'content-type': 'multipart/form-data' }, Buffer.from('whatever')],
      [
        { 'content-type': 'multipart/form-data; boundary=XX' },
        Buffer.from('--XX\r\nContent-Disposition: form-data; name="other"\r\n\r\nx\r\n--XX--\r\n'),
      ],
      [{ 'content-type': 'image/png' }, Buffer.alloc(0)],
    ];
    for (const [headers, body] of cases) {
      const a = await answer(await fetch(api, { method: 'POST', body, headers }));
      expect(a.status, body.toString()).toBe(400);
      expect(typeof a.body.error).toBe('string');
    }
  });

  it('400 for a form with two "image" files, or an empty one, saying so', async () => {
    const form = new FormData();
    form.append('image', pngBlob(red), 'a.png');
    form.append('image', pngBlob(red), 'b.png');
    fake.calls.length = 0;
    const two = await answer(await fetch(api, { method: 'POST', body: form }));
    expect(two.status).toBe(400);
    expect(two.body.error).toMatch(/2 "image" fields; send one image per request/);
    const empty = await postForm(api, { image: new Blob([], { type: 'image/png' }) });
    expect(empty.status).toBe(400);
    expect(empty.body.error).toMatch(/the image file is empty/);
    expect(fake.calls).toHaveLength(0);
  });

  it('404 for unknown routes, 405 for wrong methods', async () => {
    const a = await answer(await fetch(server.url + '/nope'));
    expect(a.status).toBe(404);
    expect(a.body.error).toMatch(/no such page/);
    const b = await answer(await fetch(api));
    expect(b.status).toBe(405);
    expect(b.headers.get('allow')).toBe('POST');
    const c = await answer(await fetch(server.url + '/api/health', { method: 'DELETE' }));
    expect(c.status).toBe(405);
    const d = await answer(await fetch(server.url + '/nope', { method: 'POST', body: red }));
    expect(d.status).toBe(404);
  });

  it('400 for malformed HTTP, and keeps serving', async () => {
    const reply = await new Promise<string>((resolve, reject) => {
      const sock = net.connect(server.port, '127.0.0.1', () => sock.write('THIS IS NOT HTTP\r\n\r\n'));
      let text = '';
      sock.on('data', (d) => (text += d));
      sock.on('end', () => resolve(text));
      sock.on('error', reject);
    });
    expect(reply).toMatch(/^HTTP\/1\.1 400/);
    expect((await fetch(server.url + '/api/health')).status).toBe(200);
  });

  it('answers 20 parallel requests, batching them', async () => {
    const colours = [RED, BLUE, GREEN];
    const names = ['red', 'blue', 'green'];
    const images = await Promise.all(colours.map((c) => solid(c, 'png')));
    fake.calls.length = 0;
    const results = await Promise.all(
      Array.from({ length: 20 }, (_, i) => postForm(api, { image: pngBlob(images[i % 3]) })),
    );
    results.forEach((r, i) => {
      expect(r.status).toBe(200);
      expect(r.body.caption).toBe(`a ${names[i % 3]} image`);
    });
    const sizes = fake.calls.map((c) => c.ids.length);
    expect(sizes.reduce((a, b) => a + b, 0)).toBe(20);
    expect(Math.max(...sizes)).toBeGreaterThan(1); // requests shared captionBatch calls
    expect(Math.max(...sizes)).toBeLessThanOrEqual(8); // serve.maxBatch
  });
});

describe('serve under load and at the edges', () => {
  it('503 when the queue is full, then serves again', async () => {
    let open!: () => void;
    const fake = createFakeCaptioner({ gate: new Promise<void>((r) => (open = r)) });
    const server = await startServer(fake, serveConfig({ maxBatch: 2, queueSize: 3, batchWindowMs: 1 }));
    try {
      const img = await solid(RED, 'png');
      const api = `${server.url}/api/caption`;
      const send = () =>
        fetch(api, { method: 'POST', body: img, headers: { 'content-type': 'image/png' } }).then(answer);
      const first = send();
      await until(() => fake.calls.length === 1); // one batch is in the (blocked) model
      const waiting = [send(), send(), send()];
      await until(() => server.stats().waiting === 3);
      const refused = await send();
      expect(refused.status).toBe(503);
      expect(refused.headers.get('retry-after')).toBe('1');
      expect(refused.body.error).toMatch(/busy/);
      open();
      const done = await Promise.all([first, ...waiting]);
      expect(done.map((d) => d.status)).toEqual([200, 200, 200, 200]);
      expect((await send()).status).toBe(200);
    } finally {
      open();
      await server.close();
    }
  });

  it('says loading until the model is ready', async () => {
    let ready!: (c: Captioner) => void;
    const server = await startServer(new Promise<Captioner>((r) => (ready = r)), serveConfig());
    try {
      const h = await answer(await fetch(server.url + '/api/health'));
      expect(h).toMatchObject({ status: 503, body: { status: 'loading', model: null } });
      const img = await solid(GREEN, 'png');
      const c = await answer(await fetch(server.url + '/api/caption', { method: 'POST', body: img }));
      expect(c.status).toBe(503);
      expect(c.body.error).toMatch(/loading/);
      ready(createFakeCaptioner());
      await until(async () => (await fetch(server.url + '/api/health')).status === 200);
      expect((await answer(await fetch(server.url + '/api/caption', { method: 'POST', body: img }))).body.caption).toBe(
        'a green image',
      );
    } finally {
      await server.close();
    }
  });

  it('500 with a JSON error when the model throws, and keeps serving', async () => {
    const fake = createFakeCaptioner({ fail: true });
    const server = await startServer(fake, serveConfig());
    const stderr = muteStderr();
    try {
      const img = await solid(RED, 'png');
      const a = await answer(await fetch(server.url + '/api/caption', { method: 'POST', body: img }));
      expect(a.status).toBe(500);
      expect(a.body.error).toMatch(/internal error/);
      expect(stderr.text()).toContain('fake model failure');
      expect((await fetch(server.url + '/api/health')).status).toBe(200);
    } finally {
      stderr.restore();
      await server.close();
    }
  });

  it('close() drains: in-flight requests are answered, new connections refused', async () => {
    let open!: () => void;
    const fake = createFakeCaptioner({ gate: new Promise<void>((r) => (open = r)) });
    const server = await startServer(fake, serveConfig({ maxBatch: 2, batchWindowMs: 1 }));
    const img = await solid(BLUE, 'png');
    const inflight = Array.from({ length: 3 }, () =>
      fetch(server.url + '/api/caption', { method: 'POST', body: img }).then(answer),
    );
    await until(() => server.stats().admitted === 3 && fake.calls.length === 1);
    let closed = false;
    const closing = server.close().then(() => (closed = true));
    await new Promise((r) => setTimeout(r, 20));
    expect(closed).toBe(false); // still waiting for the three
    expect(server.stats().draining).toBe(true);
    await expect(fetch(server.url + '/api/health')).rejects.toThrow(); // listener is gone
    open();
    const done = await Promise.all(inflight);
    expect(done.map((d) => [d.status, d.body.caption])).toEqual(Array(3).fill([200, 'a blue image']));
    await closing;
    expect(closed).toBe(true);
    expect(fake.calls.flatMap((c) => c.ids)).toHaveLength(3);
  });

  it('drops a waiting request when its client goes away', async () => {
    let open!: () => void;
    const fake = createFakeCaptioner({ gate: new Promise<void>((r) => (open = r)) });
    const server = await startServer(fake, serveConfig({ maxBatch: 1, batchWindowMs: 0 }));
    try {
      const img = await solid(RED, 'png');
      const first = fetch(server.url + '/api/caption', { method: 'POST', body: img }).then(answer);
      await until(() => fake.calls.length === 1);
      const ctl = new AbortController();
      const gone = fetch(server.url + '/api/caption', { method: 'POST', body: img, signal: ctl.signal }).catch(
        () => 'aborted',
      );
      await until(() => server.stats().waiting === 1);
      ctl.abort();
      expect(await gone).toBe('aborted');
      await until(() => server.stats().waiting === 0 && server.stats().admitted === 1);
      open();
      expect((await first).status).toBe(200);
      expect(fake.calls).toHaveLength(1); // the abandoned image was never captioned
    } finally {
      open();
      await server.close();
    }
  });
});

/** Poll until `cond` holds (no timing assertions: vitest's timeout is the only limit). */
async function until(cond: () => boolean | Promise<boolean>): Promise<void> {
  while (!(await cond())) await new Promise((r) => setTimeout(r, 2));
}

function muteStderr() {
  const orig = process.stderr.write.bind(process.stderr);
  let text = '';
  process.stderr.write = ((chunk: string | Uint8Array) => {
    text += String(chunk);
    return true;
  }) as typeof process.stderr.write;
  return { text: () => text, restore: () => void (process.stderr.write = orig) };
}
