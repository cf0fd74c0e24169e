// The `captioner doctor` report: what can run here. Lists the tfjs compute backends (tfjs-node-gpu,
// tfjs-node, wasm, cpu) and encoder runtimes (onnxruntime-node, tfjs) with versions and the reason each
// unavailable one failed, which backend `auto` picks, whether onnxruntime's telemetry is off, which
// VGG16 weight files are cached (where, and whether their md5 matches Keras's), and CPU / memory / GPU facts.
import { execFileSync } from 'node:child_process';
import { existsSync, promises as fs } from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import * as path from 'node:path';
import { backendReport, nvidiaGpus, type BackendProbe } from '../tf/backend.js';
import { tf } from '../tf/tf.js';
import { loadOrt, ortLoadError, ortTelemetryDisabled } from '../features/onnx/runtime.js';
import { KERAS_VGG16_FILES, WEIGHTS_COMMAND, weightsCacheDir } from '../features/weights/cache.js';
import { fileDigest, sidecarFor } from '../features/weights/hash.js';

const require = createRequire(import.meta.url);

export interface RuntimeProbe {
  name: string;
  available: boolean;
  version?: string;
  detail?: string;
  reason?: string;
}

export interface WeightsProbe {
  /** `top` (full VGG16, needed for fc2) or `notop` (conv layers only). */
  kind: keyof typeof KERAS_VGG16_FILES;
  path: string;
  present: boolean;
  bytes?: number;
  md5?: string;
  expectedMd5: string;
  /** Present and its md5 is Keras's. */
  ok: boolean;
}

export interface DoctorReport {
  backends: BackendProbe[];
  /** The backend `backend: auto` selects here. */
  auto: string;
  /** The backend the resolved config asks for. */
  configured: string;
  encoders: RuntimeProbe[];
  /** onnxruntime's telemetry: off unless ORT_DISABLE_TELEMETRY is set to something other than 1. */
  telemetry: { onnxruntime: 'off' | 'on'; detail: string };
  weights: { dir: string; files: WeightsProbe[] };
  cpu: { model: string; cores: number; usable: number; arch: string; wasmSimd: boolean };
  memory: { totalGiB: number; freeGiB: number };
  gpu: { devices: string[]; note: string };
  platform: { os: string; release: string; node: string; tfjs: string };
}

/** Probe everything (loads optional native modules; starts wasm). */
export async function doctor(configured = 'auto'): Promise<DoctorReport> {
  const backends = await backendReport();
  const auto = backends.find((b) => b.available);
  const gpus = nvidiaGpus();
  const cpus = os.cpus();
  return {
    backends,
    auto: auto ? (auto.request === auto.package ? auto.request : `${auto.request} (${auto.package})`) : 'none',
    configured,
    encoders: [await probeOnnx(), tfjsEncoder(auto)],
    telemetry: telemetryReport(),
    weights: await weightsReport(),
    cpu: {
      model: cpus[0]?.model?.trim() || 'unknown',
      cores: cpus.length,
      usable: typeof os.availableParallelism === 'function' ? os.availableParallelism() : cpus.length,
      arch: os.arch(),
      wasmSimd: wasmSimd(),
    },
    memory: { totalGiB: gib(os.totalmem()), freeGiB: gib(os.freemem()) },
    gpu: {
      devices: gpus,
      note: gpus.length
        ? 'NVIDIA (nvidia-smi)'
        : hasCommand('nvidia-smi')
          ? 'none (nvidia-smi lists no GPU)'
          : 'none (nvidia-smi not found)',
    },
    platform: {
      os: `${os.platform()} ${os.arch()}`,
      release: os.release(),
      node: process.version,
      tfjs: tf.version_core,
    },
  };
}

async function probeOnnx(): Promise<RuntimeProbe> {
  const base: RuntimeProbe = { name: 'onnxruntime-node', available: false };
  try {
    // through loadOrt, which turns telemetry off before the native library starts
    const loaded = await loadOrt();
    if (!loaded) throw new Error(ortLoadError());
    const ort = loaded as unknown as {
      env?: { versions?: Record<string, string> };
      listSupportedBackends?: () => { name: string; bundled: boolean }[];
    };
    const version = ort.env?.versions?.node ?? packageVersion('onnxruntime-node');
    const eps = ort.listSupportedBackends?.() ?? [];
    const bundled = eps.filter((e) => e.bundled).map((e) => e.name);
    const extra = eps.filter((e) => !e.bundled).map((e) => e.name);
    const detail = eps.length
      ? `execution providers: ${bundled.join(', ')}${extra.length ? ` (not bundled: ${extra.join(', ')})` : ''}`
      : undefined;
    return { ...base, available: true, version, detail };
  } catch (e) {
    const msg = (e as Error)?.message ?? String(e);
    const reason = /Cannot find (package|module)/.test(msg)
      ? 'not installed: npm install onnxruntime-node'
      : `failed to load: ${msg.split('\n')[0]}`;
    return { ...base, version: packageVersion('onnxruntime-node'), reason };
  }
}

