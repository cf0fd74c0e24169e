// Small helpers shared by our wasm kernels (./kernels/*, addon.ts): element counts,
// where a tensor lives on the wasm heap, the odometer over a block layout, and a matmul's dimensions.
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';
import type { NamedAttrMap, TensorInfo } from '@tensorflow/tfjs';

/** A typed-array view of a float32, int32 or bool (one byte) tensor on the heap. */
export type HeapArray = Float32Array | Int32Array | Uint8Array;

/** Blocks shorter than this are copied element by element (a set() call costs more). */
export const SMALL_BLOCK = 16;

export function sizeOf(shape: number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

/** Byte offset of a tensor's data on the wasm heap. */
export function heapOffset(backend: BackendWasm, t: TensorInfo): number {
  return backend.dataIdMap.get(t.dataId)!.memoryOffset as number;
}

/**
 * Calls f for every index of dims xs[0..k-1] (an odometer, last dim fastest), in row-major order:
 * offset = sum of i * ostr, n = the index's position (0, 1, 2, ...).
 */
export function forEachPrefix(xs: number[], ostr: number[], k: number, f: (offset: number, n: number) => void): void {
  const idx = new Array<number>(k).fill(0);
  let offset = 0;
  for (let n = 0; ; n++) {
    f(offset, n);
    let d = k - 1;
    while (d >= 0) {
      idx[d]++;
      offset += ostr[d];
      if (idx[d] < xs[d]) break;
      offset -= xs[d] * ostr[d];
      idx[d] = 0;
      d--;
    }
    if (d < 0) return;
  }
}

/** op(A) [M, K] x op(B) [K, N] of a BatchMatMul / _FusedMatMul call, with the flags and batch sizes. */
export function matMulDims(
  a: TensorInfo,
  b: TensorInfo,
  attrs: NamedAttrMap | undefined,
): { tA: boolean; tB: boolean; M: number; K: number; N: number; batchA: number; batchB: number } {
  const at = (attrs ?? {}) as NamedAttrMap & { transposeA?: boolean; transposeB?: boolean };
  const tA = Boolean(at.transposeA);
  const tB = Boolean(at.transposeB);
  const ra = a.shape.length;
  const rb = b.shape.length;
  return {
    tA,
    tB,
    M: tA ? a.shape[ra - 1] : a.shape[ra - 2],
    K: tA ? a.shape[ra - 2] : a.shape[ra - 1],
    N: tB ? b.shape[rb - 2] : b.shape[rb - 1],
    batchA: sizeOf(a.shape.slice(0, -2)),
    batchB: sizeOf(b.shape.slice(0, -2)),
  };
}
