// `captioner doctor`: what can run here. Lists the tfjs compute backends (tfjs-node-gpu, tfjs-node,
// wasm, cpu) and encoder runtimes (onnxruntime-node, tfjs) with versions, the reason each
// unavailable one failed, which backend `auto` picks, and CPU / memory / GPU facts.
// Readable text on stdout, or JSON with --json.
import type { Command } from 'commander';
import { execFileSync } from 'node:child_process';
import { createRequire } from 'node:module';
import os from 'node:os';
import { backendReport, nvidiaGpus, type BackendProbe } from '../tf/backend.js';
import { tf } from '../tf/tf.js';
import { resolveConfig, withConfig, type ConfigFlags } from './common.js';

const require = createRequire(import.meta.url);

export interface RuntimeProbe {
  name: string;
  available: boolean;
  version?: string;
  detail?: string;
  reason?: string;
}

export interface DoctorReport {
  backends: BackendProbe[];
  /** The backend `backend: auto` selects here. */
  auto: string;
  /** The backend the resolved config asks for. */
  configured: string;
  encoders: RuntimeProbe[];
  cpu: { model: string; cores: number; usable: number; arch: string; wasmSimd: boolean };
  memory: { totalGiB: number; freeGiB: number };
  gpu: { devices: string[]; note: string };
  platform: { os: string; release: string; node: string; tfjs: string };
}

export function register(program: Command): void {
  withConfig(program.command('doctor').description('show which compute backends and encoder runtimes work here, and why others do not'))
    .option('--json', 'print JSON instead of text')
    .action(async (opts: ConfigFlags & { json?: boolean }) => {
      const { config } = await resolveConfig(opts);
      const report = await doctor(config.backend);
      process.stdout.write(opts.json ? JSON.stringify(report, null, 2) + '\n' : formatReport(report));
    });
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
    cpu: {
      model: cpus[0]?.model?.trim() || 'unknown',
      cores: cpus.length,
      usable: typeof os.availableParallelism === 'function' ? os.availableParallelism() : cpus.length,
      arch: os.arch(),
      wasmSimd: wasmSimd(),
    },
    memory: { totalGiB: gib(os.totalmem()), freeGiB: gib(os.freemem()) },
    gpu: { devices: gpus, note: gpus.length ? 'NVIDIA (nvidia-smi)' : hasCommand('nvidia-smi') ? 'none (nvidia-smi lists no GPU)' : 'none (nvidia-smi not found)' },
    platform: { os: `${os.platform()} ${os.arch()}`, release: os.release(), node: process.version, tfjs: tf.version_core },
  };
}

async function probeOnnx(): Promise<RuntimeProbe> {
  const base: RuntimeProbe = { name: 'onnxruntime-node', available: false };
  try {
    const spec: string = 'onnxruntime-node';
    const mod = (await import(spec)) as { default?: unknown };
    const ort = (mod.default ?? mod) as { env?: { versions?: Record<string, string> }; listSupportedBackends?: () => { name: string; bundled: boolean }[] };
    const version = ort.env?.versions?.node ?? packageVersion('onnxruntime-node');
    const eps = ort.listSupportedBackends?.() ?? [];
    const bundled = eps.filter((e) => e.bundled).map((e) => e.name);
    const extra = eps.filter((e) => !e.bundled).map((e) => e.name);
    const detail = eps.length ? `execution providers: ${bundled.join(', ')}${extra.length ? ` (not bundled: ${extra.join(', ')})` : ''}` : undefined;
    return { ...base, available: true, version, detail };
  } catch (e) {
    const msg = (e as Error)?.message ?? String(e);
    const reason = /Cannot find (package|module)/.test(msg) ? 'not installed: npm install onnxruntime-node' : `failed to load: ${msg.split('\n')[0]}`;
    return { ...base, version: packageVersion('onnxruntime-node'), reason };
  }
}

function tfjsEncoder(auto: BackendProbe | undefined): RuntimeProbe {
  return { name: 'tfjs', available: true, version: tf.version_core, detail: `runs on the compute backend (auto: ${auto?.package ?? 'none'})` };
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
    return WebAssembly.validate(new Uint8Array([0, 97, 115, 109, 1, 0, 0, 0, 1, 5, 1, 96, 0, 1, 123, 3, 2, 1, 0, 10, 10, 1, 8, 0, 65, 0, 253, 15, 253, 98, 11]));
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
    `  ${p.available ? 'ok  ' : 'no  '} ${name.padEnd(20)} ${(p.version ?? '-').padEnd(8)} ${p.available ? p.detail ?? '' : p.reason ?? ''}`.trimEnd();
  lines.push('Compute backends (training, decoding, tfjs encoder):');
  for (const b of r.backends) lines.push(row(b, `${b.package}${b.request !== b.package ? ` (${b.request})` : ''}`));
  lines.push(`  backend auto selects: ${r.auto}; config asks for: ${r.configured}`);
  lines.push('');
  lines.push('Encoder runtimes:');
  for (const e of r.encoders) lines.push(row(e, e.name));
  lines.push('');
  lines.push(`CPU:    ${r.cpu.model}, ${r.cpu.cores} cores (${r.cpu.usable} usable), ${r.cpu.arch}, WebAssembly SIMD ${r.cpu.wasmSimd ? 'yes' : 'no'}`);
  lines.push(`Memory: ${r.memory.totalGiB} GiB total, ${r.memory.freeGiB} GiB free`);
  lines.push(`GPU:    ${r.gpu.devices.length ? r.gpu.devices.join('; ') : r.gpu.note}`);
  lines.push(`System: ${r.platform.os}, kernel ${r.platform.release}, Node ${r.platform.node}, tfjs ${r.platform.tfjs}`);
  return lines.join('\n') + '\n';
}
