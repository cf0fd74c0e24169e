// Choosing and starting the TensorFlow.js compute backend, and reporting which ones can run here.
// `initBackend('auto')` tries, in order: tfjs-node-gpu (module loads AND an NVIDIA GPU is present),
// tfjs-node (native libtensorflow on the CPU), wasm (SIMD, with our kernel fixes), cpu (plain JS).
// tfjs-node and tfjs-node-gpu are optional dependencies, loaded with a dynamic import; when they
// cannot load we record why (module not installed, libcudart missing, ...).
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { ConfigError } from '../errors.js';
import { log } from '../log.js';
import { tf } from './tf.js';
import { loadWasmModule, prepareWasm, type WasmInfo } from './wasm.js';
import { addonStatus } from './addon.js';

const require = createRequire(import.meta.url);

export type BackendRequest = 'auto' | 'gpu' | 'node' | 'wasm' | 'cpu';

export interface BackendInfo {
  /** The tfjs backend name: 'tensorflow' (tfjs-node or tfjs-node-gpu), 'wasm' or 'cpu'. */
  name: string;
  device: 'gpu' | 'cpu';
  /** One human line: package, version and configuration. */
  detail: string;
}

export interface BackendProbe {
  /** What `backend` config value selects it. */
  request: Exclude<BackendRequest, 'auto'>;
  /** Package or runtime: tfjs-node-gpu, tfjs-node, wasm, cpu. */
  package: string;
  /** tfjs backend name it registers. */
  backend: 'tensorflow' | 'wasm' | 'cpu';
  available: boolean;
  version?: string;
  /** Extra facts when available (SIMD, threads, GPU name). */
  detail?: string;
  /** Why it is not available. */
  reason?: string;
}

export interface InitOptions {
  /** Threads for wasm (0: all cores). The wasm build usable in Node is single-threaded. */
  threads?: number;
  /** Do not log the chosen backend. */
  quiet?: boolean;
}

const NODE_GPU = '@tensorflow/tfjs-node-gpu';
const NODE_CPU = '@tensorflow/tfjs-node';
const CUDA_HINT = 'needs CUDA 11.2 and cuDNN 8.1';

const cache = new Map<BackendRequest, BackendInfo>();

/**
 * Select and start a backend. Idempotent: a repeated request returns the same answer (and
 * re-selects that backend if something switched away from it). Explicit requests that cannot
 * be met throw ConfigError saying why; `auto` falls back down the list.
 */
export async function initBackend(name: BackendRequest, opts: InitOptions = {}): Promise<BackendInfo> {
  const cached = cache.get(name);
  if (cached) {
    if (tf.getBackend() !== cached.name) await tf.setBackend(cached.name);
    return cached;
  }
  let info: BackendInfo;
  const skipped: string[] = [];
  switch (name) {
    case 'gpu':
      info = await startNode('gpu');
      break;
    case 'node':
      info = await startNode('node');
      break;
    case 'wasm':
      info = await startWasm(opts.threads ?? 0);
      break;
    case 'cpu':
      info = await startCpu();
      break;
    case 'auto':
      info = await startAuto(opts.threads ?? 0, skipped);
      break;
    default:
      throw new ConfigError(`backend: expected one of auto, gpu, node, wasm, cpu, got ${JSON.stringify(name)}`);
  }
  cache.set(name, info);
  if (!opts.quiet) {
    const why = skipped.length ? ` (skipped ${skipped.join('; ')}; see \`captioner doctor\`)` : '';
    log.info(`backend: ${info.detail}${why}`);
  }
  return info;
}

async function startAuto(threads: number, skipped: string[]): Promise<BackendInfo> {
  for (const kind of ['gpu', 'node'] as const) {
    const probe = await probeNode(kind);
    if (probe.available) return startNode(kind);
    skipped.push(`${probe.package}: ${(probe.reason ?? '').split(/[:(;]/)[0].trim()}`);
  }
  try {
    return await startWasm(threads);
  } catch (e) {
    skipped.push(`wasm: ${(e as Error).message}`);
  }
  return startCpu();
}

async function startNode(kind: 'gpu' | 'node'): Promise<BackendInfo> {
  const probe = await probeNode(kind);
  if (!probe.available) {
    throw new ConfigError(
      `backend ${kind}: ${probe.package} is not usable: ${probe.reason}. Use backend auto, wasm or cpu instead.`,
    );
  }
  const ok = await tf.setBackend('tensorflow');
  if (!ok) throw new ConfigError(`backend ${kind}: the tensorflow backend of ${probe.package} failed to start`);
  return {
    name: 'tensorflow',
    device: kind === 'gpu' ? 'gpu' : 'cpu',
    detail: `tensorflow (${probe.package} ${probe.version}${probe.detail ? `, ${probe.detail}` : ''})`,
  };
}

