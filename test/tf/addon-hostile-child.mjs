// Run by test/tf/addon-hostile.test.ts in a child process (a crash must not take vitest down):
// `node addon-hostile-child.mjs <addon.node>`. Loads the addon, checks that a valid call of every entry
// point works, then calls every entry point with each hostile value in each argument in turn (the others
// valid), plus the combined size overflows, and prints one JSON report on stdout:
// { exports, covered, cases, returned: [...], wrongKind: [...], heapTouched, baseline: [...] }.
// Every hostile call must throw a TypeError or RangeError of the addon's own ("captioner_native.") before
// it touches memory; OpenBLAS must never get to print its parameter errors (the parent checks stderr).
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const addon = require(process.argv[2]);

// Hostile values by argument kind. Sizes and counts are integers in [0, 2^31 - 1]; offsets and range
// ends are integers whose arrays must lie inside the heap / typed array; floats take any finite float32
// (so 2**62, -1 and fractions are valid for them, and their hostile values are the non-finite ones).
const NOT_NUMBERS = ['1', undefined, null, 10n, {}, true];
const INTEGERS = [2 ** 62, 2 ** 31, 2 ** 53, NaN, Infinity, -Infinity, -1, 0.5, 1.5, -0.5, ...NOT_NUMBERS];
const FLOATS = [NaN, Infinity, -Infinity, 1e39, -1e39, ...NOT_NUMBERS];
const HEAP_BYTES = 4096;

/** Offsets past the heap for an argument of a heap call (every array in the valid calls has >= 2 elements). */
const PAST = [HEAP_BYTES, HEAP_BYTES - 4, HEAP_BYTES + 4, 2 ** 32, 2 ** 32 + 8, 2]; // 2: off a 4-byte boundary

// Valid calls, each a function of a heap (so that hostile calls can use a fresh, pattern-filled one).
// `kinds` says what each argument is: heap, bool, size, off (a heap offset), pos (a range end in a typed
// array, with the array's length), float, f32 / f64 (typed arrays), paths.
const f32 = (n) => new Float32Array(n).fill(0.25);
const entries = {
  load: { kinds: ['paths', 'size'], args: () => [['libopenblas.so.0', 'libopenblas.so'], 0] },
  setThreads: { kinds: ['size'], args: () => [1], extra: [0, 1025] },
  shareThreads: { kinds: ['size'], args: () => [0], extra: [-1, 1025] },
  threadInfo: { kinds: [], args: () => [] },
  // A [2, 4] at 0, B [4, 3] at 64, C [2, 3] at 128
  sgemm: {
    kinds: [
      'heap',
      'bool',
      'bool',
      'size',
      'size',
      'size',
      'float',
      'off',
      'size',
      'off',
      'size',
      'float',
      'off',
      'size',
    ],
    args: (h) => [h, false, false, 2, 3, 4, 1, 0, 4, 64, 3, 0, 128, 3],
  },
  // z [2, 4] at 0, bias [4] at 64, targets [2] at 96, d [2, 4] at 128, db [4] at 192
  xent: {
    kinds: ['heap', 'off', 'off', 'off', 'size', 'size', 'float', 'off', 'off'],
    args: (h) => [h, 0, 64, 96, 2, 4, 0.5, 128, 192],
  },
  sumSquares: { kinds: ['heap', 'off', 'size'], args: (h) => [h, 0, 8] },
  // x g m v [4] at 0, 32, 64, 96; outputs at 128, 160, 192
  adam: {
    kinds: [
      'heap',
      'off',
      'off',
      'off',
      'off',
      'size',
      'float',
      'float',
      'float',
      'float',
      'float',
      'off',
      'off',
      'off',
    ],
    args: (h) => [h, 0, 32, 64, 96, 4, 1, 0.9, 0.999, 0.001, 1e-8, 128, 160, 192],
  },
  // grads: 2 regions of 8; sums: 2 blocks of 4
  reduceBlocks: {
    kinds: ['f32', 'size', 'size', 'pos', 'pos', 'size', 'f64'],
    args: () => [f32(16), 8, 2, 0, 8, 4, new Float64Array(2)],
    extra: [
      [2, 0],
      [5, 0],
    ],
  },
  adamArrays: {
    kinds: ['f32', 'f32', 'f32', 'f32', 'pos', 'pos', 'float', 'float', 'float', 'float', 'float'],
    args: () => [f32(8), f32(8), f32(8), f32(8), 0, 8, 1, 0.9, 0.999, 0.001, 1e-8],
  },
  copy: { kinds: ['f32', 'f32'], args: () => [f32(4), f32(4)] },
  // enc [2, 3, 4] at 0, att [2, 4] at 128, w [4] at 192, s [2, 3] at 256
  attn: {
    kinds: ['heap', 'off', 'off', 'off', 'size', 'size', 'size', 'off'],
    args: (h) => [h, 0, 128, 192, 2, 3, 4, 256],
  },
  // ... ds [2, 3] at 256, dEnc at 512, dAtt at 640, dw at 704
  attnGrad: {
    kinds: ['heap', 'off', 'off', 'off', 'off', 'size', 'size', 'size', 'off', 'off', 'off'],
    args: (h) => [h, 0, 128, 192, 256, 2, 3, 4, 512, 640, 704],
  },
  // zx rec [2, 8] at 0, 64; c [2, 2] at 128; h, c2 at 192, 224
  lstm: {
    kinds: ['heap', 'off', 'off', 'off', 'size', 'size', 'off', 'off'],
    args: (h) => [h, 0, 64, 128, 2, 2, 192, 224],
  },
  // zx rec [2, 8] at 0, 64; c c2 dh dc2 [2, 2] at 128, 144, 160, 176; dz [2, 8] at 256; dc at 320
  lstmGrad: {
    kinds: ['heap', 'off', 'off', 'off', 'off', 'off', 'off', 'size', 'size', 'off', 'off'],
    args: (h) => [h, 0, 64, 128, 144, 160, 176, 2, 2, 256, 320],
  },
};

