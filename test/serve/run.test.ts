// The serve lifecycle: signals, drain, dispose.
import { EventEmitter } from 'node:events';
import { describe, expect, it } from 'vitest';
import type { Captioner } from '../../src/caption/types.js';
import { ModelError } from '../../src/errors.js';
import { createFakeCaptioner } from '../../src/serve/fake.js';
import { runServer } from '../../src/serve/run.js';
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
      void runServer(Promise.resolve(fake), serveConfig(), { signals, onReady: (s) => ((server = s), r()) }).then(() => (stopped = true));
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
    const done = runServer(never, serveConfig(), { signals });
    await new Promise((r) => setTimeout(r, 20));
    signals.emit('SIGINT');
    await expect(done).resolves.toBeUndefined();
  });

  it('closes and rethrows when the model fails to load', async () => {
    const signals = new EventEmitter();
    await expect(runServer(Promise.reject(new ModelError('no such run: x')), serveConfig(), { signals })).rejects.toThrow('no such run: x');
    expect(signals.listenerCount('SIGTERM')).toBe(0);
  });
});
