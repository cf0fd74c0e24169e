// The life of `captioner serve`: listen at once (health says 'loading'), wait for the model, announce the
// URL, serve until SIGTERM/SIGINT, drain in-flight requests, dispose the model, return. A second signal
// while draining cuts the remaining connections. The signal source is a parameter so tests can play it.
import type { EventEmitter } from 'node:events';
import type { Captioner } from '../caption/types.js';
import type { ServeConfig } from '../config/schema.js';
import { log } from '../log.js';
import { startServer, type RunningServer, type ServerOptions } from './server.js';

export interface RunOptions extends ServerOptions {
  /** Where signals come from (default: process). */
  signals?: EventEmitter;
  /** Which signals stop the server. */
  signalNames?: string[];
  /** Called once the server listens and the model is ready (tests use it to find the URL). */
  onReady?: (server: RunningServer) => void;
  /** How long draining may take before connections are cut, in ms. */
  drainTimeoutMs?: number;
}

/** Serve until a stop signal; resolves after draining. Rejects (after closing) when the model fails to load. */
export async function runServer(loading: Promise<Captioner>, cfg: ServeConfig, opts: RunOptions = {}): Promise<void> {
  const emitter = opts.signals ?? process;
  const names = opts.signalNames ?? ['SIGTERM', 'SIGINT'];
  // Listen for signals from the start, so a Ctrl-C while the model loads also stops cleanly.
  let server: RunningServer | null = null;
  let signalCount = 0;
  let stop!: (sig: string) => void;
  const stopped = new Promise<string>((resolve) => (stop = resolve));
  const onSignal = (sig: string) => {
    if (++signalCount > 1 && server) {
      log.warn(`serve: ${sig} again: cutting the remaining connections`);
      server.destroy();
    } else stop(sig);
  };
  const handlers = names.map((n) => [n, () => onSignal(n)] as const);
  for (const [n, h] of handlers) emitter.on(n, h);

  try {
    server = await startServer(loading, cfg, opts);
    if (!['127.0.0.1', '::1', 'localhost'].includes(cfg.host)) {
      log.warn(`serve: listening on ${cfg.host}, not only loopback: other machines can reach this server`);
    }
    log.info(`serve: listening on ${server.url} (loading the model...)`);
    let first: { captioner: Captioner } | { sig: string };
    try {
      first = await Promise.race([loading.then((captioner) => ({ captioner })), stopped.then((sig) => ({ sig }))]);
    } catch (e) {
      await server.close({ timeoutMs: 1000 });
      throw e;
    }
    if ('sig' in first) {
      log.info(`serve: ${first.sig} while loading the model: stopping`);
      await server.close({ timeoutMs: 1000 });
      loading.then((c) => c.dispose()).catch(() => {});
      return;
    }
    const { captioner } = first;
    log.info(`serve: model ${captioner.info.name} ready (encoder ${captioner.info.encoder}, backend ${captioner.info.backend}): open ${server.url}`);
    opts.onReady?.(server);
    const sig = await stopped;
    log.info(`serve: ${sig}: finishing ${server.stats().admitted} request(s) in flight, then stopping`);
    await server.close({ timeoutMs: opts.drainTimeoutMs ?? 30_000 });
    await captioner.dispose();
    log.info('serve: stopped');
  } finally {
    for (const [n, h] of handlers) emitter.off(n, h);
  }
}
