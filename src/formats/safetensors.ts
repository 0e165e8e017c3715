/**
 * The safetensors format (huggingface/safetensors), read and written in a streaming way: a
 * checkpoint is 2–7 GB, so no function here holds a whole file in memory.
 *
 *   bytes 0..8        N, unsigned 64-bit little-endian: the header length
 *   bytes 8..8+N      the header, UTF-8 JSON: { name: {dtype, shape, data_offsets: [begin, end]}, …,
 *                     "__metadata__": {string: string} (optional) }, possibly padded with spaces
 *   bytes 8+N..       the data section; offsets are relative to its start
 *
 * Rules enforced on every read (ModelFormatError naming the file and the rule):
 *   - the file holds at least 8 bytes; N ≤ 100 MB (the reference implementation's limit) and
 *     8 + N ≤ the file size;
 *   - the header is valid UTF-8 JSON, an object; every entry but `__metadata__` is an object with a
 *     known dtype, a shape of non-negative integers and integer data_offsets 0 ≤ begin ≤ end;
 *   - end − begin = Π shape × the dtype's size;
 *   - sorted by begin, the ranges tile the data section: the first begins at 0, each begins where
 *     the previous ends (no gap, no overlap), the last ends at the end of the file;
 *   - `__metadata__`, when present, maps strings to strings.
 *
 * No npm library fits: the maintained ones (e.g. `safetensors` ports) read whole files into memory
 * or do not check the tiling; the format is small, so it lives here, in one module.
 */
import { createHash } from 'node:crypto';
import {
  closeSync,
  constants as fsConstants,
  fstatSync,
  fsyncSync,
  openSync,
  readSync,
  renameSync,
  rmSync,
  writeSync,
} from 'node:fs';
import { chmod, copyFile, open } from 'node:fs/promises';
import { ModelFormatError, show } from '../util/errors.js';
import { floatToHalfBits, halfBitsToFloat } from '../util/half.js';

/** The reference implementation refuses headers above 100 MB. */
export const MAX_HEADER_BYTES = 100_000_000;

/** Element sizes in bytes of the dtypes safetensors defines. */
export const DTYPE_BYTES: Readonly<Record<string, number>> = Object.freeze({
  F64: 8,
  F32: 4,
  F16: 2,
  BF16: 2,
  F8_E4M3: 1,
  F8_E5M2: 1,
  I64: 8,
  I32: 4,
  I16: 2,
  I8: 1,
  U64: 8,
  U32: 4,
  U16: 2,
  U8: 1,
  BOOL: 1,
});

/** Float dtypes this tool reads and writes values of (others are copied as bytes). */
export type FloatDtype = 'F32' | 'F16' | 'BF16';

export interface TensorEntry {
  name: string;
  dtype: string;
  shape: number[];
  /** Byte range in the data section: [begin, end). */
  begin: number;
  end: number;
}

export interface SafetensorsHeader {
  path: string;
  fileSize: number;
  /** N, the header length. */
  headerLength: number;
  /** 8 + N: where the data section starts in the file. */
  dataStart: number;
  /** Sorted by `begin`. */
  tensors: TensorEntry[];
  byName: Map<string, TensorEntry>;
  metadata: Record<string, string> | null;
}

/** Read and check the header of `path` (reads 8 + N bytes, never the data). */
export function readSafetensorsHeader(path: string): SafetensorsHeader {
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch (error) {
    throw new ModelFormatError(`${show(path)}: cannot open the safetensors file (${(error as Error).message})`, {
      cause: error,
    });
  }
  try {
    const fileSize = fstatSync(fd).size;
    if (fileSize < 8) {
      throw bad(path, `the file has ${fileSize} bytes; a safetensors file starts with an 8-byte header length`);
    }
    const lenBytes = Buffer.alloc(8);
    readSync(fd, lenBytes, 0, 8, 0);
    const n = lenBytes.readBigUInt64LE(0);
    if (n > BigInt(MAX_HEADER_BYTES)) {
      throw bad(path, `the header length is ${n} bytes; at most ${MAX_HEADER_BYTES} are allowed`);
    }
    const headerLength = Number(n);
    if (8 + headerLength > fileSize) {
      throw bad(
        path,
        `the header length ${headerLength} runs past the end of the file (${fileSize} bytes); the file is truncated or not safetensors`,
      );
    }
    const headerBytes = Buffer.alloc(headerLength);
    readFully(fd, headerBytes, 8);
    return parseSafetensorsHeader(path, headerBytes, fileSize);
  } finally {
    closeSync(fd);
  }
}

