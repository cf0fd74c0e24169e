// Loads onnxruntime-node on demand (it is a native addon that may be missing on some platforms) and
// creates CPU inference sessions with our defaults. Nothing here knows about VGG16.
// onnxruntime records telemetry unless told not to (a /tmp/mat-debug-<pid>.log per process and a device
// id and event queue under ~/.cache/Microsoft/DeveloperTools): disableOrtTelemetry turns it off before the
// native library starts, unless the user set ORT_DISABLE_TELEMETRY themselves. The native code reads the
// process's real environment, which only the main thread's process.env writes to (a worker thread's is a
// copy): so the CLI calls it at start, before any worker thread or child process exists, and so does every
// host of a worker thread that may run onnxruntime (serve's model worker); loadOrt calls it too, which
// covers a main-thread user of the library.
import type * as Ort from 'onnxruntime-node';
import { ModelError } from '../../errors.js';

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
  // read by the native library when it initialises, so it must be set before the import (in a worker
  // thread this reaches only its copy of the environment: its host must have called disableOrtTelemetry)
  disableOrtTelemetry();
  cached ??= import('onnxruntime-node')
    .then((m) => ((m as unknown as { default?: OrtModule }).default?.InferenceSession ? (m as unknown as { default: OrtModule }).default : (m as OrtModule)))
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
}

/** An onnxruntime CPU session from ONNX bytes or a file path. Throws ModelError with a readable reason. */
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
  try {
    return typeof model === 'string' ? await ort.InferenceSession.create(model, options) : await ort.InferenceSession.create(model, options);
  } catch (e) {
    const where = typeof model === 'string' ? `${model}: ` : '';
    throw new ModelError(`${where}onnxruntime cannot load the model: ${(e as Error).message.split('\n')[0]}`);
  }
}

/** A float32 tensor for feeding a session. */
export async function floatTensor(data: Float32Array, dims: number[]): Promise<Ort.Tensor> {
  const ort = await loadOrt();
  if (!ort) throw new ModelError(`onnxruntime-node is not available: ${ortLoadError()}`);
  return new ort.Tensor('float32', data, dims);
}
