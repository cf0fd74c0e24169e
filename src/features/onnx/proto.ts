// A minimal protobuf writer and the handful of ONNX messages we need (ModelProto, GraphProto, NodeProto,
// AttributeProto, TensorProto, ValueInfoProto), so ONNX graphs can be written from TypeScript with no
// dependency. Messages are built as small trees whose big payloads (weights) are either borrowed byte
// views or writer callbacks; `encodeModel` measures the tree first and then writes it once into one
// preallocated buffer, so a 553 MB VGG16 costs one 553 MB buffer, not several copies.
// Field numbers follow onnx/onnx.proto (IR version 8, default opset 13).

/** A payload written straight into the output buffer at encode time (e.g. a transposed kernel). */
export interface LazyBytes {
  length: number;
  write(target: Uint8Array, offset: number): void;
}

type Field =
  | { no: number; t: 'varint'; v: bigint }
  | { no: number; t: 'f32'; v: number }
  | { no: number; t: 'bytes'; v: Uint8Array }
  | { no: number; t: 'lazy'; v: LazyBytes }
  | { no: number; t: 'packed'; v: bigint[] }
  | { no: number; t: 'msg'; v: Message };

/** A protobuf message: an ordered list of fields (repeated fields simply appear several times). */
export class Message {
  readonly fields: Field[] = [];
  private size = -1;

  varint(no: number, v: number | bigint): this {
    this.fields.push({ no, t: 'varint', v: BigInt(v) });
    return this;
  }
  float(no: number, v: number): this {
    this.fields.push({ no, t: 'f32', v });
    return this;
  }
  string(no: number, s: string): this {
    this.fields.push({ no, t: 'bytes', v: utf8.encode(s) });
    return this;
  }
  bytes(no: number, b: Uint8Array | LazyBytes): this {
    if (b instanceof Uint8Array) this.fields.push({ no, t: 'bytes', v: b });
    else this.fields.push({ no, t: 'lazy', v: b });
    return this;
  }
  packed(no: number, values: readonly (number | bigint)[]): this {
    this.fields.push({ no, t: 'packed', v: values.map((x) => BigInt(x)) });
    return this;
  }
  message(no: number, m: Message): this {
    this.fields.push({ no, t: 'msg', v: m });
    return this;
  }

  /** Encoded size in bytes (memoised; do not add fields after measuring). */
  byteLength(): number {
    if (this.size >= 0) return this.size;
    let n = 0;
    for (const f of this.fields) {
      n += varintLen(BigInt((f.no << 3) | wireType(f)));
      switch (f.t) {
        case 'varint':
          n += varintLen(f.v);
          break;
        case 'f32':
          n += 4;
          break;
        case 'bytes':
          n += varintLen(BigInt(f.v.length)) + f.v.length;
          break;
        case 'lazy':
          n += varintLen(BigInt(f.v.length)) + f.v.length;
          break;
        case 'packed': {
          const body = f.v.reduce((s, x) => s + varintLen(x), 0);
          n += varintLen(BigInt(body)) + body;
          break;
        }
        case 'msg': {
          const body = f.v.byteLength();
          n += varintLen(BigInt(body)) + body;
          break;
        }
      }
    }
    this.size = n;
    return n;
  }

  /** Write into `buf` at `pos`; returns the position after the message. */
  writeTo(buf: Uint8Array, pos: number, view: DataView): number {
    for (const f of this.fields) {
      pos = writeVarint(buf, pos, BigInt((f.no << 3) | wireType(f)));
      switch (f.t) {
        case 'varint':
          pos = writeVarint(buf, pos, f.v);
          break;
        case 'f32':
          view.setFloat32(pos, f.v, true);
          pos += 4;
          break;
        case 'bytes':
          pos = writeVarint(buf, pos, BigInt(f.v.length));
          buf.set(f.v, pos);
          pos += f.v.length;
          break;
        case 'lazy':
          pos = writeVarint(buf, pos, BigInt(f.v.length));
          f.v.write(buf, pos);
          pos += f.v.length;
          break;
        case 'packed': {
          const body = f.v.reduce((s, x) => s + varintLen(x), 0);
          pos = writeVarint(buf, pos, BigInt(body));
          for (const x of f.v) pos = writeVarint(buf, pos, x);
          break;
        }
        case 'msg':
          pos = writeVarint(buf, pos, BigInt(f.v.byteLength()));
          pos = f.v.writeTo(buf, pos, view);
          break;
      }
    }
    return pos;
  }

  /** Encode into a fresh buffer of exactly the right size. */
  encode(): Uint8Array {
    const buf = new Uint8Array(this.byteLength());
    const end = this.writeTo(buf, 0, new DataView(buf.buffer, buf.byteOffset, buf.byteLength));
    if (end !== buf.length) throw new Error(`protobuf writer: wrote ${end} bytes, measured ${buf.length}`);
    return buf;
  }
}

const utf8 = new TextEncoder();

function wireType(f: Field): number {
  return f.t === 'varint' ? 0 : f.t === 'f32' ? 5 : 2;
}

const U64 = (1n << 64n) - 1n;

/** Bytes of a varint; negative values are 64-bit two's complement (10 bytes), as protobuf int64 does. */
export function varintLen(v: bigint): number {
  if (v < 0n) v &= U64;
  let n = 1;
  while (v >= 0x80n) {
    v >>= 7n;
    n++;
  }
  return n;
}