function hostileFor(kind, args, i) {
  switch (kind) {
    case 'size':
      return INTEGERS;
    case 'off':
      return [...INTEGERS, ...PAST];
    case 'pos': {
      const arr = args.find((a) => a instanceof Float32Array);
      return [...INTEGERS, arr.length + 1, 2 ** 32];
    }
    case 'float':
      return FLOATS;
    case 'bool':
      return [0, 1, 'true', undefined, null];
    case 'heap':
      return [new Float32Array(HEAP_BYTES / 4), new SharedArrayBuffer(HEAP_BYTES), new ArrayBuffer(0), 0, undefined];
    case 'f32':
      return [new Float64Array(64), new Float32Array(1), [0, 1, 2, 3], 0, undefined];
    case 'f64':
      return [new Float32Array(64), new Float64Array(1), 0, undefined];
    case 'paths':
      return ['libopenblas.so.0', 5, [5], [{}], ['x'.repeat(5000)], new Array(17).fill('x'), undefined];
    default:
      throw new Error(`no hostile values for ${kind} (argument ${i})`);
  }
}

const show = (v) =>
  typeof v === 'bigint'
    ? `${v}n`
    : v instanceof ArrayBuffer
      ? `ArrayBuffer(${v.byteLength})`
      : ArrayBuffer.isView(v)
        ? `${v.constructor.name}(${v.length})`
        : typeof v === 'number'
          ? String(v)
          : (JSON.stringify(v) ?? String(v));

function freshHeap() {
  const h = new ArrayBuffer(HEAP_BYTES);
  const u = new Uint8Array(h);
  for (let i = 0; i < u.length; i++) u[i] = (i * 7 + 3) & 0x3f; // small positive floats, no NaN patterns
  return h;
}

const report = {
  exports: Object.getOwnPropertyNames(addon)
    .filter((k) => typeof addon[k] === 'function')
    .sort(),
  covered: Object.keys(entries).sort(),
  cases: 0,
  returned: [],
  wrongKind: [],
  heapTouched: [],
  baseline: [],
};

