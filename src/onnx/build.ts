/**
 * Build ONNX models in code: the project's tiny real-format models (tests, demo world) and the
 * small helper graphs run through the runtime seam (GEMM). Produces exactly what the exporters
 * produce: named nodes, anonymous initializers, inline or external data (`weights.pb`,
 * `model.onnx_data`) with `location`/`offset`/`length` entries.
 */
import { closeSync, mkdirSync, openSync, renameSync, writeFileSync, writeSync } from 'node:fs';
import { dirname, join } from 'node:path';
import type onnxProto from 'onnx-proto';
import { floatToHalfBits, toHalf } from '../util/half.js';
import { DataType, decodeModel, encodeModel, onnx } from './proto.js';
import { GRAPH_INITIALIZER_FIELD, lengthDelimitedHeader, MODEL_GRAPH_FIELD, TENSOR_FIELDS } from './wire.js';

export type ElemType = 'float32' | 'float16' | 'float64' | 'int32' | 'int64' | 'bool' | 'uint8';
const ELEM: Record<ElemType, number> = {
  float32: DataType.FLOAT,
  float16: DataType.FLOAT16,
  float64: DataType.DOUBLE,
  int32: DataType.INT32,
  int64: DataType.INT64,
  bool: DataType.BOOL,
  uint8: DataType.UINT8,
};

export type AttrValue =
  | number
  | string
  | number[]
  | string[]
  | { tensor: onnxProto.onnx.ITensorProto }
  | { float: number };

interface PendingInitializer {
  name: string;
  dataType: number;
  dims: number[];
  bytes: Uint8Array;
}

export interface SaveOptions {
  /** Store initializers of at least `threshold` bytes in this file next to the model (e.g. 'weights.pb'). */
  externalData?: { location: string; threshold?: number; align?: number };
  opset?: number;
  irVersion?: number;
  producerName?: string;
}

function bytesOf(data: ArrayBufferView): Uint8Array {
  return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
}

export class GraphBuilder {
  readonly nodes: onnxProto.onnx.INodeProto[] = [];
  readonly inputs: onnxProto.onnx.IValueInfoProto[] = [];
  readonly outputs: onnxProto.onnx.IValueInfoProto[] = [];
  readonly initializers: PendingInitializer[] = [];
  private counter = 0;

  constructor(readonly name = 'main_graph') {}

  /** A fresh value name, like the exporter's `/down_blocks.0/.../Add_output_0`. */
  fresh(prefix: string): string {
    return `${prefix}_${this.counter++}`;
  }

  input(name: string, type: ElemType, shape: (number | string)[]): string {
    this.inputs.push(valueInfo(name, type, shape));
    return name;
  }

  output(name: string, type: ElemType, shape: (number | string)[]): string {
    this.outputs.push(valueInfo(name, type, shape));
    return name;
  }

  /**
   * Add an initializer. float32 data stored as float16 when `type` is 'float16'.
   * int64 data may be given as number[] / BigInt64Array.
   */
  initializer(
    name: string,
    type: ElemType,
    dims: number[],
    data: ArrayLike<number> | BigInt64Array | ArrayBufferView,
  ): string {
    let bytes: Uint8Array;
    if (type === 'float16') {
      bytes = data instanceof Uint16Array ? bytesOf(data) : bytesOf(toHalf(data as ArrayLike<number>));
    } else if (type === 'float32') {
      bytes = bytesOf(data instanceof Float32Array ? data : Float32Array.from(data as ArrayLike<number>));
    } else if (type === 'float64') {
      bytes = bytesOf(data instanceof Float64Array ? data : Float64Array.from(data as ArrayLike<number>));
    } else if (type === 'int64') {
      bytes = bytesOf(
        data instanceof BigInt64Array
          ? data
          : BigInt64Array.from(Array.from(data as ArrayLike<number>, (v) => BigInt(v))),
      );
    } else if (type === 'int32') {
      bytes = bytesOf(data instanceof Int32Array ? data : Int32Array.from(data as ArrayLike<number>));
    } else {
      bytes = bytesOf(data instanceof Uint8Array ? data : Uint8Array.from(data as ArrayLike<number>));
    }
    const count = dims.reduce((a, b) => a * b, 1);
    const expected =
      count * ({ float32: 4, float16: 2, float64: 8, int64: 8, int32: 4, bool: 1, uint8: 1 } as const)[type];
    if (bytes.byteLength !== expected) {
      throw new Error(
        `initializer ${name}: ${bytes.byteLength} bytes for dims [${dims}] of ${type} (expected ${expected})`,
      );
    }
    this.initializers.push({ name, dataType: ELEM[type], dims, bytes: new Uint8Array(bytes) });
    return name;
  }

