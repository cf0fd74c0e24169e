// Copying float32 values between tensors and host arrays (plain or shared): a tensor's values into an array
// and an array's values over a tensor's, straight from and to the wasm heap where the backend is wasm. Data-
// parallel training moves every replica's weights in and gradients out this way each step.
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';
import type { TensorInfo } from '@tensorflow/tfjs';
import { tf } from './tf.js';
import { nativeCopy } from './native.js';

/**
 * dst.set(src) for equal lengths. V8 copies to or from a SharedArrayBuffer element by element (it must not
 * tear under concurrent access); the addon's memcpy is several times faster for the 23 MB a step moves.
 */
export function copyFloats(dst: Float32Array, src: Float32Array): void {
  if (dst.length !== src.length) throw new RangeError(`copyFloats: ${src.length} values into ${dst.length}`);
  if (!nativeCopy(dst, src)) dst.set(src);
}

/**
 * Copy a float32 tensor's values into out[offset..]. On wasm they are read straight from the heap: no
 * intermediate array (dataSync allocates one per call; for the ~23 MB of a step's gradients that garbage
 * costs GC time on a helper thread, which data-parallel training pays on a busy core).
 */
export function copyInto(t: tf.Tensor, out: Float32Array, offset = 0): void {
  if (t.dtype !== 'float32') throw new TypeError(`copyInto: expected a float32 tensor, got ${t.dtype}`);
  if (offset < 0 || offset + t.size > out.length) throw new RangeError(`copyInto: ${t.size} values do not fit at ${offset} of ${out.length}`);
  if (t.size === 0) return;
  const backend = tf.backend() as unknown as BackendWasm;
  if (tf.getBackend() === 'wasm' && backend.dataIdMap.has(t.dataId)) {
    copyFloats(out.subarray(offset, offset + t.size), backend.typedArrayFromHeap(t as unknown as TensorInfo) as Float32Array);
    return;
  }
  out.set(t.dataSync() as Float32Array, offset);
}

/**
 * Overwrite a float32 tensor's values in place from `src` (its size) when that is safe: on wasm, where the
 * tensor alone holds its heap block (no reshape or clone shares it). Returns false where it did nothing; the
 * caller then makes a new tensor. Saves the allocation, the tensor and the free of a whole weight refresh.
 */
export function overwrite(t: tf.Tensor, src: Float32Array): boolean {
  if (t.dtype !== 'float32' || src.length !== t.size || tf.getBackend() !== 'wasm') return false;
  const backend = tf.backend() as unknown as BackendWasm;
  const data = backend.dataIdMap.get(t.dataId);
  if (!data || data.refCount !== 1 || typeof data.memoryOffset !== 'number') return false;
  if (t.size > 0) copyFloats(backend.typedArrayFromHeap(t as unknown as TensorInfo) as Float32Array, src);
  return true;
}
