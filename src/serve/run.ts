// The life of `captioner serve`: listen first (a taken port fails at once, before any model work), then
// load the model (health says 'loading' meanwhile), announce a URL a person can open, serve until
// SIGTERM/SIGINT, drain the requests in flight for at most serve.drainTimeoutMs, dispose the model,
// return. A second signal while draining cuts the remaining connections. Connections cut with a request
// in progress make runServer reject (exit status 1), so a supervisor sees that requests were lost.
// The signal source is a parameter so tests can play it.
import type { EventEmitter } from 'node:events';
import type { Captioner } from '../caption/types.js';
import type { ServeConfig } from '../config/schema.js';
import { CaptionerError, ExitCode } from '../errors.js';
import { log } from '../log.js';
import { startServer, type RunningServer, type ServerOptions } from './server.js';

export interface RunOptions extends ServerOptions {
  /** Where signals come from (default: process). */
  signals?: EventEmitter;
  /** Which signals stop the server. */
  signalNames?: string[];
  /** Called once the server listens and the model is ready (tests use it to find the URL). */
  onReady?: (server: RunningServer) => void;
}

/** Rejection of runServer when draining had to cut connections with requests in progress. */
export class ConnectionsCutError extends CaptionerError {
  constructor(readonly cut: number) {
    super(
      `serve: stopped, but ${cut} connection(s) with a request in progress were cut (serve.drainTimeoutMs or a second signal)`,
      ExitCode.internal,
    );
  }
}

/**
 * Serve until a stop signal; resolves after draining. `load` is called once the port is bound. Rejects
 * (after closing) when listening fails (ConfigError for a taken port), when the model fails to load,
 * or with ConnectionsCutError when draining cut requests in progress.
 */
export async function runServer(
  load: () => Promise<Captioner>,
  cfg: ServeConfig,
  opts: RunOptions = {},
): Promise<void> {
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

  let settle!: { resolve: (c: Captioner) => void; reject: (e: unknown) => void };
  const loading = new Promise<Captioner>((resolve, reject) => (settle = { resolve, reject }));
  loading.catch(() => {}); // handled below; the server only reads its outcome
  try {
    server = await startServer(loading, cfg, opts);
    if (!['127.0.0.1', '::1', 'localhost'].includes(cfg.host)) {
      log.warn(`serve: listening on ${cfg.host}, not only loopback: other machines can reach this server`);
    }
    log.info(`serve: listening on ${server.url} (loading the model...)`);
    try {
      load().then(settle.resolve, settle.reject);
    } catch (e) {
      settle.reject(e);
    }
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
    const others = server.networkUrls.length ? ` (from other machines: ${server.networkUrls.join(', ')})` : '';
    log.info(
      `serve: model ${captioner.info.name} ready (encoder ${captioner.info.encoder}, backend ${captioner.info.backend}): open ${server.url}${others}`,
    );
    opts.onReady?.(server);
    const sig = await stopped;
    log.info(
      `serve: ${sig}: finishing ${server.stats().uploading + server.stats().admitted} request(s) in flight (at most ${cfg.drainTimeoutMs / 1000} s), then stopping`,
    );
    const { cut } = await server.close();
    await captioner.dispose();
    if (cut > 0) throw new ConnectionsCutError(cut);
    log.info('serve: stopped');
  } finally {
    for (const [n, h] of handlers) emitter.off(n, h);
  }
}
