// The `captioner` command line: wires subcommands and turns errors into exit codes.
// Only this file decides how the process ends; stages throw typed errors (see errors.ts).
import { Command, CommanderError } from 'commander';
import { createRequire } from 'node:module';
import { CaptionerError, EXIT_BROKEN_PIPE, ExitCode, OutputClosed } from './errors.js';
import { log } from './log.js';
import * as demoCmd from './commands/demo.js';
import * as demoDataCmd from './commands/demo-data.js';
import * as prepCmd from './commands/prep.js';
import * as featuresCmd from './commands/features.js';
import * as trainCmd from './commands/train.js';
import * as evalCmd from './commands/eval.js';
import * as captionCmd from './commands/caption.js';
import * as serveCmd from './commands/serve.js';
import * as scoreCmd from './commands/score.js';
import * as weightsCmd from './commands/weights.js';
import * as encoderCmd from './commands/encoder.js';
import * as doctorCmd from './commands/doctor.js';
import * as configCmd from './commands/config.js';

const require = createRequire(import.meta.url);
const pkg = require('../package.json') as { version: string };

/** Each subcommand module exports `register(program)`, listed in pipeline order (as --help shows them).
 * Add a module here only when it really works. */
const commands: { register(program: Command): void }[] = [
  demoCmd, demoDataCmd, prepCmd, featuresCmd, trainCmd, evalCmd, captionCmd, serveCmd, scoreCmd, weightsCmd, encoderCmd, doctorCmd, configCmd,
];

export function buildProgram(): Command {
  const program = new Command('captioner')
    .description('Train and run image-captioning models: prep, features, train, eval, caption, serve.')
    .version(pkg.version)
    .showHelpAfterError('(run with --help for usage)')
    .exitOverride()
    .configureOutput({ writeErr: (s) => process.stderr.write(s) });
  for (const c of commands) c.register(program);
  for (const sub of program.commands) sub.exitOverride();
  return program;
}

let watchingStdout = false;
let stdoutClosed = false;

/** Run the CLI and return the exit code (never calls process.exit while work may be pending). */
export async function main(argv: string[]): Promise<number> {
  const program = buildProgram();
  // A reader that closes stdout early (`| head -1`) is normal for a Unix tool: no stack trace, the
  // command's own writes stop, and the exit code says so (141, as for SIGPIPE) unless another error came first.
  stdoutClosed = false;
  if (!watchingStdout) {
    watchingStdout = true;
    process.stdout.on('error', (e: NodeJS.ErrnoException) => {
      if (e.code === 'EPIPE' || e.code === 'ERR_STREAM_DESTROYED') stdoutClosed = true;
      else log.error(`cannot write to stdout: ${e.code ?? e.message}`);
    });
  }
  try {
    await program.parseAsync(argv);
    await new Promise<void>((r) => setImmediate(r)); // let an EPIPE of the last write arrive
    if (stdoutClosed) return EXIT_BROKEN_PIPE;
    return typeof process.exitCode === 'number' ? process.exitCode : ExitCode.ok;
  } catch (e) {
    if (stdoutClosed && !(e instanceof CaptionerError)) return EXIT_BROKEN_PIPE; // a write error of the closed pipe
    return exitCodeFor(e);
  }
}

export function exitCodeFor(e: unknown): number {
  if (e instanceof CommanderError) {
    // help and version "errors" are successes; everything else commander raises is a usage error
    if (e.code === 'commander.helpDisplayed' || e.code === 'commander.version' || e.code === 'commander.help') return ExitCode.ok;
    return e.exitCode === 0 ? ExitCode.ok : ExitCode.usage;
  }
  if (e instanceof OutputClosed) return e.exitCode; // quiet: the reader went away on purpose
  if (e instanceof CaptionerError) {
    log.error(e.message);
    return e.exitCode;
  }
  const err = e as Error;
  log.error(`internal error: ${err?.message ?? String(e)}`);
  if (err?.stack) process.stderr.write(err.stack + '\n');
  return ExitCode.internal;
}