async function startWasm(threads: number): Promise<BackendInfo> {
  let w: WasmInfo;
  try {
    w = await prepareWasm(threads);
  } catch (e) {
    throw new ConfigError(`backend wasm: failed to start: ${messageOf(e)}`);
  }
  return {
    name: 'wasm',
    device: 'cpu',
    detail: `wasm (tfjs-backend-wasm ${w.version}, ${wasmFeatures(w)}; ${blasNote(false)})`,
  };
}

async function startCpu(): Promise<BackendInfo> {
  const ok = await tf.setBackend('cpu');
  if (!ok) throw new ConfigError('backend cpu: failed to start');
  return { name: 'cpu', device: 'cpu', detail: `cpu (plain JavaScript, tfjs ${tf.version_core}; slow)` };
}

function wasmFeatures(w: WasmInfo): string {
  const simd = w.simd ? 'SIMD' : 'no SIMD';
  const th = `${w.threads} thread${w.threads === 1 ? '' : 's'}`;
  return w.multiThreadSupported ? `${simd}, ${th}` : `${simd}, ${th}: the multi-threaded build does not run in Node`;
}

/** Who runs wasm's matrix products: OpenBLAS through the native addon (./addon.ts), or wasm itself. */
export function blasNote(withReason: boolean): string {
  const n = addonStatus();
  if (n.available) {
    const version = /OpenBLAS [\d.]+/.exec(n.config ?? '')?.[0] ?? n.library;
    const core =
      /\b(SkylakeX|Haswell|Zen|Sandybridge|Cooperlake|SapphireRapids|Prescott|Nehalem|Neoverse\w*|ARMV8|\w+)\s+MAX_THREADS/.exec(
        n.config ?? '',
      )?.[1];
    return `matrix products by ${version}${core ? ` (${core})` : ''}`;
  }
  return withReason
    ? `matrix products on wasm: ${n.reason}`
    : 'matrix products on wasm (no OpenBLAS addon; see captioner doctor)';
}

// ---------------------------------------------------------------------------------------------
// Probing

const nodeProbes = new Map<'gpu' | 'node', Promise<BackendProbe>>();

/** Load tfjs-node(-gpu) once and say whether it can be used (cached). */
function probeNode(kind: 'gpu' | 'node'): Promise<BackendProbe> {
  let p = nodeProbes.get(kind);
  if (!p) {
    p = doProbeNode(kind);
    nodeProbes.set(kind, p);
  }
  return p;
}

async function doProbeNode(kind: 'gpu' | 'node'): Promise<BackendProbe> {
  const pkg = kind === 'gpu' ? NODE_GPU : NODE_CPU;
  const base: BackendProbe = {
    request: kind,
    package: pkg.replace('@tensorflow/', ''),
    backend: 'tensorflow',
    available: false,
  };
  const version = packageVersion(pkg);
  if (version) base.version = version;
  if (!version) {
    return { ...base, reason: notInstalled(kind) };
  }
  let gpuName: string | undefined;
  if (kind === 'gpu') {
    const gpus = nvidiaGpus();
    if (!gpus.length)
      return { ...base, reason: `no NVIDIA GPU found (nvidia-smi ${gpus === NO_SMI ? 'not found' : 'lists none'})` };
    gpuName = gpus[0];
  }
  // The other flavour may already own the 'tensorflow' backend; both cannot load in one process.
  const other = nodeProbes.get(kind === 'gpu' ? 'node' : 'gpu');
  if (other && (await other).available)
    return { ...base, reason: `${kind === 'gpu' ? NODE_CPU : NODE_GPU} is already loaded in this process` };
  try {
    const spec: string = pkg; // a variable: these optional modules may be absent at compile time
    await import(spec);
  } catch (e) {
    return { ...base, reason: loadFailure(kind, messageOf(e)) };
  }
  if (!tf.engine().registryFactory['tensorflow'])
    return { ...base, reason: `${pkg} loaded but registered no 'tensorflow' backend (a second copy of tfjs-core?)` };
  return { ...base, available: true, detail: kind === 'gpu' ? `GPU ${gpuName}` : 'native libtensorflow on the CPU' };
}

