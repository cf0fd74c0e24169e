// Typed errors and their exit codes. Stages throw these; only src/cli.ts turns them into an exit.

export const ExitCode = {
  ok: 0,
  internal: 1,
  usage: 2,
  config: 2,
  data: 3,
  model: 4,
} as const;

/** Base class for every error a user can cause and fix. Printed without a stack trace. */
export class CaptionerError extends Error {
  readonly exitCode: number;
  constructor(message: string, exitCode: number) {
    super(message);
    this.name = new.target.name;
    this.exitCode = exitCode;
  }
}

/** Bad command line: unknown flag, wrong argument. Exit 2. */
export class UsageError extends CaptionerError {
  constructor(message: string) {
    super(message, ExitCode.usage);
  }
}

/** Invalid or missing config file or value. Exit 2. */
export class ConfigError extends CaptionerError {
  constructor(message: string) {
    super(message, ExitCode.config);
  }
}

/** Bad or missing input data (captions, images, caches). Exit 3. */
export class DataError extends CaptionerError {
  constructor(message: string) {
    super(message, ExitCode.data);
  }
}

/** A file that could not be written (full disk, read-only, ...): a DataError that keeps the file and the reason. */
export class WriteError extends DataError {
  constructor(
    readonly file: string,
    readonly reason: string,
  ) {
    super(`${file}: cannot write: ${reason}`);
  }
}

/** Missing, corrupt or mismatched model or weights. Exit 4. */
export class ModelError extends CaptionerError {
  constructor(message: string) {
    super(message, ExitCode.model);
  }
}

/** Signals that some items of a batch job failed (already reported per item); exit 3. */
export class PartialFailure extends CaptionerError {
  constructor(message: string) {
    super(message, ExitCode.data);
  }
}

/** Exit code of a process whose stdout reader went away (128 + SIGPIPE), as Unix tools report it. */
export const EXIT_BROKEN_PIPE = 141;

/** stdout was closed by its reader (`| head -1`): the run stops quietly; what was written stays valid. */
export class OutputClosed extends CaptionerError {
  constructor() {
    super('stdout was closed by its reader', EXIT_BROKEN_PIPE);
  }
}
