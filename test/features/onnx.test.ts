// The hand-written ONNX protobuf writer and the VGG16 graph, checked by running them in onnxruntime
// against plain-JS arithmetic.
import { describe, expect, it } from 'vitest';
import {
  DataType,
  Message,
  floatTensor,
  model,
  node,
  valueInfo,
  varintLen,
  writeVarint,
} from '../../src/features/onnx/proto.js';
import { createSession, floatTensor as ortTensor } from '../../src/features/onnx/runtime.js';
import { rng } from '../../src/util/random.js';

describe('protobuf writer', () => {
  it('encodes varints like protobuf (negative int64 as 10 bytes)', () => {
    const cases: [bigint, number[]][] = [
      [0n, [0]],
      [1n, [1]],
      [127n, [0x7f]],
      [128n, [0x80, 0x01]],
      [300n, [0xac, 0x02]],
      [-1n, [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]],
    ];
    for (const [v, bytes] of cases) {
      const buf = new Uint8Array(12);
      const end = writeVarint(buf, 0, v);
      expect(Array.from(buf.slice(0, end))).toEqual(bytes);
      expect(varintLen(v)).toBe(bytes.length);
    }
  });
  it('measures exactly what it writes, nested messages included', () => {
    const inner = new Message().varint(1, 150).string(2, 'testing');
    const m = new Message()
      .message(3, inner)
      .float(4, 1.5)
      .packed(5, [1, 300, -2])
      .bytes(6, new Uint8Array([9, 9]));
    const buf = m.encode();
    expect(buf.length).toBe(m.byteLength());
    // field 3, wire type 2, then length of the inner message, then field 1 varint 150 = 08 96 01
    expect(Array.from(buf.slice(0, 5))).toEqual([0x1a, inner.byteLength(), 0x08, 0x96, 0x01]);
  });
});

describe('a tiny ONNX model written by our writer', () => {
  it('runs in onnxruntime: 1x1 Conv + GlobalAveragePool + Flatten, dynamic batch', async () => {
    const r = rng(7);
    const W = Float32Array.from({ length: 4 * 3 }, () => r() - 0.5); // [4, 3, 1, 1]
    const B = Float32Array.from({ length: 4 }, () => r() - 0.5);
    const bytes = model({
      name: 'tiny',
      nodes: [
        node('Conv', ['x', 'W', 'B'], ['c'], 'conv', { kernel_shape: [1, 1] }),
        node('GlobalAveragePool', ['c'], ['g'], 'gap'),
        node('Flatten', ['g'], ['y'], 'flat', { axis: 1 }),
      ],
      initializers: [floatTensor('W', [4, 3, 1, 1], W), floatTensor('B', [4], B)],
      inputs: [valueInfo('x', DataType.FLOAT, ['N', 3, 5, 6])],
      outputs: [valueInfo('y', DataType.FLOAT, ['N', 4])],
    }).encode();
    const session = await createSession(bytes, { threads: 1 });
    try {
      const n = 3;
      const x = Float32Array.from({ length: n * 3 * 30 }, () => r() * 2 - 1);
      const out = await session.run({ x: await ortTensor(x, [n, 3, 5, 6]) });
      const y = out.y.data as Float32Array;
      expect(out.y.dims).toEqual([n, 4]);
      for (let b = 0; b < n; b++)
        for (let o = 0; o < 4; o++) {
          let s = 0;
          for (let p = 0; p < 30; p++) {
            let v = B[o];
            for (let c = 0; c < 3; c++) v += W[o * 3 + c] * x[(b * 3 + c) * 30 + p];
            s += v;
          }
          expect(y[b * 4 + o]).toBeCloseTo(s / 30, 5);
        }
    } finally {
      await session.release();
    }
  });
});