/** Check a header (the JSON bytes) against the rules of the module comment. */
export function parseSafetensorsHeader(path: string, headerBytes: Uint8Array, fileSize: number): SafetensorsHeader {
  const headerLength = headerBytes.byteLength;
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(headerBytes);
  } catch (error) {
    throw bad(path, 'the header is not valid UTF-8', error);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (error) {
    throw bad(path, `the header is not valid JSON (${(error as Error).message})`, error);
  }
  if (json === null || typeof json !== 'object' || Array.isArray(json)) {
    throw bad(path, 'the header must be a JSON object of tensor entries');
  }
  let metadata: Record<string, string> | null = null;
  const tensors: TensorEntry[] = [];
  for (const [name, value] of Object.entries(json as Record<string, unknown>)) {
    if (name === '__metadata__') {
      if (value === null || typeof value !== 'object' || Array.isArray(value)) {
        throw bad(path, '__metadata__ must be an object mapping strings to strings');
      }
      for (const [k, v] of Object.entries(value)) {
        if (typeof v !== 'string') {
          throw bad(path, `__metadata__ ${show(k)} is ${show(v)}; metadata values must be strings`);
        }
      }
      metadata = value as Record<string, string>;
      continue;
    }
    if (value === null || typeof value !== 'object' || Array.isArray(value)) {
      throw bad(path, `tensor ${show(name)}: the entry must be an object {dtype, shape, data_offsets}`);
    }
    const { dtype, shape, data_offsets: offsets } = value as Record<string, unknown>;
    if (typeof dtype !== 'string' || !(dtype in DTYPE_BYTES)) {
      throw bad(
        path,
        `tensor ${show(name)}: dtype ${show(dtype)} is unknown; known: ${Object.keys(DTYPE_BYTES).join(', ')}`,
      );
    }
    if (!Array.isArray(shape) || !shape.every((x) => Number.isSafeInteger(x) && x >= 0)) {
      throw bad(path, `tensor ${show(name)}: shape ${show(shape)} must be a list of non-negative integers`);
    }
    if (
      !Array.isArray(offsets) ||
      offsets.length !== 2 ||
      !offsets.every((x) => Number.isSafeInteger(x) && x >= 0) ||
      (offsets[0] as number) > (offsets[1] as number)
    ) {
      throw bad(path, `tensor ${show(name)}: data_offsets ${show(offsets)} must be two integers 0 ≤ begin ≤ end`);
    }
    const [begin, end] = offsets as [number, number];
    const count = (shape as number[]).reduce((a, b) => a * b, 1);
    const bytes = count * (DTYPE_BYTES[dtype] as number);
    if (end - begin !== bytes) {
      throw bad(
        path,
        `tensor ${show(name)}: data_offsets [${begin}, ${end}] span ${end - begin} bytes, but shape [${shape.join(', ')}] × ${dtype} (${DTYPE_BYTES[dtype]} bytes) needs ${bytes}`,
      );
    }
    tensors.push({ name, dtype, shape: [...(shape as number[])], begin, end });
  }
  tensors.sort((a, b) => a.begin - b.begin || a.end - b.end);
  const dataLength = fileSize - 8 - headerLength;
  let at = 0;
  for (const t of tensors) {
    if (t.begin < at) {
      throw bad(
        path,
        `tensor ${show(t.name)}: bytes [${t.begin}, ${t.end}) overlap the previous tensor (which ends at ${at})`,
      );
    }
    if (t.begin > at) {
      throw bad(
        path,
        `tensor ${show(t.name)}: begins at ${t.begin}, leaving a gap after byte ${at}; tensors must tile the data section`,
      );
    }
    at = t.end;
  }
  if (at !== dataLength) {
    throw bad(
      path,
      at > dataLength
        ? `the tensors need ${at} data bytes but the file holds ${dataLength} after the header; the file is truncated`
        : `the tensors end at byte ${at} of a ${dataLength}-byte data section; ${dataLength - at} trailing bytes belong to no tensor`,
    );
  }
  return {
    path,
    fileSize,
    headerLength,
    dataStart: 8 + headerLength,
    tensors,
    byName: new Map(tensors.map((t) => [t.name, t])),
    metadata,
  };
}

