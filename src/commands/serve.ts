// `captioner serve --model RUN`: the web page and JSON API for a trained model (see src/serve/).
// Thin: resolves the config and hands runServer a loader for the model (called once the port is bound,
// so a taken port fails at once); runServer returns after SIGTERM/SIGINT has drained the requests in
// flight (cli.ts then ends the process).
import type { Command } from 'commander';
import { intArg, resolveConfigForRun, withConfig, type ConfigFlags } from './common.js';

interface ServeFlags extends ConfigFlags {
  model: string;
  port?: number;
  host?: string;
  beam?: number;
}

export function register(program: Command): void {
  withConfig(program.command('serve').description('serve a web page and JSON API that caption uploaded images'))
    .requiredOption('-m, --model <run>', 'trained run folder (the output of `captioner train`)')
    .option('-p, --port <n>', 'listen port (serve.port, default 8080; 0: any free port)', intArg('--port'))
    .option('--host <addr>', 'listen address (serve.host, default 127.0.0.1: this machine only)')
    .option('-k, --beam <k>', 'default beam size for requests that do not ask (decode.beam)', intArg('--beam'))
    .addHelpText(
      'after',
      `\nExamples:\n  captioner serve --model work/demo/model                          # http://127.0.0.1:8080
  captioner serve --model work/demo/model --host 0.0.0.0 --port 9000
  curl -F image=@photo.jpg http://127.0.0.1:8080/api/caption`,
    )
    .action(async (opts: ServeFlags) => {
      // the run's own decode settings (its config.yaml) < --config < --set < flags, as caption and eval do
      const { config } = await resolveConfigForRun(
        opts,
        { serve: { port: opts.port, host: opts.host }, decode: { beam: opts.beam } },
        opts.model,
      );
      // stages are loaded on use: keeps --help fast, and the model code (TensorFlow.js) only after the port is bound
      const { runServer } = await import('../serve/run.js');
      // the model runs in a worker thread, so HTTP, health and signals never wait for it (src/serve/threaded-captioner.ts)
      const load = async () => (await import('../serve/threaded-captioner.js')).startModelWorker(opts.model, config);
      await runServer(load, config.serve, { title: config.name, defaultBeam: opts.beam });
    });
}
