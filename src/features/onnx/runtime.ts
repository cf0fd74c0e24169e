// Loads onnxruntime-node on demand (it is a native addon that may be missing on some platforms) and
// creates CPU inference sessions with our defaults. Nothing here knows about VGG16.
// onnxruntime records telemetry unless told not to (a /tmp/mat-debug-<pid>.log per process and a device
// id and event queue under ~/.cache/Microsoft/DeveloperTools): disableOrtTelemetry turns it off before the
// native library starts, unless the user set ORT_DISABLE_TELEMETRY themselves. The native code reads the
// process's real environment, which only the main thread's process.env writes to (a worker thread's is a
// copy): so the CLI calls it at start, before any worker thread or child process exists, and so does every
// host of a worker thread that may run onnxruntime (rpc's spawn, serve's model worker); loadOrt calls it
// too, which covers a main-thread user of the library, and warns in a worker whose environment lacks it.
import { isMainThread } from 'node:worker_threads';
import type * as Ort from 'onnxruntime-node';
import { ModelError } from '../../errors.js';
import { log } from '../../log.js';

export type OrtModule = typeof Ort;
export type OrtSession = Ort.InferenceSession;

let cached: Promise<OrtModule | null> | undefined;
let loadError = '';

/** Whether onnxruntime's telemetry is off for this process (ORT_DISABLE_TELEMETRY=1, our default). */
export function ortTelemetryDisabled(env: NodeJS.ProcessEnv = process.env): boolean {
  return (env.ORT_DISABLE_TELEMETRY ?? '1') === '1';
}

/**
 * Turn onnxruntime's telemetry off (ORT_DISABLE_TELEMETRY=1 unless the user set it) for this process and
 * every worker thread and child process started after this call. Call it on the main thread.
 */
export function disableOrtTelemetry(): void {
  process.env.ORT_DISABLE_TELEMETRY ??= '1';
}

/** onnxruntime-node, or null when it cannot be loaded here (then `ortLoadError()` says why). */
export function loadOrt(): Promise<OrtModule | null> {
  // read by the native library when it initialises, so it must be set before the import
  if (!cached && !isMainThread && process.env.ORT_DISABLE_TELEMETRY === undefined) {
    log.warn(
      'onnxruntime is loaded in a worker thread whose environment does not set ORT_DISABLE_TELEMETRY, and a worker cannot set it for the native library: ' +
        'its telemetry may be on. Set ORT_DISABLE_TELEMETRY=1 in the environment, or load captioner on the main thread before starting the worker.',
    );
  }
  disableOrtTelemetry();
  cached ??= import('onnxruntime-node')
    .then((m) =>
      (m as unknown as { default?: OrtModule }).default?.InferenceSession
        ? (m as unknown as { default: OrtModule }).default
        : (m as OrtModule),
    )
    .catch((e: Error) => {
      loadError = e.message.split('\n')[0];
      return null;
    });
  return cached;
}

export function ortLoadError(): string {
  return loadError;
}

export interface SessionOptions {
  /** Intra-op threads; 0 lets onnxruntime pick (all physical cores). */
  threads: number;
  /** The model file, for messages when `model` is bytes (a path names itself). */
  where?: string;
}

/**
 * An onnxruntime CPU session from ONNX bytes or a file path. Throws ModelError with a readable reason
 * that names the file: "is not an ONNX model" when the bytes do not parse as one.
 */
export async function createSession(model: Uint8Array | string, opts: SessionOptions): Promise<OrtSession> {
  const ort = await loadOrt();
  if (!ort) throw new ModelError(`onnxruntime-node is not available: ${ortLoadError()} (use encoder.runtime=tfjs)`);
  const options: Ort.InferenceSession.SessionOptions = {
    executionProviders: ['cpu'],
    graphOptimizationLevel: 'all',
    executionMode: 'sequential',
    interOpNumThreads: 1,
    intraOpNumThreads: Math.max(0, opts.threads | 0),
    logSeverityLevel: 3,
  };
  const where = opts.where ?? (typeof model === 'string' ? model : undefined);
  const prefix = where ? `${where}: ` : '';
  if (typeof model !== 'string' && model.length === 0)
    throw new ModelError(`${prefix}is not an ONNX model (the file is empty)`);
  try {
    return typeof model === 'string'
      ? await ort.InferenceSession.create(model, options)
      : await ort.InferenceSession.create(model, options);
  } catch (e) {
    const first = (e as Error).message.split('\n')[0].replace(/^Load model from .*? failed:/, '');
    if (/protobuf parsing failed|does not have a graph|data pointer is null/i.test(first)) {
      throw new ModelError(
        `${prefix}is not an ONNX model (onnxruntime cannot parse it as one); give the .onnx file written by torch.onnx.export, tf2onnx or onnx.save`,
      );
    }
    throw new ModelError(
      `${prefix}onnxruntime ${ortVersion(ort)}cannot load the model: ${first.replace(/^\/onnxruntime_src\/\S+ /, '')}`,
    );
  }
}

/** An input or output as the session describes it: element type ('float32', 'int64', ...) and shape
 *  (numbers, or strings for symbolic dims: '' when unnamed; [] when the model does not say). */
export interface TensorMeta {
  name: string;
  type: string;
  shape: (number | string)[];
}

/** The session's inputs and outputs, in order (a non-tensor value has type 'non-tensor' and no shape). */
export function sessionMeta(s: OrtSession): { inputs: TensorMeta[]; outputs: TensorMeta[] } {
  const meta = (
    names: readonly string[],
    md: readonly Ort.InferenceSession.ValueMetadata[] | undefined,
  ): TensorMeta[] =>
    names.map((name, i) => {
      const m = md?.[i];
      return m?.isTensor
        ? { name, type: String(m.type), shape: [...m.shape] }
        : { name, type: m ? 'non-tensor' : 'unknown', shape: [] };
    });
  return { inputs: meta(s.inputNames, s.inputMetadata), outputs: meta(s.outputNames, s.outputMetadata) };
}

/** A float32 tensor for feeding a session. */
export async function floatTensor(data: Float32Array, dims: number[]): Promise<Ort.Tensor> {
  const ort = await loadOrt();
  if (!ort) throw new ModelError(`onnxruntime-node is not available: ${ortLoadError()}`);
  return new ort.Tensor('float32', data, dims);
}

function ortVersion(ort: OrtModule): string {
  const v = (ort.env as { versions?: { node?: string } }).versions?.node;
  return v ? `${v} ` : '';
}

/** One human line: onnxruntime-node, its version, CPU threads. */
export function ortDetail(ort: OrtModule, threads: number): string {
  const version = ortVersion(ort).trim();
  return `onnxruntime-node${version ? ` ${version}` : ''} (cpu, ${threads > 0 ? `${threads} thread${threads === 1 ? '' : 's'}` : 'all cores'})`;
}