/** One tensor's bytes (a small read at its offset). */
export function readTensorData(header: SafetensorsHeader, name: string): Uint8Array {
  const t = header.byName.get(name);
  if (!t) throw new ModelFormatError(`${show(header.path)}: no tensor ${show(name)}`);
  const out = Buffer.alloc(t.end - t.begin);
  const fd = openSync(header.path, 'r');
  try {
    readFully(fd, out, header.dataStart + t.begin);
  } finally {
    closeSync(fd);
  }
  return new Uint8Array(out.buffer, out.byteOffset, out.byteLength);
}

/** Values of an F32 / F16 / BF16 tensor as float32 (exact: every such value is a float32). */
export function toFloat32(bytes: Uint8Array, dtype: string, what = 'tensor'): Float32Array {
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (dtype === 'F32') {
    const out = new Float32Array(bytes.byteLength / 4);
    for (let i = 0; i < out.length; i++) out[i] = dv.getFloat32(4 * i, true);
    return out;
  }
  if (dtype === 'F16') {
    const out = new Float32Array(bytes.byteLength / 2);
    for (let i = 0; i < out.length; i++) out[i] = halfBitsToFloat(dv.getUint16(2 * i, true));
    return out;
  }
  if (dtype === 'BF16') {
    const out = new Float32Array(bytes.byteLength / 2);
    const u = new Uint32Array(out.buffer);
    for (let i = 0; i < out.length; i++) u[i] = dv.getUint16(2 * i, true) << 16;
    return out;
  }
  throw new ModelFormatError(`${what}: dtype ${show(dtype)} is not a float dtype this tool edits (F32, F16, BF16)`);
}

/** float32 values → bytes of `dtype`, rounded to nearest even (F16, BF16; F32 is exact). */
export function fromFloat32(values: Float32Array, dtype: string, what = 'tensor'): Uint8Array {
  if (dtype === 'F32') {
    const out = new Uint8Array(values.length * 4);
    const dv = new DataView(out.buffer);
    for (let i = 0; i < values.length; i++) dv.setFloat32(4 * i, values[i] as number, true);
    return out;
  }
  if (dtype === 'F16' || dtype === 'BF16') {
    const out = new Uint8Array(values.length * 2);
    const dv = new DataView(out.buffer);
    const bits = new Uint32Array(values.buffer, values.byteOffset, values.length);
    for (let i = 0; i < values.length; i++) {
      dv.setUint16(
        2 * i,
        dtype === 'F16' ? floatToHalfBits(values[i] as number) : bfloat16Bits(bits[i] as number),
        true,
      );
    }
    return out;
  }
  throw new ModelFormatError(`${what}: dtype ${show(dtype)} is not a float dtype this tool writes (F32, F16, BF16)`);
}

/** float32 bits → bfloat16 bits, round to nearest even (NaN stays a quiet NaN). */
export function bfloat16Bits(f32bits: number): number {
  if ((f32bits & 0x7f800000) === 0x7f800000 && (f32bits & 0x7fffff) !== 0) return ((f32bits >>> 16) | 0x40) & 0xffff;
  const rounding = 0x7fff + ((f32bits >>> 16) & 1);
  return ((f32bits + rounding) >>> 16) & 0xffff;
}

export interface TensorToWrite {
  name: string;
  dtype: string;
  shape: number[];
  data: Uint8Array;
}

