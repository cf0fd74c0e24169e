// The `captioner` command line: wires subcommands and turns errors into exit codes.
// Only this file decides how the process ends; stages throw typed errors (see errors.ts).
import { Command, CommanderError } from 'commander';
import { createRequire } from 'node:module';
import { CaptionerError, EXIT_BROKEN_PIPE, ExitCode, OutputClosed } from './errors.js';
import { isClosedReader, resetStreamError, stdoutError, streamErrorSeen, watchStream } from './util/stdout.js';
import { disableOrtTelemetry } from './features/onnx/runtime.js';
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
  demoCmd,
  demoDataCmd,
  prepCmd,
  featuresCmd,
  trainCmd,
  evalCmd,
  captionCmd,
  serveCmd,
  scoreCmd,
  weightsCmd,
  encoderCmd,
  doctorCmd,
  configCmd,
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

/** Run the CLI and return the exit code (never calls process.exit while work may be pending). */
export async function main(argv: string[]): Promise<number> {
  disableOrtTelemetry(); // before any worker thread or child process: they inherit the real environment
  const program = buildProgram();
  // stdout is checked to the end (src/util/stdout.ts): commands await every write of their data, and any
  // failure they did not see themselves (commander's --help, say) is caught here. A reader that closes
  // stdout early (`| head -1`) is normal for a Unix tool: no message, exit 141 (as for SIGPIPE) unless
  // another error came first. Any other failed write (a full disk) is one error line and exit 3, never 0.
  resetStreamError(process.stdout);
  watchStream(process.stdout);
  let code: number;
  try {
    await program.parseAsync(argv);
    await new Promise<void>((r) => setImmediate(r)); // let an error of the last write arrive
    code = typeof process.exitCode === 'number' ? process.exitCode : ExitCode.ok;
  } catch (e) {
    await new Promise<void>((r) => setImmediate(r)); // --help and --version end here: their output is data too
    const seen = streamErrorSeen(process.stdout);
    if (seen && !(e instanceof CaptionerError)) return stdoutExit(seen); // the stdout failure caused this one
    return exitCodeFor(e);
  }
  const seen = streamErrorSeen(process.stdout);
  return seen && code === ExitCode.ok ? stdoutExit(seen) : code;
}

/** The exit for a stdout failure the command did not report: 141 quietly for a closed reader, else one line and 3. */
function stdoutExit(e: NodeJS.ErrnoException): number {
  if (isClosedReader(e)) return EXIT_BROKEN_PIPE;
  return exitCodeFor(stdoutError(e));
}

export function exitCodeFor(e: unknown): number {
  if (e instanceof CommanderError) {
    // help and version "errors" are successes; everything else commander raises is a usage error
    if (e.code === 'commander.helpDisplayed' || e.code === 'commander.version' || e.code === 'commander.help')
      return ExitCode.ok;
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
