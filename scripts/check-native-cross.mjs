#!/usr/bin/env node
// CI check that the native addon still compiles where its x86-64 extras do not exist: compiles every
// source of native/binding.gyp with that target's own cflags, with -Werror, for another architecture
// (default: Debian's aarch64 cross compiler, `apt-get install gcc-aarch64-linux-gnu libc6-dev-arm64-cross`),
// against the running Node's headers (or npm_config_nodedir), and links the objects into a shared object
// as node-gyp would. Compile-only: nothing runs on the other architecture.
//   node scripts/check-native-cross.mjs [compiler]      exit 0: compiles; 1: it does not; 2: cannot check
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { nodeHeaders } from './build-native.mjs';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const native = path.join(root, 'native');
const cc = process.argv[2] ?? 'aarch64-linux-gnu-gcc';

function fail(code, message) {
  process.stderr.write(`check-native-cross: ${message}\n`);
  process.exit(code);
}

if (spawnSync(cc, ['--version'], { stdio: 'ignore' }).status !== 0) {
  fail(2, `${cc} not found (Debian: apt-get install gcc-aarch64-linux-gnu libc6-dev-arm64-cross)`);
}
const headers = nodeHeaders();
if (!headers) fail(2, 'no Node headers: set npm_config_nodedir to a folder with include/node/node_api.h');
const include = path.join(headers.nodedir, 'include', 'node');

// binding.gyp is a Python literal: drop its comment lines and read it as JSON
const gyp = JSON.parse(
  readFileSync(path.join(native, 'binding.gyp'), 'utf8')
    .split('\n')
    .filter((l) => !/^\s*#/.test(l))
    .join('\n'),
);
const out = mkdtempSync(path.join(os.tmpdir(), 'captioner-cross-'));
try {
  const objects = [];
  for (const target of gyp.targets) {
    for (const source of target.sources) {
      const object = path.join(out, `${path.basename(source, '.c')}.o`);
      const args = [
        ...(target.cflags ?? []),
        '-Werror',
        '-Wno-unused-parameter',
        '-fPIC',
        `-I${include}`,
        '-c',
        path.join(native, source),
        '-o',
        object,
      ];
      const r = spawnSync(cc, args, { encoding: 'utf8' });
      if (r.status !== 0) fail(1, `${cc} ${args.join(' ')}\n${r.stderr}${r.stdout}`);
      objects.push(object);
    }
  }
  const link = ['-shared', '-o', path.join(out, 'captioner_native.node'), ...objects, '-ldl', '-lm'];
  const r = spawnSync(cc, link, { encoding: 'utf8' });
  if (r.status !== 0) fail(1, `${cc} ${link.join(' ')}\n${r.stderr}${r.stdout}`);
  const machine = spawnSync(cc, ['-dumpmachine'], { encoding: 'utf8' }).stdout.trim();
  process.stdout.write(
    `check-native-cross: native/ compiles and links for ${machine} (${objects.length} sources, Node headers from ${headers.from})\n`,
  );
} finally {
  rmSync(out, { recursive: true, force: true });
}
