// `captioner doctor`: what can run here (src/doctor/report.ts). Readable text on stdout, or JSON with --json.
import type { Command } from 'commander';
import { resolveConfig, withConfig, type ConfigFlags } from './common.js';
import { writeOut } from '../util/stdout.js';

export function register(program: Command): void {
  withConfig(
    program
      .command('doctor')
      .description('show which compute backends and encoder runtimes work here, and why others do not'),
  )
    .option('--json', 'print JSON instead of text')
    .addHelpText(
      'after',
      `\nExamples:\n  captioner doctor
  captioner doctor --json`,
    )
    .action(async (opts: ConfigFlags & { json?: boolean }) => {
      const { config } = await resolveConfig(opts);
      const { doctor, formatReport } = await import('../doctor/report.js');
      const report = await doctor(config.backend);
      await writeOut(opts.json ? JSON.stringify(report, null, 2) + '\n' : formatReport(report));
    });
}