  /** Add a node; returns its first output name. */
  node(
    opType: string,
    inputs: string[],
    outputs: string[] | number = 1,
    attrs: Record<string, AttrValue> = {},
    name?: string,
  ): string {
    const nodeName = name ?? this.fresh(`/${opType}`);
    const outs =
      typeof outputs === 'number' ? Array.from({ length: outputs }, (_, i) => `${nodeName}_output_${i}`) : outputs;
    this.nodes.push({
      name: nodeName,
      opType,
      input: inputs,
      output: outs,
      attribute: Object.entries(attrs).map(([k, v]) => attribute(k, v)),
    });
    return outs[0] as string;
  }

  /** Encode to a ModelProto; initializers over the threshold are laid out in `external`. */
  toModel(options: SaveOptions = {}): { model: Uint8Array; external?: Uint8Array } {
    const ext = options.externalData;
    const threshold = ext?.threshold ?? 1024;
    const align = ext?.align ?? 1;
    const chunks: Uint8Array[] = [];
    let offset = 0;
    const initializer: onnxProto.onnx.ITensorProto[] = this.initializers.map((t) => {
      if (ext && t.bytes.byteLength >= threshold) {
        const pad = (align - (offset % align)) % align;
        if (pad) {
          chunks.push(new Uint8Array(pad));
          offset += pad;
        }
        chunks.push(t.bytes);
        const entry = {
          name: t.name,
          dims: t.dims,
          dataType: t.dataType,
          dataLocation: 1, // EXTERNAL
          externalData: [
            { key: 'location', value: ext.location },
            { key: 'offset', value: String(offset) },
            { key: 'length', value: String(t.bytes.byteLength) },
          ],
        };
        offset += t.bytes.byteLength;
        return entry;
      }
      return { name: t.name, dims: t.dims, dataType: t.dataType, rawData: t.bytes };
    });
    const model = encodeModel({
      irVersion: options.irVersion ?? 8,
      producerName: options.producerName ?? 'time-debias',
      opsetImport: [{ domain: '', version: options.opset ?? 14 }],
      graph: { name: this.name, node: this.nodes, input: this.inputs, output: this.outputs, initializer },
    });
    if (!ext) return { model };
    const external = new Uint8Array(offset);
    let at = 0;
    for (const c of chunks) {
      external.set(c, at);
      at += c.byteLength;
    }
    return { model, external };
  }

  /** Write `dir/fileName` (and its external data file, if any). */
  save(dir: string, fileName = 'model.onnx', options: SaveOptions = {}): void {
    mkdirSync(dir, { recursive: true });
    const { model, external } = this.toModel(options);
    writeFileSync(join(dir, fileName), model);
    if (external && options.externalData) writeFileSync(join(dir, options.externalData.location), external);
  }
}

function valueInfo(name: string, type: ElemType, shape: (number | string)[]): onnxProto.onnx.IValueInfoProto {
  return {
    name,
    type: {
      tensorType: {
        elemType: ELEM[type],
        shape: { dim: shape.map((d) => (typeof d === 'number' ? { dimValue: d } : { dimParam: d })) },
      },
    },
  };
}

function attribute(name: string, v: AttrValue): onnxProto.onnx.IAttributeProto {
  // AttributeType: FLOAT=1 INT=2 STRING=3 TENSOR=4 FLOATS=6 INTS=7 STRINGS=8
  if (typeof v === 'number') return { name, type: 2, i: v };
  if (typeof v === 'string') return { name, type: 3, s: new TextEncoder().encode(v) };
  if (Array.isArray(v)) {
    if (v.every((x) => typeof x === 'number')) return { name, type: 7, ints: v as number[] };
    return { name, type: 8, strings: (v as string[]).map((s) => new TextEncoder().encode(s)) };
  }
  if ('float' in v) return { name, type: 1, f: v.float };
  return { name, type: 4, t: v.tensor };
}

