// Copying float32 values between tensors and host arrays (plain or shared): a tensor's values into an array
// (straight from the wasm heap where the backend is wasm), and an array's values into a variable as a NEW
// tensor. Data-parallel training moves every replica's weights in and gradients out this way each step.
//
// Nothing here (or anywhere in src/) writes into the memory of a tensor that exists: tfjs-backend-wasm's
// matmul packs its right operand once per tensor id and keeps the packed copy (XNNPACK's operator cache,
// dropped only when the tensor is disposed), so a later matMul(x, W) would not see values written over W's
// heap block; other backends may cache likewise. A variable gets new values by assign() of a new tensor (a
// new id). Our kernels (src/tf/*.ts, the native ones included) write only into the outputs they allocate;
// Identity and Reshape share their input's block and the batched matmul reads its inputs through aliasing
// views, which is safe because no tensor is ever written after its kernel returned it.
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';
import type { TensorInfo } from '@tensorflow/tfjs';
import { tf } from './tf.js';
import { addonCopy } from './addon.js';

/**
 * dst.set(src) for equal lengths. V8 copies to or from a SharedArrayBuffer element by element (it must not
 * tear under concurrent access); the addon's memcpy is several times faster for the 23 MB a step moves.
 */
export function copyFloats(dst: Float32Array, src: Float32Array): void {
  if (dst.length !== src.length) throw new RangeError(`copyFloats: ${src.length} values into ${dst.length}`);
  if (!addonCopy(dst, src)) dst.set(src);
}

/**
 * Copy a float32 tensor's values into out[offset..]. On wasm they are read straight from the heap: no
 * intermediate array (dataSync allocates one per call; for the ~23 MB of a step's gradients that garbage
 * costs GC time on a helper thread, which data-parallel training pays on a busy core).
 */
export function copyInto(t: tf.Tensor, out: Float32Array, offset = 0): void {
  if (t.dtype !== 'float32') throw new TypeError(`copyInto: expected a float32 tensor, got ${t.dtype}`);
  if (offset < 0 || offset + t.size > out.length)
    throw new RangeError(`copyInto: ${t.size} values do not fit at ${offset} of ${out.length}`);
  if (t.size === 0) return;
  const backend = tf.backend() as unknown as BackendWasm;
  if (tf.getBackend() === 'wasm' && backend.dataIdMap.has(t.dataId)) {
    copyFloats(
      out.subarray(offset, offset + t.size),
      backend.typedArrayFromHeap(t as unknown as TensorInfo) as Float32Array,
    );
    return;
  }
  out.set(t.dataSync() as Float32Array, offset);
}

/**
 * Give a float32 variable the values of `src` (its size): a new tensor holding a copy, assigned to the
 * variable (the old data is freed). Never a write over the variable's own memory (see the header).
 */
export function assignFloats(v: tf.Variable, src: Float32Array): void {
  if (v.dtype !== 'float32') throw new TypeError(`assignFloats: expected a float32 variable, got ${v.dtype}`);
  if (src.length !== v.size)
    throw new RangeError(`assignFloats: ${src.length} values for a variable of ${v.size} ([${v.shape.join(', ')}])`);
  // wasm copies the values onto its heap now; the cpu and tensorflow backends keep a reference to the array
  // they are given (the shared weights change under it next step), so they get a private copy
  const values = tf.getBackend() === 'wasm' ? src : src.slice();
  tf.tidy(() => v.assign(tf.tensor(values, v.shape, 'float32')));
}