/** Header bytes (padded to a multiple of 8, as the reference writer does) for tensors written in the given order. */
export function encodeHeader(
  tensors: readonly { name: string; dtype: string; shape: readonly number[]; byteLength: number }[],
  metadata?: Record<string, string> | null,
): Uint8Array {
  const obj: Record<string, unknown> = {};
  if (metadata) {
    for (const [k, v] of Object.entries(metadata)) {
      if (typeof v !== 'string') throw new ModelFormatError(`safetensors metadata ${show(k)}: values must be strings`);
    }
    obj.__metadata__ = metadata;
  }
  let at = 0;
  for (const t of tensors) {
    if (!(t.dtype in DTYPE_BYTES))
      throw new ModelFormatError(`tensor ${show(t.name)}: dtype ${show(t.dtype)} is unknown`);
    const need = t.shape.reduce((a, b) => a * b, 1) * (DTYPE_BYTES[t.dtype] as number);
    if (need !== t.byteLength) {
      throw new ModelFormatError(
        `tensor ${show(t.name)}: ${t.byteLength} bytes given, shape [${t.shape.join(', ')}] × ${t.dtype} needs ${need}`,
      );
    }
    if (t.name === '__metadata__' || t.name in obj)
      throw new ModelFormatError(`tensor name ${show(t.name)} is used twice or reserved`);
    obj[t.name] = { dtype: t.dtype, shape: [...t.shape], data_offsets: [at, at + t.byteLength] };
    at += t.byteLength;
  }
  const json = Buffer.from(JSON.stringify(obj), 'utf8');
  const padded = Math.ceil(json.byteLength / 8) * 8;
  const out = Buffer.alloc(8 + padded, 0x20);
  out.writeBigUInt64LE(BigInt(padded), 0);
  json.copy(out, 8);
  return new Uint8Array(out.buffer, out.byteOffset, out.byteLength);
}

/** A small safetensors file (an edit file, a LoRA) as bytes. */
export function encodeSafetensors(tensors: readonly TensorToWrite[], metadata?: Record<string, string>): Uint8Array {
  const header = encodeHeader(
    tensors.map((t) => ({ name: t.name, dtype: t.dtype, shape: t.shape, byteLength: t.data.byteLength })),
    metadata,
  );
  const out = new Uint8Array(header.byteLength + tensors.reduce((a, t) => a + t.data.byteLength, 0));
  out.set(header, 0);
  let at = header.byteLength;
  for (const t of tensors) {
    out.set(t.data, at);
    at += t.data.byteLength;
  }
  return out;
}

/**
 * Write a small safetensors file (an edit file, a LoRA) atomically: a temporary file next to it,
 * fsync, rename. Tensors are written in the given order.
 */
export function writeSafetensors(
  path: string,
  tensors: readonly TensorToWrite[],
  metadata?: Record<string, string>,
): void {
  const bytes = encodeSafetensors(tensors, metadata);
  const tmp = `${path}.tmp-${process.pid}-${Date.now().toString(36)}`;
  const fd = openSync(tmp, 'w');
  try {
    let off = 0;
    while (off < bytes.byteLength) off += writeSync(fd, bytes, off);
    fsyncSync(fd);
    closeSync(fd);
  } catch (error) {
    closeSync(fd);
    rmSync(tmp, { force: true });
    throw error;
  }
  renameSync(tmp, path);
}

/** A tensor whose bytes the stream hands to `patch`; its result replaces them in the output. */
export type PatchFn = (entry: TensorEntry, bytes: Uint8Array) => Promise<Uint8Array> | Uint8Array;

export interface StreamCopyResult {
  /** sha256 (hex) of the whole source file, from one read pass beside the copy (size and mtime checked unchanged). */
  sourceSha256: string;
  bytes: number;
  /** sha256 of each patched tensor's output bytes. */
  patched: { name: string; sha256: string }[];
}

/**
 * Copy `header.path` to `outPath` (created, must not exist): every byte is copied as is except the
 * tensors named in `names`, whose bytes are handed to `patch` and replaced by what it returns (the
 * same length). The output is fsynced; the caller renames it.
 *
 * Two things run at once: the kernel copies the file (`copyFile`: copy_file_range where the
 * filesystem allows, no bytes through JavaScript — as fast as `cp`), while one read pass hashes the
 * source and gathers the patched tensors' bytes. The patched tensors are then written over their
 * ranges of the copy. The source's size and mtime are checked before and after, so a source that
 * changed meanwhile is an error rather than a copy that disagrees with its hash. The copy gets the
 * permissions of a newly created file (umask), not the source's modes (a read-only source stays
 * editable in its copy).
 */