/** Bulk float16 initializers for {@link writeInlineModel}: `count` tensors `prefix.<i>` of `dims`. */
export interface InlineBulk {
  prefix: string;
  count: number;
  dims: number[];
}

/**
 * Write the model of `g` to `path` with `bulk.count` more float16 initializers stored inline
 * (raw_data), streamed tensor by tensor so the file is never whole in memory: the layout of an
 * Optimum/diffusers fp16 UNet below protobuf's 2 GB (graph fields in field-number order: nodes,
 * name, initializers, then inputs/outputs/value_info). Tensor i holds {@link bulkTensorBytes}(bulk, i).
 * Written to a temporary name and renamed. Returns the file size and the bulk tensor names.
 */
export function writeInlineModel(
  path: string,
  g: GraphBuilder,
  bulk: InlineBulk,
  options: Omit<SaveOptions, 'externalData'> = {},
): { size: number; names: string[] } {
  const model = decodeModel(g.toModel(options).model);
  const graph = model.graph as onnxProto.onnx.GraphProto;
  const head = onnx.GraphProto.encode({ node: graph.node, name: graph.name, initializer: graph.initializer }).finish();
  const tail = onnx.GraphProto.encode({
    input: graph.input,
    output: graph.output,
    valueInfo: graph.valueInfo,
  }).finish();
  const payloadBytes = bulk.dims.reduce((a, b) => a * b, 1) * 2;
  const names = Array.from({ length: bulk.count }, (_, i) => `${bulk.prefix}.${i}`);
  const tensorHeads = names.map((name) => {
    const fields = onnx.TensorProto.encode({ name, dims: bulk.dims, dataType: DataType.FLOAT16 }).finish();
    const raw = lengthDelimitedHeader(TENSOR_FIELDS.rawData, payloadBytes);
    const tensorLength = fields.byteLength + raw.byteLength + payloadBytes;
    return [lengthDelimitedHeader(GRAPH_INITIALIZER_FIELD, tensorLength), fields, raw];
  });
  const graphLength =
    head.byteLength +
    tail.byteLength +
    tensorHeads.reduce((n, parts) => n + parts.reduce((m, p) => m + p.byteLength, 0) + payloadBytes, 0);
  model.graph = null;
  const base = onnx.ModelProto.encode(model).finish();
  mkdirSync(dirname(path), { recursive: true });
  const tmp = `${path}.tmp-${process.pid}`;
  const fd = openSync(tmp, 'w');
  let size = 0;
  const write = (bytes: Uint8Array) => {
    let done = 0;
    while (done < bytes.byteLength) done += writeSync(fd, bytes, done, bytes.byteLength - done);
    size += bytes.byteLength;
  };
  try {
    write(base);
    write(lengthDelimitedHeader(MODEL_GRAPH_FIELD, graphLength));
    write(head);
    const block = bulkTensorBytes(bulk, 0);
    tensorHeads.forEach((parts, i) => {
      for (const p of parts) write(p);
      new DataView(block.buffer).setUint32(0, i, true);
      write(block);
    });
    write(tail);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, path);
  return { size, names };
}

/** The raw_data of bulk tensor `i` written by {@link writeInlineModel}: a fixed float16 pattern, i in its first 4 bytes. */
export function bulkTensorBytes(bulk: InlineBulk, i: number): Uint8Array {
  const n = bulk.dims.reduce((a, b) => a * b, 1);
  const bits = new Uint16Array(n);
  // values in [-1, 1) on a coarse grid, as float16 bit patterns
  for (let k = 0; k < n; k++) bits[k] = floatToHalfBits(((k * 7919) % 2048) / 1024 - 1);
  const out = new Uint8Array(bits.buffer);
  if (out.byteLength >= 4) new DataView(out.buffer).setUint32(0, i, true);
  return out;
}
