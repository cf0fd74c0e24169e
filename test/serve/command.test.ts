// The `serve` command wiring (flags, config, model loading errors). It imports the real model loader, so
// with a run folder that does not exist it must fail with a ModelError (exit 4). (run.test.ts checks that
// runServer closes the server when loading fails.) A taken port is found before the model is loaded.
import { Command } from 'commander';
import * as net from 'node:net';
import { describe, expect, it } from 'vitest';
import { register } from '../../src/commands/serve.js';
import { ModelError } from '../../src/errors.js';
import { runCli } from '../helpers/cli.js';

process.env.CAPTIONER_QUIET = '1';

describe('serve command', () => {
  it('parses its flags and reports a missing run as a ModelError', async () => {
    const program = new Command('captioner').exitOverride();
    register(program);
    const serve = program.commands.find((c) => c.name() === 'serve');
    expect(serve?.options.map((o) => o.long)).toEqual(
      expect.arrayContaining(['--model', '--port', '--host', '--beam', '--config', '--set']),
    );
    await expect(
      program.parseAsync(['node', 'captioner', 'serve', '--model', 'runs/none', '--port', '0']),
    ).rejects.toBeInstanceOf(ModelError);
  });
});

describe('captioner serve (the built CLI)', () => {
  it('says the port is taken and exits 2, without loading the model', async () => {
    const other = net.createServer();
    await new Promise<void>((r) => other.listen(0, '127.0.0.1', r));
    const port = (other.address() as net.AddressInfo).port;
    try {
      // the run folder does not exist: had the model been loaded first, this would be exit 4
      const r = await runCli(['serve', '--model', 'runs/does-not-exist', '--port', String(port)]);
      expect(r.stderr).toMatch(
        new RegExp(`error: cannot listen on 127\\.0\\.0\\.1:${port}: port ${port} is already in use`),
      );
      expect(r.stderr).not.toMatch(/internal error|\n\s+at /);
      expect(r.code).toBe(2);
    } finally {
      other.close();
    }
  });
});
