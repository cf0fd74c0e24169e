// `captioner config`: print the resolved config (defaults < YAML < --set) as YAML or JSON.
import type { Command } from 'commander';
import YAML from 'yaml';
import { resolveConfig, withConfig, type ConfigFlags } from './common.js';

export function register(program: Command): void {
  withConfig(program.command('config').description('print the resolved config (defaults < YAML < --set)'))
    .option('--json', 'print JSON instead of YAML')
    .action(async (opts: ConfigFlags & { json?: boolean }) => {
      const { config } = await resolveConfig(opts);
      process.stdout.write(opts.json ? JSON.stringify(config, null, 2) + '\n' : YAML.stringify(config));
    });
}
