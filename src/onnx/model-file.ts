/**
 * Open an ONNX file and say where every initializer's bytes live, then read single tensors.
 *
 * - The file is never loaded whole: it is walked at wire level with positioned reads
 *   (`scanModelFile`); the model, its nodes, inputs/outputs/value_info and each initializer's
 *   small fields are read and decoded with protobufjs, while each `raw_data` payload is skipped by
 *   its length and only its absolute offset/length recorded. An fp16 UNet exported with inline
 *   weights (≈ 1.7 GB) thus costs a few MB of JS memory, not its size.
 * - Each initializer's storage is one of (discriminated on `kind`):
 *     'raw'      raw_data inside model.onnx: absolute byte offset/length of the payload
 *     'typed'    float_data / int32_data (float16 bit patterns, int8..int32) / int64_data / double_data / uint64_data
 *     'external' a range of a data file next to the model (location validated before anything is read)
 *     'empty'    no values stored (a zero-element tensor)
 * - Reading a tensor reads only its own bytes: a positioned read of model.onnx (raw) or of the
 *   external file; a model.onnx that changed since it was opened (size, mtime or inode) is refused.
 */
import { closeSync, fstatSync, openSync, statSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { ModelFormatError, show } from '../util/errors.js';
import { floatToHalfBits as floatToHalf, fromHalf } from '../util/half.js';
import { parseExternalEntries, readFdRange, readFileRange, resolveExternalLocation } from './external.js';
import { FileCursor } from './file-cursor.js';
import type { GraphProto, ModelProto, TensorProto } from './proto.js';
import { DATA_TYPE_BYTES, DATA_TYPE_NAMES, DataType, decodeModel, toNumber } from './proto.js';
import { type ModelWireLayout, scanModelFile } from './wire.js';

export type TypedField = 'float_data' | 'int32_data' | 'int64_data' | 'double_data' | 'uint64_data';

export type TensorStorage =
  | { kind: 'raw'; offset: number; length: number }
  | { kind: 'typed'; field: TypedField; count: number }
  | {
      kind: 'external';
      /** As written in the model. */
      location: string;
      /** Absolute path of the data file. */
      path: string;
      offset: number;
      length: number;
      checksum?: string;
    }
  | { kind: 'empty' };

export interface InitializerInfo {
  name: string;
  /** Position in graph.initializer. */
  index: number;
  /** ONNX TensorProto.DataType value. */
  dataType: number;
  /** 'float32', 'float16', 'int64', ... */
  dtype: string;
  dims: number[];
  elementCount: number;
  /** elementCount × element size. */
  byteLength: number;
  storage: TensorStorage;
}

export interface ExternalFileInfo {
  location: string;
  path: string;
  size: number;
  /** Names of the initializers stored in it. */
  tensors: number;
}

export interface OnnxModelFile {
  /** Absolute path of the .onnx file. */
  path: string;
  /** Its folder (external locations are relative to it). */
  dir: string;
  /** Size of the .onnx file when it was opened. */
  size: number;
  /** Identity of the .onnx file when it was opened: raw_data is read from it on demand, a changed file is refused. */
  stamp: FileStamp;
  /** The model decoded without its initializers' raw_data (those fields are absent: read tensors with readTensorBytes). */
  model: ModelProto;
  graph: GraphProto;
  /** Wire layout of the file (graph and initializer spans). */
  wire: ModelWireLayout;
  initializers: InitializerInfo[];
  initializerByName: Map<string, InitializerInfo>;
  /** External data files referenced by the initializers, in first-use order. */
  externalFiles: ExternalFileInfo[];
}

export interface FileStamp {
  dev: number;
  ino: number;
  mtimeMs: number;
}

const TYPED_FIELD_OF: Record<number, TypedField> = {
  [DataType.FLOAT]: 'float_data',
  [DataType.FLOAT16]: 'int32_data',
  [DataType.BFLOAT16]: 'int32_data',
  [DataType.INT32]: 'int32_data',
  [DataType.INT16]: 'int32_data',
  [DataType.INT8]: 'int32_data',
  [DataType.UINT16]: 'int32_data',
  [DataType.UINT8]: 'int32_data',
  [DataType.BOOL]: 'int32_data',
  [DataType.INT64]: 'int64_data',
  [DataType.DOUBLE]: 'double_data',
  [DataType.UINT32]: 'uint64_data',
  [DataType.UINT64]: 'uint64_data',
};

/**
 * Open `path` as an ONNX model. Errors (ModelFormatError, naming the file): missing file, not a
 * protobuf ModelProto or no graph, unsupported initializer dtype, external data whose location is
 * absolute, contains `..` or leaves the folder through a symlink, whose file is missing, or whose
 * range runs past the end of the file.
 */
export function openOnnxModel(path: string): OnnxModelFile {
  const abs = resolve(path);
  let size: number;
  try {
    const st = statSync(abs);
    if (!st.isFile()) throw new ModelFormatError(`${show(abs)} is not a file (expected an ONNX model file)`);
    size = st.size;
  } catch (cause) {
    if (cause instanceof ModelFormatError) throw cause;
    throw new ModelFormatError(`ONNX model file ${show(abs)} does not exist`, { cause });
  }
  if (size === 0) throw new ModelFormatError(`${show(abs)} is empty; it is not an ONNX model`);
  let fd: number;
  try {
    fd = openSync(abs, 'r');
  } catch (cause) {
    throw new ModelFormatError(`ONNX model file ${show(abs)} cannot be opened (${(cause as Error).message})`, {
      cause,
    });
  }
  let model: ModelProto;
  let wire: ModelWireLayout;
  let stamp: FileStamp;
  try {
    // what was opened (a file replaced since the stat above is read as it is now)
    const st = fstatSync(fd);
    size = st.size;
    stamp = { dev: st.dev, ino: st.ino, mtimeMs: st.mtimeMs };
  } catch (cause) {
    closeSync(fd);
    throw new ModelFormatError(`ONNX model file ${show(abs)} cannot be read (${(cause as Error).message})`, { cause });
  }
  try {
    const scanned = scanModelFile(new FileCursor(fd, size));
    wire = scanned.layout;
    model = decodeModel(scanned.stripped);
  } catch (cause) {
    throw new ModelFormatError(
      `${show(abs)} is not an ONNX model (protobuf decoding failed: ${(cause as Error).message})`,
      {
        cause,
      },
    );
  } finally {
    closeSync(fd);
  }
  const graph = model.graph;
  if (!graph || wire.graphs.length === 0 || ((graph.node?.length ?? 0) === 0 && (graph.output?.length ?? 0) === 0)) {
    throw new ModelFormatError(`${show(abs)} is not an ONNX model (no graph with nodes or outputs)`);
  }
  const tensors = graph.initializer ?? [];
  if (tensors.length !== wire.initializers.length) {
    throw new ModelFormatError(
      `${show(abs)}: ${tensors.length} decoded initializers but ${wire.initializers.length} found at wire level (unsupported encoding)`,
    );
  }
  const dir = dirname(abs);
  const initializers: InitializerInfo[] = [];
  const initializerByName = new Map<string, InitializerInfo>();
  const externalFiles: ExternalFileInfo[] = [];
  const fileByLocation = new Map<string, ExternalFileInfo>();
  tensors.forEach((t, index) => {
    const layout = wire.initializers[index];
    const name = t.name ?? '';
    if (!layout || layout.name !== name) {
      throw new ModelFormatError(`${show(abs)}: initializer #${index} ${show(name)} does not match its wire layout`);
    }
    const info = describeInitializer(abs, dir, t, index, layout.rawData, fileByLocation, externalFiles);
    initializers.push(info);
    initializerByName.set(name, info);
  });
  return { path: abs, dir, size, stamp, model, graph, wire, initializers, initializerByName, externalFiles };
}

function describeInitializer(
  file: string,
  dir: string,
  t: TensorProto,
  index: number,
  rawData: { offset: number; length: number } | undefined,
  fileByLocation: Map<string, ExternalFileInfo>,
  externalFiles: ExternalFileInfo[],
): InitializerInfo {
  const name = t.name ?? '';
  const what = `${show(file)} initializer ${show(name)}`;
  const dataType = t.dataType ?? 0;
  const dtype = DATA_TYPE_NAMES[dataType];
  const elemBytes = DATA_TYPE_BYTES[dataType];
  if (!dtype || elemBytes === undefined || dtype === 'string') {
    throw new ModelFormatError(`${what}: data type ${dataType} is not supported (supported: numeric tensor types)`);
  }
  const dims = (t.dims ?? []).map((d) => toNumber(d));
  if (dims.some((d) => !Number.isSafeInteger(d) || d < 0))
    throw new ModelFormatError(`${what}: invalid dims [${dims}]`);
  const elementCount = dims.reduce((a, b) => a * b, 1);
  const byteLength = elementCount * elemBytes;
  const base = { name, index, dataType, dtype, dims, elementCount, byteLength };

  if (t.dataLocation === 1) {
    const entries = parseExternalEntries(t.externalData ?? [], what);
    const path = resolveExternalLocation(dir, entries.location, what);
    let ext = fileByLocation.get(entries.location);
    if (!ext) {
      ext = { location: entries.location, path, size: statSync(path).size, tensors: 0 };
      fileByLocation.set(entries.location, ext);
      externalFiles.push(ext);
    }
    ext.tensors++;
    const length = entries.length ?? byteLength;
    if (length !== byteLength) {
      throw new ModelFormatError(
        `${what}: external data length ${length} does not match dims [${dims}] of ${dtype} (${byteLength} bytes)`,
      );
    }
    if (entries.offset + length > ext.size) {
      throw new ModelFormatError(
        `${what}: external data range offset ${entries.offset} + length ${length} = ${entries.offset + length} runs past the end of ${show(path)} (${ext.size} bytes; truncated file?)`,
      );
    }
    return {
      ...base,
      storage: {
        kind: 'external',
        location: entries.location,
        path,
        offset: entries.offset,
        length,
        ...(entries.checksum ? { checksum: entries.checksum } : {}),
      },
    };
  }
  // An empty raw_data next to typed values is how some writers leave the field: the typed values count.
  if (rawData && !(rawData.length === 0 && elementCount > 0 && t.dataType !== undefined && hasTypedValues(t))) {
    if (rawData.length !== byteLength) {
      throw new ModelFormatError(
        `${what}: raw_data holds ${rawData.length} bytes; dims [${dims}] of ${dtype} need ${byteLength}`,
      );
    }
    return { ...base, storage: { kind: 'raw', offset: rawData.offset, length: rawData.length } };
  }
  if (elementCount === 0) return { ...base, storage: { kind: 'empty' } };
  const field = TYPED_FIELD_OF[dataType];
  const count = field ? typedValues(t, field).length : 0;
  if (!field || count !== elementCount) {
    throw new ModelFormatError(
      `${what}: holds ${count} values in ${field ?? 'typed fields'} but dims [${dims}] need ${elementCount} (no raw_data or external data either)`,
    );
  }
  return { ...base, storage: { kind: 'typed', field, count } };
}

function hasTypedValues(t: TensorProto): boolean {
  return [t.floatData, t.int32Data, t.int64Data, t.doubleData, t.uint64Data].some((v) => (v?.length ?? 0) > 0);
}

function typedValues(t: TensorProto, field: TypedField): ArrayLike<unknown> {
  switch (field) {
    case 'float_data':
      return t.floatData ?? [];
    case 'int32_data':
      return t.int32Data ?? [];
    case 'int64_data':
      return t.int64Data ?? [];
    case 'double_data':
      return t.doubleData ?? [];
    case 'uint64_data':
      return t.uint64Data ?? [];
  }
}

/** Look up an initializer by name, or throw naming the file. */
export function getInitializer(file: OnnxModelFile, name: string): InitializerInfo {
  const info = file.initializerByName.get(name);
  if (!info) throw new ModelFormatError(`${show(file.path)} has no initializer named ${show(name)}`);
  return info;
}

/**
 * The tensor's bytes in ONNX raw_data layout (little-endian, row-major), read from wherever they
 * are stored. External data: only [offset, offset + length) of the data file is read.
 */
export function readTensorBytes(file: OnnxModelFile, init: InitializerInfo): Uint8Array {
  const s = init.storage;
  switch (s.kind) {
    case 'raw':
      return withModelFd(file, (fd) => readFdRange(fd, file.path, s.offset, s.length));
    case 'external':
      return readFileRange(s.path, s.offset, s.length);
    case 'empty':
      return new Uint8Array(0);
    case 'typed':
      return typedToBytes(file.graph.initializer?.[init.index] as TensorProto, init, s.field);
  }
}

/**
 * Run `fn` on a descriptor of the model file, after checking that it is still the file that was
 * opened (same device, inode, size and mtime): its raw_data offsets hold for that file only.
 */
export function withModelFd<T>(file: OnnxModelFile, fn: (fd: number) => T): T {
  let fd: number;
  try {
    fd = openSync(file.path, 'r');
  } catch (cause) {
    throw new ModelFormatError(
      `ONNX model file ${show(file.path)} can no longer be read (${(cause as Error).message}); its tensors are read from it on demand`,
      { cause },
    );
  }
  try {
    const st = fstatSync(fd);
    const was = file.stamp;
    if (st.size !== file.size || st.ino !== was.ino || st.dev !== was.dev || st.mtimeMs !== was.mtimeMs) {
      throw new ModelFormatError(
        `ONNX model file ${show(file.path)} changed since it was opened (${file.size} → ${st.size} bytes, modified ${new Date(was.mtimeMs).toISOString()} → ${new Date(st.mtimeMs).toISOString()}${st.ino !== was.ino ? ', another file' : ''}); its tensors are read from it on demand, so open it again`,
      );
    }
    return fn(fd);
  } finally {
    closeSync(fd);
  }
}

function typedToBytes(t: TensorProto, init: InitializerInfo, field: TypedField): Uint8Array {
  const out = new Uint8Array(init.byteLength);
  const view = new DataView(out.buffer);
  const n = init.elementCount;
  switch (field) {
    case 'float_data': {
      const v = t.floatData ?? [];
      for (let i = 0; i < n; i++) view.setFloat32(i * 4, v[i] as number, true);
      break;
    }
    case 'double_data': {
      const v = t.doubleData ?? [];
      for (let i = 0; i < n; i++) view.setFloat64(i * 8, v[i] as number, true);
      break;
    }
    case 'int32_data': {
      // int32_data carries the values of every type narrower than 32 bits (float16/bfloat16 as bit patterns).
      const v = t.int32Data ?? [];
      const size = DATA_TYPE_BYTES[init.dataType] as number;
      for (let i = 0; i < n; i++) {
        const x = v[i] as number;
        if (size === 4) view.setInt32(i * 4, x, true);
        else if (size === 2) view.setUint16(i * 2, x & 0xffff, true);
        else view.setUint8(i, x & 0xff);
      }
      break;
    }
    case 'int64_data': {
      const v = t.int64Data ?? [];
      for (let i = 0; i < n; i++) view.setBigInt64(i * 8, BigInt(String(v[i])), true);
      break;
    }
    case 'uint64_data': {
      const v = t.uint64Data ?? [];
      const size = DATA_TYPE_BYTES[init.dataType] as number;
      for (let i = 0; i < n; i++) {
        const x = BigInt.asUintN(64, BigInt(String(v[i])));
        if (size === 8) view.setBigUint64(i * 8, x, true);
        else view.setUint32(i * 4, Number(x), true);
      }
      break;
    }
  }
  return out;
}

/** The tensor as float32 (float16/bfloat16/float64 converted). Other dtypes are an error. */
export function readTensorFloat32(file: OnnxModelFile, init: InitializerInfo): Float32Array {
  const bytes = readTensorBytes(file, init);
  // readTensorBytes returns a buffer of its own: float32 needs no second copy
  if (init.dataType === DataType.FLOAT && bytes.byteOffset === 0 && bytes.buffer.byteLength === bytes.byteLength) {
    return new Float32Array(bytes.buffer, 0, bytes.byteLength / 4);
  }
  return bytesToFloat32(bytes, init.dataType, `${show(file.path)} initializer ${show(init.name)}`);
}

/** Convert little-endian tensor bytes of a floating dtype to float32. */
export function bytesToFloat32(bytes: Uint8Array, dataType: number, what = 'tensor'): Float32Array {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  switch (dataType) {
    case DataType.FLOAT: {
      const out = new Float32Array(bytes.byteLength / 4);
      new Uint8Array(out.buffer).set(bytes);
      return out;
    }
    case DataType.FLOAT16: {
      const bits = new Uint16Array(bytes.byteLength / 2);
      new Uint8Array(bits.buffer).set(bytes);
      return fromHalf(bits);
    }
    case DataType.BFLOAT16: {
      const out = new Float32Array(bytes.byteLength / 2);
      const u = new Uint32Array(out.buffer);
      for (let i = 0; i < out.length; i++) u[i] = view.getUint16(i * 2, true) << 16;
      return out;
    }
    case DataType.DOUBLE: {
      const out = new Float32Array(bytes.byteLength / 8);
      for (let i = 0; i < out.length; i++) out[i] = view.getFloat64(i * 8, true);
      return out;
    }
    default:
      throw new ModelFormatError(
        `${what}: dtype ${DATA_TYPE_NAMES[dataType] ?? dataType} is not a floating type (float32/float16/bfloat16/float64 can be read as float32)`,
      );
  }
}

/** Encode float32 values as little-endian bytes of `dataType` (float32, float16, bfloat16 or float64). */
export function float32ToBytes(values: Float32Array, dataType: number, what = 'tensor'): Uint8Array {
  switch (dataType) {
    case DataType.FLOAT:
      return new Uint8Array(values.buffer.slice(values.byteOffset, values.byteOffset + values.byteLength));
    case DataType.FLOAT16: {
      const bits = new Uint16Array(values.length);
      for (let i = 0; i < values.length; i++) bits[i] = floatToHalf(values[i] as number);
      return new Uint8Array(bits.buffer);
    }
    case DataType.BFLOAT16: {
      const out = new Uint16Array(values.length);
      const f = new Float32Array(1);
      const u = new Uint32Array(f.buffer);
      for (let i = 0; i < values.length; i++) {
        f[0] = values[i] as number;
        const x = u[0] as number;
        // round to nearest even on the dropped 16 bits; NaN stays NaN
        out[i] = Number.isNaN(f[0]) ? 0x7fc0 : (x + 0x7fff + ((x >>> 16) & 1)) >>> 16;
      }
      return new Uint8Array(out.buffer);
    }
    case DataType.DOUBLE: {
      const out = new Float64Array(values.length);
      out.set(values);
      return new Uint8Array(out.buffer);
    }
    default:
      throw new ModelFormatError(
        `${what}: cannot store float values as dtype ${DATA_TYPE_NAMES[dataType] ?? dataType}`,
      );
  }
}