function notInstalled(kind: 'gpu' | 'node'): string {
  if (kind === 'gpu') {
    const cuda = hasLib('libcudart.so.11.0') ? '' : '; libcudart.so.11.0 missing';
    const gpu = nvidiaGpus().length ? '' : '; no NVIDIA GPU found';
    return `not installed: npm install ${NODE_GPU} (${CUDA_HINT}${cuda}${gpu})`;
  }
  return `not installed: npm install ${NODE_CPU} (its install downloads libtensorflow; it failed or was skipped)`;
}

/** Turn a native load error into a reason a user can act on. */
export function loadFailure(kind: 'gpu' | 'node', message: string): string {
  const pkg = kind === 'gpu' ? NODE_GPU : NODE_CPU;
  if (/ERR_MODULE_NOT_FOUND|Cannot find (package|module)/i.test(message) && message.includes(pkg))
    return notInstalled(kind);
  const lib = /(lib[\w.+-]+\.so[\d.]*)\s*:\s*cannot open shared object/i.exec(message)?.[1];
  if (lib && /libcudart/i.test(lib)) return `CUDA runtime ${lib} missing: ${pkg} ${CUDA_HINT} on the library path`;
  if (lib && /libcudnn/i.test(lib)) return `cuDNN ${lib} missing: ${pkg} ${CUDA_HINT} on the library path`;
  if (lib && /libtensorflow/i.test(lib))
    return `native ${lib} missing (the download during npm install failed): run npm rebuild ${pkg}`;
  if (lib) return `shared library ${lib} missing`;
  if (/tfjs_binding\.node/.test(message)) return `native binding missing (install failed): run npm rebuild ${pkg}`;
  return `failed to load: ${message.split('\n')[0]}`;
}

function packageVersion(pkg: string): string | undefined {
  try {
    const file = require.resolve(`${pkg}/package.json`);
    return (JSON.parse(readFileSync(file, 'utf8')) as { version: string }).version;
  } catch {
    return undefined;
  }
}

const NO_SMI: string[] = [];

/** Names of NVIDIA GPUs per nvidia-smi; NO_SMI (empty) when nvidia-smi is absent or fails. */
export function nvidiaGpus(): string[] {
  try {
    const out = execFileSync('nvidia-smi', ['--query-gpu=name,memory.total,driver_version', '--format=csv,noheader'], {
      encoding: 'utf8',
      timeout: 5000,
      stdio: ['ignore', 'pipe', 'ignore'],
    });
    return out
      .split('\n')
      .map((l) => l.trim())
      .filter(Boolean);
  } catch {
    return NO_SMI;
  }
}

/** Whether a shared library is known to the dynamic loader (ldconfig cache or LD_LIBRARY_PATH). */
export function hasLib(name: string): boolean {
  for (const dir of (process.env.LD_LIBRARY_PATH ?? '').split(':').filter(Boolean)) {
    if (existsSync(path.join(dir, name))) return true;
  }
  for (const ldconfig of ['/sbin/ldconfig', '/usr/sbin/ldconfig', 'ldconfig']) {
    try {
      const out = execFileSync(ldconfig, ['-p'], {
        encoding: 'utf8',
        timeout: 5000,
        stdio: ['ignore', 'pipe', 'ignore'],
      });
      return out.includes(name);
    } catch {
      // try the next location
    }
  }
  return false;
}

/**
 * Which backends can run here, with versions and reasons. May load tfjs-node(-gpu) and start
 * wasm; restores the backend that was selected before.
 */
export async function backendReport(): Promise<BackendProbe[]> {
  const before = tfBackendName();
  const probes: BackendProbe[] = [await probeNode('gpu'), await probeNode('node')];
  probes.push(await probeWasm());
  probes.push({
    request: 'cpu',
    package: 'cpu',
    backend: 'cpu',
    available: true,
    version: tf.version_core,
    detail: 'plain JavaScript (slow)',
  });
  if (before && tf.getBackend() !== before) await tf.setBackend(before);
  return probes;
}

async function probeWasm(): Promise<BackendProbe> {
  const base: BackendProbe = { request: 'wasm', package: 'wasm', backend: 'wasm', available: false };
  try {
    const mod = await loadWasmModule();
    base.version = mod.version_wasm;
    const w = await prepareWasm(0);
    return { ...base, available: true, detail: `${wasmFeatures(w)}; ${blasNote(true)}` };
  } catch (e) {
    return { ...base, reason: messageOf(e) };
  }
}

/** Name of the selected backend without triggering default-backend initialisation. */
function tfBackendName(): string | undefined {
  const engine = tf.engine() as unknown as { backendName?: string | null };
  return engine.backendName ?? undefined;
}

function messageOf(e: unknown): string {
  if (e && typeof e === 'object' && 'message' in e) return String((e as { message: unknown }).message);
  return String(e);
}
