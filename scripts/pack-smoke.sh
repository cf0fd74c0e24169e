#!/usr/bin/env bash
# Packs captioner, installs the tarball into a fresh global prefix (dependencies from npm's cache where it
# has them, else the registry; nothing is downloaded at run time),
# checks that README.md and every page of docs/ are in it, then, from an unrelated folder, runs
# `captioner --help`, imports the library by name, and runs
# `captioner demo --quick`. What a user gets from `npm install -g ./captioner-*.tgz` must start and work.
set -euo pipefail
cd "$(dirname "$0")/.."
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
npm pack --pack-destination "$scratch" >/dev/null
tarball=$(ls "$scratch"/captioner-*.tgz)
echo "pack-smoke: $(basename "$tarball"), $(du -k "$tarball" | cut -f1) KiB"
listing=$(tar -tzf "$tarball")
if grep -E '^package/(src|test|bench|bench-dist|dist/bench)/' <<<"$listing"; then
  echo "pack-smoke: the tarball ships sources, tests or benchmarks" >&2
  exit 1
fi
# README.md links into docs/: both ship, so a reader of the installed package can follow the links offline
for f in README.md $(git ls-files docs); do
  if ! grep -qxF "package/$f" <<<"$listing"; then
    echo "pack-smoke: the tarball lacks $f" >&2
    exit 1
  fi
done
prefix="$scratch/prefix"
# onnxruntime-node's install step is skipped as .npmrc does (its CPU binaries ship in the package)
npm_config_onnxruntime_node_install=skip npm install -g --prefer-offline --prefix "$prefix" --no-audit --no-fund "$tarball" >/dev/null
# where a compiler is there, the packed sources must have built the native addon (with the running Node's
# own headers: nothing is downloaded)
if command -v cc >/dev/null && command -v make >/dev/null && command -v python3 >/dev/null; then
  test -f "$prefix/lib/node_modules/captioner/native/build/Release/captioner_native.node" || { echo "pack-smoke: the install did not build the native addon" >&2; exit 1; }
  echo "pack-smoke: native addon built at install"
fi
export PATH="$prefix/bin:$PATH"
work="$scratch/elsewhere"
mkdir -p "$work"
cd "$work"
captioner --help | head -3
node --input-type=module -e "
import { createRequire } from 'node:module';
const require = createRequire('$prefix/lib/node_modules/');
const api = await import(require.resolve('captioner'));
for (const f of ['loadCaptioner', 'prepare', 'extractFeatures', 'train', 'evaluate', 'score', 'config']) if (typeof api[f] !== 'function') throw new Error('captioner exports no ' + f);
console.log('pack-smoke: library exports', Object.keys(api).length, 'names');
"
captioner demo --quick --out demo >demo.txt
tail -3 demo.txt
test -f demo/model/manifest.json
echo "pack-smoke: ok"
