#!/usr/bin/env node
// Install step: build the optional native addon (native/: OpenBLAS matrix products on the wasm heap) with
// the node-gyp that npm ships. It never fails the install: without a C compiler, Python or Node's headers
// captioner runs on the wasm kernels alone, and this prints one line saying so and how to get the addon.
// CAPTIONER_NATIVE=0 skips the build. Output goes to stderr only when something is worth saying.
//
// Node's headers: node-gyp downloads them from nodejs.org unless told where they are, which fails offline
// (a registry mirror is not enough). So, unless npm_config_nodedir names them, the running Node's own are
// used where its installation has them (<prefix>/include/node, prefix = the folder above the node binary:
// Debian's and NodeSource's packages, the official tarballs, nvm); elsewhere node-gyp downloads as before.
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, realpathSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const dir = path.join(root, 'native');

/**
 * The --nodedir to give node-gyp, and where it came from; undefined: none (node-gyp downloads the headers).
 * npm_config_nodedir wins; else the running Node's installation prefix when it holds the headers of this
 * very version (include/node/node_api.h, node.h, common.gypi and a node_version.h that says `version`).
 */
export function nodeHeaders({ env = process.env, execPath = process.execPath, version = process.versions.node } = {}) {
  if (env.npm_config_nodedir) return { nodedir: env.npm_config_nodedir, from: 'npm_config_nodedir' };
  const prefix = path.resolve(path.dirname(execPath), '..');
  const include = path.join(prefix, 'include', 'node');
  if (!['node_api.h', 'node.h', 'common.gypi', 'node_version.h'].every((f) => existsSync(path.join(include, f))))
    return undefined;
  let text;
  try {
    text = readFileSync(path.join(include, 'node_version.h'), 'utf8');
  } catch {
    return undefined;
  }
  const num = (name) => new RegExp(`^\\s*#define\\s+NODE_${name}_VERSION\\s+(\\d+)`, 'm').exec(text)?.[1];
  const headers = `${num('MAJOR')}.${num('MINOR')}.${num('PATCH')}`;
  if (headers !== version) return undefined; // another Node's headers: let node-gyp fetch the right ones
  return { nodedir: prefix, from: `the running Node's headers (${include})` };
}

function nodeGyp() {
  const candidates = [
    process.env.npm_config_node_gyp,
    path.join(
      path.dirname(process.execPath),
      '..',
      'lib',
      'node_modules',
      'npm',
      'node_modules',
      'node-gyp',
      'bin',
      'node-gyp.js',
    ),
  ];
  return candidates.find((f) => f && existsSync(f));
}

function main() {
  if (process.env.CAPTIONER_NATIVE === '0') return;
  if (!existsSync(path.join(dir, 'binding.gyp'))) return;
  const gyp = nodeGyp();
  const skip = (why) =>
    process.stderr.write(
      `captioner: native BLAS addon not built (${why}); training and decoding run on the wasm kernels alone. To build it later: install a C compiler, make and python3, then \`npm rebuild captioner\`.\n`,
    );
  if (!gyp) return skip("npm's node-gyp not found");
  const args = [gyp, 'rebuild', '--release'];
  const headers = nodeHeaders();
  if (headers) args.push(`--nodedir=${headers.nodedir}`);
  const r = spawnSync(process.execPath, args, { cwd: dir, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  if (r.status === 0 && existsSync(path.join(dir, 'build', 'Release', 'captioner_native.node'))) return;
  const lines = `${r.stdout ?? ''}\n${r.stderr ?? ''}`
    .split('\n')
    .filter((l) => /error|not found|not ok/i.test(l) && !/^gyp info/.test(l));
  const where = headers
    ? `; Node's headers from ${headers.from}`
    : '; no Node headers here, so node-gyp downloads them (offline: set npm_config_nodedir)';
  skip(
    (lines.slice(0, 2).join(' / ').trim() || (r.error ? r.error.message : `node-gyp exited with ${r.status}`)) + where,
  );
}

function isMain() {
  try {
    return realpathSync(process.argv[1] ?? '') === realpathSync(fileURLToPath(import.meta.url));
  } catch {
    return false;
  }
}

if (isMain()) main();