export async function streamCopyWithPatches(
  header: SafetensorsHeader,
  outPath: string,
  names: ReadonlySet<string>,
  patch: PatchFn,
  options: { chunkBytes?: number } = {},
): Promise<StreamCopyResult> {
  const chunk = options.chunkBytes ?? 16 * 1024 * 1024;
  const targets = header.tensors.filter((t) => names.has(t.name));
  if (targets.length !== names.size) {
    const missing = [...names].filter((n) => !header.byName.has(n));
    throw new ModelFormatError(`${show(header.path)}: no tensor ${missing.map((m) => show(m)).join(', ')}`);
  }
  // Absolute file ranges of the patched tensors, each with the buffer its bytes are gathered into.
  const ranges = targets
    .map((t) => ({ entry: t, from: header.dataStart + t.begin, to: header.dataStart + t.end }))
    .map((r) => ({ ...r, bytes: new Uint8Array(r.to - r.from) }));
  const src = await open(header.path, 'r');
  const hash = createHash('sha256');
  const patched: StreamCopyResult['patched'] = [];
  let size: number;
  let copying: Promise<void> | undefined;
  try {
    const before = await src.stat();
    size = before.size;
    if (size !== header.fileSize) {
      throw new ModelFormatError(
        `${show(header.path)} changed size while it was read (${header.fileSize} → ${size} bytes)`,
      );
    }
    copying = copyFile(header.path, outPath, fsConstants.COPYFILE_EXCL);
    // Keep a rejection from surfacing as unhandled while the hash pass runs; it is awaited below.
    copying.catch(() => {});
    const buffers = [Buffer.allocUnsafe(chunk), Buffer.allocUnsafe(chunk)];
    const readAt = (pos: number, k: number) =>
      pos >= size
        ? Promise.resolve({ bytesRead: 0 })
        : src.read(buffers[k] as Buffer, 0, Math.min(chunk, size - pos), pos);
    let pos = 0;
    let k = 0;
    let next = readAt(0, 0);
    while (pos < size) {
      const { bytesRead } = await next;
      if (bytesRead === 0) throw new ModelFormatError(`${show(header.path)}: unexpected end of file at byte ${pos}`);
      const buf = (buffers[k] as Buffer).subarray(0, bytesRead);
      next = readAt(pos + bytesRead, 1 - k);
      hash.update(buf);
      const end = pos + bytesRead;
      for (const range of ranges) {
        const lo = Math.max(range.from, pos);
        const hi = Math.min(range.to, end);
        if (lo < hi) range.bytes.set(buf.subarray(lo - pos, hi - pos), lo - range.from);
      }
      pos = end;
      k = 1 - k;
    }
    await copying;
    const after = await src.stat();
    if (after.size !== before.size || after.mtimeMs !== before.mtimeMs) {
      throw new ModelFormatError(`${show(header.path)} changed while it was copied; nothing was written`);
    }
  } finally {
    // On any error, let the copy settle first, so that the caller's cleanup of outPath comes after it.
    await copying?.catch(() => {});
    await src.close();
  }
  await chmod(outPath, 0o666 & ~process.umask());
  const dst = await open(outPath, 'r+');
  try {
    for (const range of ranges) {
      const out = await patch(range.entry, range.bytes);
      if (out.byteLength !== range.bytes.byteLength) {
        throw new ModelFormatError(
          `tensor ${show(range.entry.name)}: the patch returned ${out.byteLength} bytes for a ${range.bytes.byteLength}-byte tensor`,
        );
      }
      await writeAll(dst, out, range.from);
      patched.push({ name: range.entry.name, sha256: createHash('sha256').update(out).digest('hex') });
    }
    await dst.sync();
    return { sourceSha256: hash.digest('hex'), bytes: size, patched };
  } finally {
    await dst.close();
  }
}

async function writeAll(fh: Awaited<ReturnType<typeof open>>, data: Uint8Array, position: number): Promise<void> {
  let off = 0;
  while (off < data.byteLength) {
    const { bytesWritten } = await fh.write(data, off, data.byteLength - off, position + off);
    off += bytesWritten;
  }
}

function readFully(fd: number, out: Uint8Array, position: number): void {
  let off = 0;
  while (off < out.byteLength) {
    const n = readSync(fd, out, off, out.byteLength - off, position + off);
    if (n === 0) throw new ModelFormatError(`unexpected end of file at byte ${position + off}`);
    off += n;
  }
}

function bad(path: string, rule: string, cause?: unknown): ModelFormatError {
  return new ModelFormatError(`${show(path)}: not a valid safetensors file: ${rule}`, cause ? { cause } : undefined);
}