// every valid call works (or the hostile cases would prove nothing)
const loaded = addon.load(...entries.load.args());
if (!loaded.ok) {
  process.stdout.write(JSON.stringify({ ...report, noBlas: loaded.reason }));
  process.exit(0);
}
for (const [name, e] of Object.entries(entries)) {
  try {
    addon[name](...e.args(freshHeap()));
  } catch (err) {
    report.baseline.push(`${name}: ${err.message}`);
  }
}

function attempt(label, name, args, heap) {
  report.cases++;
  const before = heap ? Buffer.from(heap) : undefined;
  try {
    addon[name](...args);
    report.returned.push(label);
  } catch (err) {
    if (
      !(err instanceof TypeError || err instanceof RangeError) ||
      !String(err.message).startsWith(`captioner_native.${name}:`)
    ) {
      report.wrongKind.push(`${label}: ${err?.constructor?.name}: ${err?.message}`);
    }
  }
  if (heap && heap.byteLength === before.length && !Buffer.from(heap).equals(before)) report.heapTouched.push(label);
}

for (const [name, e] of Object.entries(entries)) {
  const base = e.args(freshHeap());
  // each argument in turn
  e.kinds.forEach((kind, i) => {
    for (const bad of hostileFor(kind, base, i)) {
      const heap = freshHeap();
      const args = e.args(heap);
      args[i] = bad;
      attempt(`${name} arg ${i} (${kind}) = ${show(bad)}`, name, args, heap);
    }
  });
  // values bad for this entry point only
  for (const extra of e.extra ?? []) {
    const [i, v] = Array.isArray(extra) ? extra : [0, extra];
    const heap = freshHeap();
    const args = e.args(heap);
    args[i] = v;
    attempt(`${name} arg ${i} = ${show(v)}`, name, args, heap);
  }
  // one argument too few, one too many
  if (base.length) attempt(`${name} with an argument missing`, name, base.slice(0, -1));
  attempt(`${name} with an extra argument`, name, [...base, 0]);
}

// Sizes that overflow together: every size of a heap entry point set at once (the reported crashes were
// sumSquares(heap, 0, 2**62), adam(..., n = 2**62, ...) and lstm(..., N = U = 2**31, ...)).
for (const [name, e] of Object.entries(entries)) {
  if (e.kinds[0] !== 'heap') continue;
  for (const big of [2 ** 31 - 1, 2 ** 31, 2 ** 30, 2 ** 16 + 1, 2 ** 62]) {
    const heap = freshHeap();
    const args = e.args(heap).map((a, i) => (e.kinds[i] === 'size' ? big : a));
    attempt(`${name} with every size = ${big}`, name, args, heap);
  }
}

// Outputs overlapping inputs (beyond the documented in-place uses)
const overlaps = [
  ['sgemm', 12, 0],
  ['sgemm', 12, 64],
  ['xent', 7, 4],
  ['xent', 8, 0],
  ['xent', 8, 128],
  ['adam', 11, 32],
  ['adam', 12, 0],
  ['adam', 13, 128],
  ['attn', 7, 0],
  ['attnGrad', 8, 4],
  ['attnGrad', 10, 512],
  ['lstm', 6, 64],
  ['lstm', 7, 192],
  ['lstmGrad', 9, 4],
  ['lstmGrad', 10, 256],
];
for (const [name, i, v] of overlaps) {
  const heap = freshHeap();
  const args = entries[name].args(heap);
  args[i] = v;
  attempt(`${name} arg ${i} = ${v} (overlap)`, name, args, heap);
}
// host arrays sharing memory
{
  const buf = new Float32Array(32);
  attempt('adamArrays with w and m overlapping', 'adamArrays', [
    buf.subarray(0, 8),
    buf.subarray(4, 12),
    f32(8),
    f32(8),
    0,
    8,
    1,
    0.9,
    0.999,
    0.001,
    1e-8,
  ]);
  const ab = new ArrayBuffer(256);
  attempt('reduceBlocks with sums inside grads', 'reduceBlocks', [
    new Float32Array(ab, 0, 16),
    8,
    2,
    0,
    8,
    4,
    new Float64Array(ab, 0, 2),
  ]);
  attempt('shareThreads below zero workers', 'shareThreads', [-1]);
}

process.stdout.write(JSON.stringify(report));
