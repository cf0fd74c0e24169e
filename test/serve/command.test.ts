// The `serve` command wiring (flags, config, model loading errors). It imports the real model loader, so
// with a run folder that does not exist it must fail with a ModelError (exit 4). (run.test.ts checks that
// runServer closes the server when loading fails.)
import { Command } from 'commander';
import { describe, expect, it } from 'vitest';
import { register } from '../../src/commands/serve.js';
import { ModelError } from '../../src/errors.js';

process.env.CAPTIONER_QUIET = '1';

describe('serve command', () => {
  it('parses its flags and reports a missing run as a ModelError', async () => {
    const program = new Command('captioner').exitOverride();
    register(program);
    const serve = program.commands.find((c) => c.name() === 'serve');
    expect(serve?.options.map((o) => o.long)).toEqual(expect.arrayContaining(['--model', '--port', '--host', '--beam', '--config', '--set']));
    await expect(program.parseAsync(['node', 'captioner', 'serve', '--model', 'runs/none', '--port', '0'])).rejects.toBeInstanceOf(ModelError);
  });
});
