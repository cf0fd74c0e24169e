// Which external data files an ONNX model keeps its weights in (models over 2 GB must, and some exporters
// always do): a minimal protobuf reader that walks ModelProto.graph.initializer and reads each
// TensorProto's external_data "location" when data_location is EXTERNAL. Payloads are skipped by length,
// never copied. Field numbers follow onnx/onnx.proto (the writer is proto.ts).
import { ModelError } from '../../errors.js';

type Visit = (field: number, wire: number, value: number | Uint8Array) => void;

/** Walk the fields of one message; length-delimited values are views into `buf`. */
function fields(buf: Uint8Array, visit: Visit): void {
  let pos = 0;
  const varint = (): number => {
    let result = 0;
    let mul = 1;
    for (let i = 0; i < 10; i++) {
      if (pos >= buf.length) throw new RangeError('truncated varint');
      const b = buf[pos++];
      result += (b & 0x7f) * mul;
      if (!(b & 0x80)) return result;
      mul *= 128;
    }
    throw new RangeError('varint too long');
  };
  while (pos < buf.length) {
    const key = varint();
    const field = Math.floor(key / 8);
    const wire = key & 7;
    if (wire === 0) visit(field, wire, varint());
    else if (wire === 1) pos += 8;
    else if (wire === 5) pos += 4;
    else if (wire === 2) {
      const len = varint();
      if (pos + len > buf.length) throw new RangeError('truncated field');
      visit(field, wire, buf.subarray(pos, pos + len));
      pos += len;
    } else throw new RangeError(`wire type ${wire}`);
  }
  if (pos > buf.length) throw new RangeError('truncated message');
}

const utf8 = new TextDecoder();

/**
 * The external data locations (relative to the model file's folder) of the model's initializers, in
 * first-seen order without repeats; [] for a model that holds all its weights. Bytes that do not parse
 * as a protobuf give [] (onnxruntime then says the file is not an ONNX model).
 */
export function externalDataFiles(model: Uint8Array): string[] {
  const out = new Set<string>();
  try {
    fields(model, (f, w, graph) => {
      if (f !== 7 || w !== 2) return; // ModelProto.graph
      fields(graph as Uint8Array, (g, gw, tensor) => {
        if (g !== 5 || gw !== 2) return; // GraphProto.initializer
        let external = false;
        let location: string | undefined;
        fields(tensor as Uint8Array, (t, tw, v) => {
          if (t === 14 && tw === 0) external = v === 1; // data_location: EXTERNAL
          if (t === 13 && tw === 2) {
            // external_data: StringStringEntryProto { key = 1, value = 2 }
            let key = '';
            let value = '';
            fields(v as Uint8Array, (e, ew, s) => {
              if (ew !== 2) return;
              if (e === 1) key = utf8.decode(s as Uint8Array);
              if (e === 2) value = utf8.decode(s as Uint8Array);
            });
            if (key === 'location') location = value;
          }
        });
        if (external && location !== undefined) out.add(location);
      });
    });
  } catch (e) {
    if (e instanceof RangeError) return [];
    throw e;
  }
  return [...out];
}

/** Refuse a location that leaves the model's folder (onnxruntime refuses it too, less clearly). */
export function checkExternalLocation(file: string, location: string): void {
  if (location.startsWith('/') || location.split(/[\\/]/).includes('..')) {
    throw new ModelError(
      `${file}: its weights are in an external data file outside the model's folder ("${location}"); keep external data files next to the model file`,
    );
  }
}
