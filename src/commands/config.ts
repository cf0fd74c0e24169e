// `captioner config`: print the resolved config (defaults < YAML < --set) as YAML or JSON, or with
// --init FILE write a commented config with every setting at its default (src/config/template.ts).
import type { Command } from 'commander';
import { existsSync, statSync } from 'node:fs';
import YAML from 'yaml';
import { UsageError } from '../errors.js';
import { log } from '../log.js';
import { resolveConfig, withConfig, type ConfigFlags } from './common.js';
import { writeOut } from '../util/stdout.js';

export function register(program: Command): void {
  withConfig(
    program
      .command('config')
      .description('print the resolved config (defaults < YAML < --set), or write a commented one with --init'),
  )
    .option('--json', 'print JSON instead of YAML')
    .option(
      '--init <file>',
      "write a commented config with every setting at its default, its $schema line pointing at this installation's JSON Schema (- prints it)",
    )
    .option('--force', 'with --init: replace an existing file')
    .addHelpText(
      'after',
      `
Examples:
  captioner config --config configs/flickr8k.yaml --set train.epochs=5   # what a run will use
  captioner config --init my-experiment.yaml                              # a commented starting point
  captioner config --config my-experiment.yaml --json | jq .decode`,
    )
    .action(async (opts: ConfigFlags & { json?: boolean; init?: string; force?: boolean }) => {
      if (opts.init === '-') {
        // `-` is stdout, as for other Unix tools; $schema is absolute, since where the text goes is unknown
        const { configTemplate, installedSchemaPath } = await import('../config/template.js');
        await writeOut(configTemplate(installedSchemaPath()));
        return;
      }
      if (opts.init) {
        if (existsSync(opts.init) && !opts.force)
          throw new UsageError(`${opts.init} already exists; choose another name or add --force to replace it`);
        // --force replaces a file; never a device, a pipe or a folder (the rename would put a file in its place)
        if (existsSync(opts.init) && !statSync(opts.init).isFile())
          throw new UsageError(
            `${opts.init}: is not a regular file; --init writes a new config file (use --init - to print it)`,
          );
        const { configTemplate, schemaRefFor } = await import('../config/template.js');
        const { writeFileAtomic } = await import('../util/fsx.js');
        await writeFileAtomic(opts.init, configTemplate(schemaRefFor(opts.init)));
        log.info(`wrote ${opts.init}: every setting at its default, with its description; edit what you need`);
        return;
      }
      const { config } = await resolveConfig(opts);
      await writeOut(opts.json ? JSON.stringify(config, null, 2) + '\n' : YAML.stringify(config));
    });
}