export function writeVarint(buf: Uint8Array, pos: number, v: bigint): number {
  if (v < 0n) v &= U64;
  while (v >= 0x80n) {
    buf[pos++] = Number(v & 0x7fn) | 0x80;
    v >>= 7n;
  }
  buf[pos++] = Number(v);
  return pos;
}

// ---------------------------------------------------------------------------------------------------
// ONNX messages

export const DataType = { FLOAT: 1, UINT8: 2, INT32: 6, INT64: 7 } as const;
const AttrType = { FLOAT: 1, INT: 2, STRING: 3, FLOATS: 6, INTS: 7 } as const;

export type AttrValue = number | string | number[] | { float: number } | { floats: number[] };

/** AttributeProto. Integers become INT, arrays INTS; wrap floats as {float} / {floats}. */
export function attribute(name: string, value: AttrValue): Message {
  const m = new Message().string(1, name);
  if (typeof value === 'number') {
    if (!Number.isInteger(value)) throw new Error(`attribute ${name}: use {float: x} for non-integers`);
    m.varint(3, value).varint(20, AttrType.INT);
  } else if (typeof value === 'string') m.bytes(4, utf8.encode(value)).varint(20, AttrType.STRING);
  else if (Array.isArray(value)) m.packed(8, value).varint(20, AttrType.INTS);
  else if ('float' in value) m.float(2, value.float).varint(20, AttrType.FLOAT);
  else {
    const body = new Uint8Array(value.floats.length * 4);
    const dv = new DataView(body.buffer);
    value.floats.forEach((x, i) => dv.setFloat32(i * 4, x, true));
    m.bytes(7, body).varint(20, AttrType.FLOATS); // packed repeated float
  }
  return m;
}

/** NodeProto. */
export function node(
  opType: string,
  inputs: string[],
  outputs: string[],
  name: string,
  attrs: Record<string, AttrValue> = {},
): Message {
  const m = new Message();
  for (const i of inputs) m.string(1, i);
  for (const o of outputs) m.string(2, o);
  m.string(3, name).string(4, opType);
  for (const [k, v] of Object.entries(attrs)) m.message(5, attribute(k, v));
  return m;
}

/** TensorProto holding raw little-endian data (given bytes, or a lazy writer of dims' product elements). */
export function tensor(name: string, dims: number[], dataType: number, raw: Uint8Array | LazyBytes): Message {
  const m = new Message();
  m.packed(1, dims).varint(2, dataType).string(8, name).bytes(9, raw);
  return m;
}

/** A float32 initializer copied from a Float32Array (little-endian on every host). */
export function floatTensor(name: string, dims: number[], data: Float32Array): Message {
  const count = dims.reduce((a, b) => a * b, 1);
  if (count !== data.length) throw new Error(`tensor ${name}: ${data.length} values for dims [${dims}]`);
  return tensor(name, dims, DataType.FLOAT, float32Bytes(data));
}

/** An int64 initializer (e.g. a Reshape target shape). */
export function int64Tensor(name: string, dims: number[], values: number[]): Message {
  const b = new Uint8Array(values.length * 8);
  const dv = new DataView(b.buffer);
  values.forEach((v, i) => dv.setBigInt64(i * 8, BigInt(v), true));
  return tensor(name, dims, DataType.INT64, b);
}

const littleEndian = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/** A lazy payload of float32 values in little-endian order, written without an intermediate copy on LE hosts. */
export function float32Bytes(data: Float32Array): LazyBytes {
  return {
    length: data.length * 4,
    write(target, offset) {
      if (littleEndian) target.set(new Uint8Array(data.buffer, data.byteOffset, data.byteLength), offset);
      else {
        const dv = new DataView(target.buffer, target.byteOffset + offset, data.length * 4);
        for (let i = 0; i < data.length; i++) dv.setFloat32(i * 4, data[i], true);
      }
    },
  };
}

/** ValueInfoProto of a tensor; a string dim is symbolic (e.g. 'N' for a dynamic batch). */
export function valueInfo(name: string, elemType: number, dims: (number | string)[]): Message {
  const shape = new Message();
  for (const d of dims)
    shape.message(1, typeof d === 'number' ? new Message().varint(1, d) : new Message().string(2, d));
  const tensorType = new Message().varint(1, elemType).message(2, shape);
  const type = new Message().message(1, tensorType);
  return new Message().string(1, name).message(2, type);
}

export interface GraphParts {
  name: string;
  nodes: Message[];
  initializers: Message[];
  inputs: Message[];
  outputs: Message[];
}

/** ModelProto around one GraphProto. */
export function model(graph: GraphParts, opts: { opset?: number; producer?: string; doc?: string } = {}): Message {
  const g = new Message();
  for (const n of graph.nodes) g.message(1, n);
  g.string(2, graph.name);
  for (const t of graph.initializers) g.message(5, t);
  if (opts.doc) g.string(10, opts.doc);
  for (const i of graph.inputs) g.message(11, i);
  for (const o of graph.outputs) g.message(12, o);
  const m = new Message().varint(1, 8); // ir_version 8
  m.string(2, opts.producer ?? 'captioner').string(3, '0.1.0');
  m.message(7, g);
  m.message(8, new Message().string(1, '').varint(2, opts.opset ?? 13));
  return m;
}
