// The serve lifecycle: signals, drain, dispose.
import { EventEmitter } from 'node:events';
import * as net from 'node:net';
import { describe, expect, it } from 'vitest';
import type { Captioner } from '../../src/caption/types.js';
import { ConfigError, ModelError } from '../../src/errors.js';
import { createFakeCaptioner } from './fake.js';
import { ConnectionsCutError, runServer } from '../../src/serve/run.js';
import type { RunningServer } from '../../src/serve/server.js';
import { BLUE, serveConfig, solid } from './fixtures.js';

process.env.CAPTIONER_QUIET = '1';

describe('runServer', () => {
  it('serves until SIGTERM, drains the request in flight, disposes the model', async () => {
    let open!: () => void;
    const fake = createFakeCaptioner({ gate: new Promise<void>((r) => (open = r)) });
    const signals = new EventEmitter();
    let server!: RunningServer;
    let stopped = false;
    const ready = new Promise<void>((r) => {
      void runServer(async () => fake, serveConfig(), { signals, onReady: (s) => ((server = s), r()) }).then(
        () => (stopped = true),
      );
    });
    await ready;
    const img = await solid(BLUE, 'png');
    const inflight = fetch(server.url + '/api/caption', { method: 'POST', body: img }).then((r) => r.json());
    while (fake.calls.length === 0) await new Promise((r) => setTimeout(r, 2));
    signals.emit('SIGTERM');
    await new Promise((r) => setTimeout(r, 20));
    expect(stopped).toBe(false); // still draining
    expect(fake.disposed).toBe(false);
    open();
    expect(await inflight).toMatchObject({ caption: 'a blue image' });
    while (!stopped) await new Promise((r) => setTimeout(r, 2));
    expect(fake.disposed).toBe(true);
    expect(signals.listenerCount('SIGTERM') + signals.listenerCount('SIGINT')).toBe(0);
  });

  it('stops on SIGINT while the model is still loading', async () => {
    const signals = new EventEmitter();
    const never = new Promise<Captioner>(() => {});
    const done = runServer(() => never, serveConfig(), { signals });
    await new Promise((r) => setTimeout(r, 20));
    signals.emit('SIGINT');
    await expect(done).resolves.toBeUndefined();
  });

  it('closes and rethrows when the model fails to load', async () => {
    const signals = new EventEmitter();
    await expect(
      runServer(() => Promise.reject(new ModelError('no such run: x')), serveConfig(), { signals }),
    ).rejects.toThrow('no such run: x');
    expect(signals.listenerCount('SIGTERM')).toBe(0);
  });

  it('a stalled upload holds shutdown only for serve.drainTimeoutMs, and the cut makes it fail (exit 1)', async () => {
    const fake = createFakeCaptioner();
    const signals = new EventEmitter();
    let server!: RunningServer;
    let outcome!: Promise<unknown>;
    const ready = new Promise<void>((r) => {
      const done = runServer(async () => fake, serveConfig({ drainTimeoutMs: 200 }), {
        signals,
        onReady: (s) => ((server = s), r()),
      });
      outcome = done.then(
        () => 'resolved',
        (e: unknown) => e,
      );
    });
    await ready;
    const sock = net.connect(server.port, '127.0.0.1');
    try {
      sock.on('error', () => {});
      sock.write(`POST /api/caption HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5000\r\n\r\nonly a few bytes`);
      for (let i = 0; i < 5000 && server.stats().uploading === 0; i++) await new Promise((r) => setTimeout(r, 2));
      expect(server.stats().uploading).toBe(1);
      signals.emit('SIGTERM');
      const e = await outcome;
      expect(e).toBeInstanceOf(ConnectionsCutError);
      expect((e as ConnectionsCutError).exitCode).toBe(1);
      expect((e as ConnectionsCutError).cut).toBe(1);
      expect(fake.disposed).toBe(true);
    } finally {
      sock.destroy();
    }
  });

  it('a clean drain cuts nothing: idle keep-alive connections do not count', async () => {
    const signals = new EventEmitter();
    let server!: RunningServer;
    let done!: Promise<void>;
    await new Promise<void>(
      (r) =>
        (done = runServer(async () => createFakeCaptioner(), serveConfig({ drainTimeoutMs: 200 }), {
          signals,
          onReady: (s) => ((server = s), r()),
        })),
    );
    expect((await fetch(server.url + '/api/health')).status).toBe(200); // leaves a keep-alive connection open
    signals.emit('SIGTERM');
    await expect(done).resolves.toBeUndefined();
  });

  it('a port in use fails at once with a ConfigError (exit 2), before loading the model', async () => {
    const other = net.createServer();
    await new Promise<void>((r) => other.listen(0, '127.0.0.1', r));
    const port = (other.address() as net.AddressInfo).port;
    let loads = 0;
    try {
      const e = await runServer(async () => (loads++, createFakeCaptioner()), serveConfig({ port }), {
        signals: new EventEmitter(),
      }).catch((x: unknown) => x);
      expect(e).toBeInstanceOf(ConfigError);
      expect((e as ConfigError).exitCode).toBe(2);
      expect((e as Error).message).toMatch(new RegExp(`port ${port} is already in use.*--port`));
      expect(loads).toBe(0);
    } finally {
      other.close();
    }
  });
});
