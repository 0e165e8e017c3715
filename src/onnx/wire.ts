/**
 * Protobuf wire-level views of an ONNX file: where each field of a ModelProto, its GraphProto and
 * the graph's initializer TensorProtos lie in the file. Needed for what the decoded objects cannot
 * give: reading a model without its weights (raw_data payloads skipped by length), the absolute
 * byte range of a tensor's `raw_data` payload (to read it, or patch it in place), and splicing a
 * re-encoded TensorProto into the file while every other byte, unknown fields included, stays as
 * it was.
 *
 * Field numbers (onnx.proto):
 *   ModelProto:  7 graph
 *   GraphProto:  5 initializer (repeated TensorProto)
 *   TensorProto: 1 dims, 2 data_type, 4 float_data, 5 int32_data, 7 int64_data, 8 name, 9 raw_data,
 *                10 double_data, 11 uint64_data, 13 external_data, 14 data_location
 */
import type { FileCursor } from './file-cursor.js';

export const WIRE = Object.freeze({ VARINT: 0, FIXED64: 1, BYTES: 2, FIXED32: 5 });

export const MODEL_GRAPH_FIELD = 7;
export const GRAPH_INITIALIZER_FIELD = 5;
export const TENSOR_FIELDS = Object.freeze({
  dims: 1,
  dataType: 2,
  floatData: 4,
  int32Data: 5,
  int64Data: 7,
  name: 8,
  rawData: 9,
  doubleData: 10,
  uint64Data: 11,
  externalData: 13,
  dataLocation: 14,
});
/** The TensorProto fields that hold element values (typed or raw). */
export const VALUE_FIELDS: ReadonlySet<number> = new Set([4, 5, 7, 9, 10, 11]);

/** One field occurrence: [start, end) covers tag + (length) + payload; payload is [dataStart, end). */
export interface FieldSpan {
  field: number;
  wireType: number;
  start: number;
  dataStart: number;
  end: number;
}

/** Wire layout of one initializer TensorProto inside the model file. */
export interface TensorWireLayout {
  /** The `initializer` field occurrence in the GraphProto (tag, length, message). */
  span: FieldSpan;
  /** Name as stored (field 8), decoded as UTF-8. */
  name: string;
  /** The raw_data payload, when the tensor has one. */
  rawData?: { offset: number; length: number };
  /** The fields of the TensorProto message, in order. */
  fields: FieldSpan[];
}

export interface ModelWireLayout {
  /** Top-level ModelProto fields. */
  modelFields: FieldSpan[];
  /** GraphProto occurrences (protobuf merges repeated occurrences; exporters write one). */
  graphs: { span: FieldSpan; fields: FieldSpan[] }[];
  /** Initializers in decode order (graph occurrence order, then field order). */
  initializers: TensorWireLayout[];
}

const utf8 = new TextDecoder('utf-8');

/**
 * Walk a ModelProto file at wire level with positioned reads (`c`, a cursor over the file): the
 * wire layout of the model, its graphs and the graphs' initializers (absolute file offsets), and
 * the model's bytes with every initializer's raw_data field left out — everything else (nodes,
 * inputs/outputs, value_info, the other tensor fields, unknown fields) verbatim, lengths
 * re-encoded — to decode. raw_data payloads are skipped by their length, never read.
 */
export function scanModelFile(c: FileCursor): { layout: ModelWireLayout; stripped: Uint8Array } {
  const modelFields: FieldSpan[] = [];
  const graphs: ModelWireLayout['graphs'] = [];
  const initializers: TensorWireLayout[] = [];
  const model = new Pieces();
  c.pos = 0;
  while (c.pos < c.size) {
    const span = c.field(c.size);
    modelFields.push(span);
    if (span.field !== MODEL_GRAPH_FIELD || span.wireType !== WIRE.BYTES) {
      model.push(c.bytes(span.start, span.end));
      continue;
    }
    const fields: FieldSpan[] = [];
    const graph = new Pieces();
    c.pos = span.dataStart;
    while (c.pos < span.end) {
      const g = c.field(span.end);
      fields.push(g);
      if (g.field !== GRAPH_INITIALIZER_FIELD || g.wireType !== WIRE.BYTES) {
        graph.push(c.bytes(g.start, g.end));
        continue;
      }
      const tensorFields: FieldSpan[] = [];
      const tensor = new Pieces();
      let name = '';
      let rawData: TensorWireLayout['rawData'];
      c.pos = g.dataStart;
      while (c.pos < g.end) {
        const t = c.field(g.end);
        tensorFields.push(t);
        if (t.field === TENSOR_FIELDS.rawData && t.wireType === WIRE.BYTES) {
          // protobuf: the last occurrence of a non-repeated field wins.
          rawData = { offset: t.dataStart, length: t.end - t.dataStart };
          continue;
        }
        const bytes = c.bytes(t.start, t.end);
        if (t.field === TENSOR_FIELDS.name && t.wireType === WIRE.BYTES)
          name = utf8.decode(bytes.subarray(t.dataStart - t.start));
        tensor.push(bytes);
      }
      initializers.push({ span: g, name, rawData, fields: tensorFields });
      graph.push(lengthDelimitedHeader(GRAPH_INITIALIZER_FIELD, tensor.byteLength)).append(tensor);
    }
    graphs.push({ span, fields });
    model.push(lengthDelimitedHeader(MODEL_GRAPH_FIELD, graph.byteLength)).append(graph);
  }
  return { layout: { modelFields, graphs, initializers }, stripped: model.join() };
}

/** Varint encoding of a non-negative integer below 2^53. */
export function encodeVarint(value: number): Uint8Array {
  if (!Number.isSafeInteger(value) || value < 0)
    throw new RangeError(`varint: ${value} is not a non-negative safe integer`);
  const out: number[] = [];
  let v = value;
  while (v >= 0x80) {
    out.push((v % 0x80) | 0x80);
    v = Math.floor(v / 0x80);
  }
  out.push(v);
  return Uint8Array.from(out);
}

/** Tag + length prefix of a length-delimited field. */
export function lengthDelimitedHeader(field: number, length: number): Uint8Array {
  const tag = encodeVarint(field * 8 + WIRE.BYTES);
  const len = encodeVarint(length);
  const out = new Uint8Array(tag.byteLength + len.byteLength);
  out.set(tag, 0);
  out.set(len, tag.byteLength);
  return out;
}

/** A byte sequence built from pieces (views into the source or new small headers), joined once. */
export class Pieces {
  readonly parts: Uint8Array[] = [];
  byteLength = 0;
  push(part: Uint8Array): this {
    this.parts.push(part);
    this.byteLength += part.byteLength;
    return this;
  }
  append(other: Pieces): this {
    for (const p of other.parts) this.push(p);
    return this;
  }
  join(): Uint8Array {
    const out = new Uint8Array(this.byteLength);
    let at = 0;
    for (const p of this.parts) {
      out.set(p, at);
      at += p.byteLength;
    }
    return out;
  }
}