function telemetryReport(): DoctorReport['telemetry'] {
  const value = process.env.ORT_DISABLE_TELEMETRY;
  return ortTelemetryDisabled()
    ? { onnxruntime: 'off', detail: 'ORT_DISABLE_TELEMETRY=1 (captioner sets it unless you set it yourself)' }
    : {
        onnxruntime: 'on',
        detail: `ORT_DISABLE_TELEMETRY=${value}: onnxruntime may write /tmp/mat-debug-<pid>.log and ~/.cache/Microsoft/DeveloperTools`,
      };
}

/** Each Keras VGG16 file in the weights cache: present or not, its size and md5 (cached by size+mtime). */
async function weightsReport(): Promise<DoctorReport['weights']> {
  const dir = weightsCacheDir();
  const files: WeightsProbe[] = [];
  for (const [kind, f] of Object.entries(KERAS_VGG16_FILES) as [
    keyof typeof KERAS_VGG16_FILES,
    (typeof KERAS_VGG16_FILES)[keyof typeof KERAS_VGG16_FILES],
  ][]) {
    const file = path.join(dir, f.name);
    const probe: WeightsProbe = { kind, path: file, present: existsSync(file), expectedMd5: f.md5, ok: false };
    if (probe.present) {
      try {
        const { size } = await fs.stat(file);
        probe.bytes = size;
        probe.md5 = (await fileDigest([file], sidecarFor(file, dir))).md5;
        probe.ok = probe.md5 === f.md5;
      } catch {
        // unreadable: reported as present but not ok
      }
    }
    files.push(probe);
  }
  return { dir, files };
}

function tfjsEncoder(auto: BackendProbe | undefined): RuntimeProbe {
  return {
    name: 'tfjs',
    available: true,
    version: tf.version_core,
    detail: `runs on the compute backend (auto: ${auto?.package ?? 'none'})`,
  };
}

function packageVersion(pkg: string): string | undefined {
  try {
    return (require(`${pkg}/package.json`) as { version: string }).version;
  } catch {
    return undefined;
  }
}

function wasmSimd(): boolean {
  try {
    return WebAssembly.validate(
      new Uint8Array([
        0, 97, 115, 109, 1, 0, 0, 0, 1, 5, 1, 96, 0, 1, 123, 3, 2, 1, 0, 10, 10, 1, 8, 0, 65, 0, 253, 15, 253, 98, 11,
      ]),
    );
  } catch {
    return false;
  }
}

function hasCommand(cmd: string): boolean {
  try {
    execFileSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore', timeout: 3000 });
    return true;
  } catch {
    return false;
  }
}

function gib(bytes: number): number {
  return Math.round((bytes / 1024 ** 3) * 10) / 10;
}

/** The human-readable report. */
export function formatReport(r: DoctorReport): string {
  const lines: string[] = [];
  const row = (p: { available: boolean; version?: string; detail?: string; reason?: string }, name: string) =>
    `  ${p.available ? 'ok  ' : 'no  '} ${name.padEnd(20)} ${(p.version ?? '-').padEnd(8)} ${p.available ? (p.detail ?? '') : (p.reason ?? '')}`.trimEnd();
  lines.push('Compute backends (training, decoding, tfjs encoder):');
  for (const b of r.backends) lines.push(row(b, `${b.package}${b.request !== b.package ? ` (${b.request})` : ''}`));
  lines.push(`  backend auto selects: ${r.auto}; config asks for: ${r.configured}`);
  lines.push('');
  lines.push('Encoder runtimes:');
  for (const e of r.encoders) lines.push(row(e, e.name));
  lines.push(`  onnxruntime telemetry: ${r.telemetry.onnxruntime} (${r.telemetry.detail})`);
  lines.push('');
  lines.push(`VGG16 weights (${r.weights.dir}):`);
  for (const w of r.weights.files) {
    const state = !w.present
      ? `not cached (run \`${WEIGHTS_COMMAND}${w.kind === 'notop' ? ' --no-top' : ''}\`)`
      : w.ok
        ? `ok, ${(w.bytes! / 1e6).toFixed(0)} MB, md5 ${w.md5}`
        : `md5 ${w.md5 ?? 'unreadable'} differs from Keras's ${w.expectedMd5}: re-run \`${WEIGHTS_COMMAND}\``;
    lines.push(
      `  ${w.ok ? 'ok  ' : 'no  '} ${(w.kind === 'top' ? 'full (fc2)' : 'no-top (block5)').padEnd(20)} ${state}`,
    );
  }
  lines.push('');
  lines.push(
    `CPU:    ${r.cpu.model}, ${r.cpu.cores} cores (${r.cpu.usable} usable), ${r.cpu.arch}, WebAssembly SIMD ${r.cpu.wasmSimd ? 'yes' : 'no'}`,
  );
  lines.push(`Memory: ${r.memory.totalGiB} GiB total, ${r.memory.freeGiB} GiB free`);
  lines.push(`GPU:    ${r.gpu.devices.length ? r.gpu.devices.join('; ') : r.gpu.note}`);
  lines.push(
    `System: ${r.platform.os}, kernel ${r.platform.release}, Node ${r.platform.node}, tfjs ${r.platform.tfjs}`,
  );
  return lines.join('\n') + '\n';
}
