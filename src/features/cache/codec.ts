// The feature cache's chunk codec: rows of float32 values <-> little-endian float32 or float16 bytes.
// Part of src/features/cache/, the one module that writes, reads and versions the feature cache (entry:
// src/features/cache.ts).
import { bytesPer, type FeatureDtype } from './format.js';

// float16 (IEEE 754 half) conversion, round to nearest even

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

export function toHalf(v: number): number {
  f32[0] = v;
  const x = u32[0];
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  let mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0); // inf / nan
  const e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00; // overflow -> inf
  if (e <= 0) {
    if (e < -10) return sign; // underflow -> 0
    mant |= 0x800000;
    const shift = 14 - e;
    let half = mant >>> shift;
    const rem = mant & ((1 << shift) - 1);
    const mid = 1 << (shift - 1);
    if (rem > mid || (rem === mid && half & 1)) half++;
    return sign | half;
  }
  let half = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && half & 1)) half++; // a carry into the exponent is still correct (up to inf)
  return sign | half;
}

export function fromHalf(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >>> 10) & 0x1f;
  const mant = h & 0x3ff;
  if (exp === 0) return sign * mant * 2 ** -24;
  if (exp === 0x1f) return mant ? NaN : sign * Infinity;
  return sign * (1 + mant / 1024) * 2 ** (exp - 15);
}

/** One row -> little-endian bytes in `dtype`, written into `out` at byte `offset`. */
export function encodeRowInto(row: Float32Array, dtype: FeatureDtype, out: Uint8Array, offset: number): void {
  const dv = new DataView(out.buffer, out.byteOffset + offset, row.length * bytesPer(dtype));
  if (dtype === 'float16') for (let k = 0; k < row.length; k++) dv.setUint16(k * 2, toHalf(row[k]), true);
  else for (let k = 0; k < row.length; k++) dv.setFloat32(k * 4, row[k], true);
}

/** Rows -> little-endian bytes in `dtype`. */
export function encodeRows(rows: readonly Float32Array[], dtype: FeatureDtype): Uint8Array {
  const n = rows.reduce((s, r) => s + r.length, 0);
  const out = new Uint8Array(n * bytesPer(dtype));
  let at = 0;
  for (const r of rows) {
    encodeRowInto(r, dtype, out, at);
    at += r.length * bytesPer(dtype);
  }
  return out;
}

/** float16 bits -> float32 value, for all 65536 patterns (256 KB, built on first use). */
let halfTable: Float32Array | null = null;
const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/** Stored bytes of one or more rows -> float32 values (into `out` when given, else a new array). */
export function decodeRow(bytes: Uint8Array, dtype: FeatureDtype, out?: Float32Array): Float32Array {
  const n = bytes.byteLength / bytesPer(dtype);
  const dst = out ?? new Float32Array(n);
  if (dst.length < n) throw new Error(`decodeRow: output of ${dst.length} values for ${n}`);
  if (dtype === 'float16') {
    if (!halfTable) {
      halfTable = new Float32Array(65536);
      for (let h = 0; h < 65536; h++) halfTable[h] = fromHalf(h);
    }
    const t = halfTable;
    if (LITTLE_ENDIAN && bytes.byteOffset % 2 === 0) {
      const u = new Uint16Array(bytes.buffer, bytes.byteOffset, n);
      for (let i = 0; i < n; i++) dst[i] = t[u[i]];
    } else for (let i = 0; i < n; i++) dst[i] = t[bytes[2 * i] | (bytes[2 * i + 1] << 8)];
  } else if (LITTLE_ENDIAN && bytes.byteOffset % 4 === 0) {
    dst.set(new Float32Array(bytes.buffer, bytes.byteOffset, n));
  } else {
    const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    for (let i = 0; i < n; i++) dst[i] = dv.getFloat32(i * 4, true);
  }
  return dst;
}
