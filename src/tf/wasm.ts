// Loading the tfjs wasm backend in Node: point it at the .wasm binaries inside
// node_modules/@tensorflow/tfjs-backend-wasm/dist (a file path; Node reads it with fs), pick the
// best build that works, and install our kernel overrides (./kernels/index.ts).
//
// What works in Node 20 (measured, tfjs 4.22): the SIMD build (2.5x faster matmul than the plain
// build) is chosen automatically when WebAssembly SIMD validates. The multi-threaded SIMD build
// does NOT work in Node: tfjs turns it off there (WASM_HAS_MULTITHREAD_SUPPORT is false under
// IS_NODE) and forcing it fails with ERR_WORKER_PATH (its pthread workers are blob: URLs, which
// Node's Worker refuses). Working around that (pthread worker scripts written to temp files,
// bundler globals supplied) makes it load, but it still reports 1 thread and runs no faster.
// So wasm runs on one thread; setThreadsCount has no effect.
import { createRequire } from 'node:module';
import path from 'node:path';
import { tf } from './tf.js';
import { registerWasmKernels } from './kernels/index.js';

const require = createRequire(import.meta.url);

export interface WasmInfo {
  version: string;
  simd: boolean;
  threads: number;
  multiThreadSupported: boolean;
  /** Folder the .wasm binaries were loaded from. */
  dir: string;
}

let wasmModule: typeof import('@tensorflow/tfjs-backend-wasm') | undefined;
let pathsSet = false;

/** Folder holding tfjs-backend-wasm's .wasm binaries (with a trailing separator). */
export function wasmBinaryDir(): string {
  const pkg = require.resolve('@tensorflow/tfjs-backend-wasm/package.json');
  return path.join(path.dirname(pkg), 'dist') + path.sep;
}

/** Import the wasm backend module (registers the 'wasm' backend factory) and set its paths. */
export async function loadWasmModule(): Promise<typeof import('@tensorflow/tfjs-backend-wasm')> {
  if (!wasmModule) {
    const mod = await import('@tensorflow/tfjs-backend-wasm');
    wasmModule = ((mod as { default?: unknown }).default ?? mod) as typeof import('@tensorflow/tfjs-backend-wasm');
  }
  if (!pathsSet) {
    wasmModule.setWasmPaths(wasmBinaryDir());
    pathsSet = true;
  }
  return wasmModule;
}

/**
 * Start and select the wasm backend with our kernel fixes. `threads` is passed to
 * setThreadsCount for the day the threaded build works in Node; today it runs single-threaded.
 */
export async function prepareWasm(threads = 0): Promise<WasmInfo> {
  const mod = await loadWasmModule();
  registerWasmKernels();
  if (threads > 0) mod.setThreadsCount(threads);
  const ok = await tf.setBackend('wasm');
  if (!ok) throw new Error('the wasm backend failed to initialise (see the message above)');
  const simd = Boolean(await tf.env().getAsync('WASM_HAS_SIMD_SUPPORT'));
  const multi = Boolean(await tf.env().getAsync('WASM_HAS_MULTITHREAD_SUPPORT'));
  return {
    version: mod.version_wasm,
    simd,
    threads: mod.getThreadsCount(),
    multiThreadSupported: multi,
    dir: wasmBinaryDir(),
  };
}
