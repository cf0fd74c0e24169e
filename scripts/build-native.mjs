#!/usr/bin/env node
// Install step: build the optional native addon (native/: OpenBLAS matrix products on the wasm heap) with
// the node-gyp that npm ships. It never fails the install: without a C compiler, Python or Node's headers
// captioner runs on the wasm kernels alone, and this prints one line saying so and how to get the addon.
// CAPTIONER_NATIVE=0 skips the build. Output goes to stderr only when something is worth saying.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const dir = path.join(root, 'native');

function nodeGyp() {
  const candidates = [
    process.env.npm_config_node_gyp,
    path.join(path.dirname(process.execPath), '..', 'lib', 'node_modules', 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'),
  ];
  return candidates.find((f) => f && existsSync(f));
}

function main() {
  if (process.env.CAPTIONER_NATIVE === '0') return;
  if (!existsSync(path.join(dir, 'binding.gyp'))) return;
  const gyp = nodeGyp();
  const skip = (why) => process.stderr.write(`captioner: native BLAS addon not built (${why}); training and decoding run on the wasm kernels alone. To build it later: install a C compiler, make and python3, then \`npm rebuild captioner\`.\n`);
  if (!gyp) return skip("npm's node-gyp not found");
  const args = [gyp, 'rebuild', '--release'];
  const nodedir = process.env.npm_config_nodedir;
  if (nodedir) args.push(`--nodedir=${nodedir}`);
  const r = spawnSync(process.execPath, args, { cwd: dir, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  if (r.status === 0 && existsSync(path.join(dir, 'build', 'Release', 'captioner_native.node'))) return;
  const lines = `${r.stdout ?? ''}\n${r.stderr ?? ''}`.split('\n').filter((l) => /error|not found|not ok/i.test(l) && !/^gyp info/.test(l));
  skip(lines.slice(0, 2).join(' / ').trim() || (r.error ? r.error.message : `node-gyp exited with ${r.status}`));
}

main();
