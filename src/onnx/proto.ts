/**
 * ONNX protobuf schema (the `onnx-proto` package: protobufjs static code for onnx.proto) and the few
 * conversions every reader needs. Decoding gives views into the input buffer, never copies.
 */
import onnxProto from 'onnx-proto';

export const onnx = onnxProto.onnx;
export type ModelProto = onnxProto.onnx.ModelProto;
export type GraphProto = onnxProto.onnx.IGraphProto;
export type NodeProto = onnxProto.onnx.INodeProto;
export type TensorProto = onnxProto.onnx.ITensorProto;
export type ValueInfoProto = onnxProto.onnx.IValueInfoProto;
export type AttributeProto = onnxProto.onnx.IAttributeProto;

/** ONNX TensorProto.DataType values used in this project. */
export const DataType = Object.freeze({
  FLOAT: 1,
  UINT8: 2,
  INT8: 3,
  INT32: 6,
  INT64: 7,
  BOOL: 9,
  FLOAT16: 10,
  DOUBLE: 11,
  UINT16: 4,
  INT16: 5,
  STRING: 8,
  UINT32: 12,
  UINT64: 13,
  BFLOAT16: 16,
} as const);

export const DATA_TYPE_NAMES: Readonly<Record<number, string>> = Object.freeze({
  1: 'float32',
  2: 'uint8',
  3: 'int8',
  6: 'int32',
  7: 'int64',
  9: 'bool',
  10: 'float16',
  11: 'float64',
  4: 'uint16',
  5: 'int16',
  8: 'string',
  12: 'uint32',
  13: 'uint64',
  16: 'bfloat16',
});

export const DATA_TYPE_BYTES: Readonly<Record<number, number>> = Object.freeze({
  1: 4,
  2: 1,
  3: 1,
  6: 4,
  7: 8,
  9: 1,
  10: 2,
  11: 8,
  4: 2,
  5: 2,
  12: 4,
  13: 8,
  16: 2,
});

/** protobufjs returns int64 fields as Long objects (or numbers); make them numbers. */
export function toNumber(v: number | { toNumber(): number } | null | undefined): number {
  if (v === null || v === undefined) return 0;
  return typeof v === 'number' ? v : v.toNumber();
}

export function decodeModel(bytes: Uint8Array): ModelProto {
  return onnx.ModelProto.decode(bytes);
}

export function encodeModel(model: onnxProto.onnx.IModelProto): Uint8Array {
  return onnx.ModelProto.encode(model).finish();
}
