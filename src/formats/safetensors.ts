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
  statSync,
  writeSync,
} from 'node:fs';
import { chmod, copyFile, type FileHandle, open } from 'node:fs/promises';
import { Worker } from 'node:worker_threads';
import { ModelFormatError, show } from '../util/errors.js';
import { floatToHalfBits, halfBitsFromFloatBits, halfBitsToFloat, halfTable } from '../util/half.js';

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

/** Typed-array views read and write the host's byte order; safetensors is little-endian. */
const LITTLE_ENDIAN = new Uint8Array(Uint16Array.of(1).buffer)[0] === 1;

/**
 * Values of an F32 / F16 / BF16 tensor as float32 (exact: every such value is a float32), into
 * `out` (exactly one element per value; lets a caller reuse one array for many tensors) or a new array.
 */
export function toFloat32(bytes: Uint8Array, dtype: string, what = 'tensor', out?: Float32Array): Float32Array {
  const size = dtype === 'F32' ? 4 : dtype === 'F16' || dtype === 'BF16' ? 2 : 0;
  if (size === 0) {
    throw new ModelFormatError(`${what}: dtype ${show(dtype)} is not a float dtype this tool edits (F32, F16, BF16)`);
  }
  const n = bytes.byteLength / size;
  if (out && out.length !== n) throw new RangeError(`${what}: ${n} values do not fit an output of ${out.length}`);
  const res = out ?? new Float32Array(n);
  if (!LITTLE_ENDIAN) return toFloat32Portable(bytes, dtype, res);
  // Typed views need aligned offsets: a tensor's bytes at an odd offset are copied first.
  const src = bytes.byteOffset % size === 0 ? bytes : bytes.slice();
  if (dtype === 'F32') {
    res.set(new Float32Array(src.buffer, src.byteOffset, n));
    return res;
  }
  const h = new Uint16Array(src.buffer, src.byteOffset, n);
  if (dtype === 'F16') {
    const t = halfTable();
    for (let i = 0; i < n; i++) res[i] = t[h[i] as number] as number;
  } else {
    const u = new Uint32Array(res.buffer, res.byteOffset, n);
    for (let i = 0; i < n; i++) u[i] = (h[i] as number) << 16;
  }
  return res;
}

function toFloat32Portable(bytes: Uint8Array, dtype: string, out: Float32Array): Float32Array {
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (dtype === 'F32') for (let i = 0; i < out.length; i++) out[i] = dv.getFloat32(4 * i, true);
  else if (dtype === 'F16') for (let i = 0; i < out.length; i++) out[i] = halfBitsToFloat(dv.getUint16(2 * i, true));
  else {
    const u = new Uint32Array(out.buffer, out.byteOffset, out.length);
    for (let i = 0; i < out.length; i++) u[i] = dv.getUint16(2 * i, true) << 16;
  }
  return out;
}

/**
 * float32 values → bytes of `dtype`, rounded to nearest even (F16, BF16; F32 is exact), into `into`
 * (exactly the bytes needed) or a new array.
 */
export function fromFloat32(values: Float32Array, dtype: string, what = 'tensor', into?: Uint8Array): Uint8Array {
  const size = dtype === 'F32' ? 4 : dtype === 'F16' || dtype === 'BF16' ? 2 : 0;
  if (size === 0) {
    throw new ModelFormatError(`${what}: dtype ${show(dtype)} is not a float dtype this tool writes (F32, F16, BF16)`);
  }
  const n = values.length;
  if (into && into.byteLength !== n * size) {
    throw new RangeError(`${what}: ${n} ${dtype} values need ${n * size} bytes; the output has ${into.byteLength}`);
  }
  const out = into ?? new Uint8Array(n * size);
  if (!LITTLE_ENDIAN || out.byteOffset % size !== 0) {
    const dv = new DataView(out.buffer, out.byteOffset, out.byteLength);
    const bits = new Uint32Array(values.buffer, values.byteOffset, n);
    if (dtype === 'F32') for (let i = 0; i < n; i++) dv.setFloat32(4 * i, values[i] as number, true);
    else if (dtype === 'F16')
      for (let i = 0; i < n; i++) dv.setUint16(2 * i, floatToHalfBits(values[i] as number), true);
    else for (let i = 0; i < n; i++) dv.setUint16(2 * i, bfloat16Bits(bits[i] as number), true);
    return out;
  }
  if (dtype === 'F32') {
    out.set(new Uint8Array(values.buffer, values.byteOffset, values.byteLength));
    return out;
  }
  const bits = new Uint32Array(values.buffer, values.byteOffset, n);
  const h = new Uint16Array(out.buffer, out.byteOffset, n);
  if (dtype === 'F16') for (let i = 0; i < n; i++) h[i] = halfBitsFromFloatBits(bits[i] as number);
  else for (let i = 0; i < n; i++) h[i] = bfloat16Bits(bits[i] as number);
  return out;
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

/**
 * A patched tensor's new bytes from its source bytes (the same length). `bytes` is a buffer reused
 * for the next tensor, and the returned array may be too: both are consumed before the next call.
 */
export type PatchFn = (entry: TensorEntry, bytes: Uint8Array) => Promise<Uint8Array> | Uint8Array;

export interface StreamCopyResult {
  /** sha256 (hex) of the whole source file, from the one read pass beside the copy. */
  sourceSha256: string;
  bytes: number;
  /** sha256 of each patched tensor's output bytes. */
  patched: { name: string; sha256: string }[];
  /**
   * When each part ended, in ms from the start (they overlap): the kernel's copy, the hash pass,
   * the patches (read, patched, hashed, written where the copy was done), the patches that waited
   * for the copy written, the output on disk (fsync), and the whole call.
   */
  timeline: {
    /** performance.now() at the start: ms since the process started. */
    startedAtProcessMs: number;
    copied: number;
    hashed: number;
    patched: number;
    written: number;
    synced: number;
    total: number;
  };
}

/**
 * Copy `header.path` to `outPath` (created, must not exist): every byte is copied as is except the
 * tensors named in `names`, whose bytes are handed to `patch` and replaced by what it returns. The
 * output is fsynced; the caller renames it.
 *
 * The source is read once for its hash, and everything runs at once, each part on its own core or
 * in the kernel:
 *   - the kernel copies the file (`copyFile`: copy_file_range where the filesystem allows, no bytes
 *     through JavaScript — as fast as `cp`);
 *   - a worker thread reads the source in `chunkBytes` pieces and hashes it (sha256 runs on the
 *     calling thread in node, so on the main thread it would hold up the patches), and hashes each
 *     patched tensor's range on the way;
 *   - the main thread reads each patched tensor (a small positioned read), calls `patch`, and
 *     writes the result over the copy once the copy is done;
 *   - as soon as the copy is done its writeback to disk starts (fdatasync), while the hash and the
 *     patches go on; a final fsync covers the patches and the file's metadata.
 * A patched tensor's bytes as read for `patch` must hash as the same range did in the hash pass,
 * and the source's size and mtime must be unchanged at the end: a source that changed meanwhile is
 * an error rather than a copy that disagrees with its hash. The copy gets the permissions of a
 * newly created file (umask), not the source's modes (a read-only source stays editable in its copy).
 */
export async function streamCopyWithPatches(
  header: SafetensorsHeader,
  outPath: string,
  names: ReadonlySet<string>,
  patch: PatchFn,
  options: { chunkBytes?: number } = {},
): Promise<StreamCopyResult> {
  return startStreamCopy(header, outPath, { ...options, ranges: names }).finish(names, patch);
}

/** A streaming copy under way (startStreamCopy): `finish` patches and completes it, `abort` stops it. */
export interface StreamCopy {
  readonly outPath: string;
  /** Patch `names` (a subset of the ranges it was started with) and complete the copy; see streamCopyWithPatches. */
  finish(names: ReadonlySet<string>, patch: PatchFn): Promise<StreamCopyResult>;
  /** Stop the hash pass and wait for the kernel's copy to end (it cannot be interrupted); the caller removes outPath. */
  abort(): Promise<void>;
}

/**
 * Start streamCopyWithPatches's copy and hash pass now, and give the patches later (`finish`): a
 * caller can start the gigabytes moving before its own checks and set-up are done. `ranges` names
 * every tensor that may be patched (their ranges are hashed on the way, for finish's check).
 */
export function startStreamCopy(
  header: SafetensorsHeader,
  outPath: string,
  options: { chunkBytes?: number; ranges?: ReadonlySet<string> } = {},
): StreamCopy {
  const t0 = performance.now();
  const at = () => Math.round((performance.now() - t0) * 10) / 10;
  const chunk = options.chunkBytes ?? 4 * 1024 * 1024;
  const wanted = options.ranges ?? new Set<string>();
  const missing = [...wanted].filter((n) => !header.byName.has(n));
  if (missing.length > 0) {
    throw new ModelFormatError(`${show(header.path)}: no tensor ${missing.map((m) => show(m)).join(', ')}`);
  }
  // Absolute file ranges of the tensors that may be patched, in file order.
  const ranges = header.tensors
    .filter((t) => wanted.has(t.name))
    .map((t) => ({ entry: t, from: header.dataStart + t.begin, to: header.dataStart + t.end }));
  const before = statSync(header.path);
  if (before.size !== header.fileSize) {
    throw new ModelFormatError(
      `${show(header.path)} changed size while it was read (${header.fileSize} → ${before.size} bytes)`,
    );
  }
  const timeline = {
    startedAtProcessMs: Math.round(t0 * 10) / 10,
    copied: 0,
    hashed: 0,
    patched: 0,
    written: 0,
    synced: 0,
    total: 0,
  };
  let dst: FileHandle | undefined;
  let flushing: Promise<void> | undefined;
  let copyFailed = false;
  let stopping = false; // no writeback is started for a copy that is being thrown away
  const copying = copyFile(header.path, outPath, fsConstants.COPYFILE_EXCL);
  const hashing = hashInWorker(
    header.path,
    before.size,
    chunk,
    ranges.map((r) => [r.from, r.to]),
  );
  hashing.result.then(
    () => {
      timeline.hashed = at();
    },
    () => {},
  );
  // When the copy is done: a new file's modes, and its writeback to disk starts while the rest goes on.
  const output = copying.then(async () => {
    timeline.copied = at();
    await chmod(outPath, 0o666 & ~process.umask());
    const fh = await open(outPath, 'r+');
    dst = fh;
    if (!stopping) {
      flushing = fh.datasync();
      flushing.catch(() => {});
    }
    return fh;
  });
  output.catch(() => {
    copyFailed = true;
  });
  let settled: Promise<void> | undefined;
  // Let the copy and the worker settle, so that the caller's cleanup of outPath comes after them.
  const settle = () => {
    stopping = true;
    settled ??= (async () => {
      hashing.stop();
      await output.catch(() => {});
      await flushing?.catch(() => {});
      await dst?.close();
    })();
    return settled;
  };

  const finish = async (names: ReadonlySet<string>, patch: PatchFn): Promise<StreamCopyResult> => {
    try {
      const outside = [...names].filter((n) => !wanted.has(n));
      if (outside.length > 0) {
        throw new ModelFormatError(
          `${show(header.path)}: tensor ${outside.map((m) => show(m)).join(', ')} was not among the ranges this copy hashes`,
        );
      }
      const chosen = ranges.filter((r) => names.has(r.entry.name));
      const src = await open(header.path, 'r');
      const readSha = new Map<string, string>();
      const pending: { from: number; bytes: Uint8Array }[] = [];
      const patched: StreamCopyResult['patched'] = [];
      try {
        // Each patched tensor: read from the source (a small positioned read into one reused
        // buffer), patched, hashed, and written over the copy if it is done (else kept until it is).
        const scratch = Buffer.allocUnsafeSlow(Math.max(0, ...chosen.map((r) => r.to - r.from)));
        for (const r of chosen) {
          if (copyFailed) break; // the copy's error is thrown below
          const bytes = new Uint8Array(scratch.buffer, scratch.byteOffset, r.to - r.from);
          await readAll(src, bytes, r.from);
          readSha.set(r.entry.name, sha256Hex(bytes));
          const out = await patch(r.entry, bytes);
          if (out.byteLength !== bytes.byteLength) {
            throw new ModelFormatError(
              `tensor ${show(r.entry.name)}: the patch returned ${out.byteLength} bytes for a ${bytes.byteLength}-byte tensor`,
            );
          }
          patched.push({ name: r.entry.name, sha256: sha256Hex(out) });
          if (dst) await writeAll(dst, out, r.from);
          else pending.push({ from: r.from, bytes: out.slice() });
        }
      } finally {
        await src.close();
      }
      timeline.patched = at();
      const fh = await output;
      for (const p of pending) await writeAll(fh, p.bytes, p.from);
      timeline.written = at();
      await flushing;
      await fh.sync();
      timeline.synced = at();
      const hashed = await hashing.result;
      ranges.forEach((r, i) => {
        const read = readSha.get(r.entry.name);
        if (read !== undefined && hashed.ranges[i] !== read) {
          throw new ModelFormatError(
            `${show(header.path)} changed while it was copied (tensor ${show(r.entry.name)} differs between two reads); nothing was written`,
          );
        }
      });
      const after = statSync(header.path);
      if (after.size !== before.size || after.mtimeMs !== before.mtimeMs) {
        throw new ModelFormatError(`${show(header.path)} changed while it was copied; nothing was written`);
      }
      timeline.total = at();
      return { sourceSha256: hashed.sha256, bytes: before.size, patched, timeline };
    } finally {
      await settle();
    }
  };
  return { outPath, finish, abort: settle };
}

/**
 * The hash pass, run in a worker thread (plain CommonJS, no TypeScript loader): reads the file in
 * `chunk`-byte pieces, two in flight (one read while the other is hashed), and hashes the whole file
 * and each [from, to) range.
 */
const HASH_WORKER = `
const { parentPort, workerData } = require('node:worker_threads');
const { open } = require('node:fs/promises');
const { createHash } = require('node:crypto');
const { path, size, chunk, ranges } = workerData;
(async () => {
  const fh = await open(path, 'r');
  try {
    const whole = createHash('sha256');
    const parts = ranges.map(() => createHash('sha256'));
    const buffers = [Buffer.allocUnsafeSlow(chunk), Buffer.allocUnsafeSlow(chunk)];
    const readAt = (pos, k) => fh.read(buffers[k], 0, Math.min(chunk, size - pos), pos);
    let pos = 0;
    let k = 0;
    let next = size > 0 ? readAt(0, 0) : null;
    while (pos < size) {
      const { bytesRead } = await next;
      if (bytesRead === 0) throw new Error('unexpected end of file at byte ' + pos + ' of ' + size);
      const end = pos + bytesRead;
      const buf = buffers[k].subarray(0, bytesRead);
      next = end < size ? readAt(end, 1 - k) : null;
      whole.update(buf);
      ranges.forEach(([from, to], i) => {
        const lo = Math.max(from, pos);
        const hi = Math.min(to, end);
        if (lo < hi) parts[i].update(buf.subarray(lo - pos, hi - pos));
      });
      pos = end;
      k = 1 - k;
    }
    parentPort.postMessage({ sha256: whole.digest('hex'), ranges: parts.map((h) => h.digest('hex')) });
  } finally {
    await fh.close();
  }
})().catch((error) => parentPort.postMessage({ error: String((error && error.message) || error) }));
`;

function hashInWorker(
  path: string,
  size: number,
  chunk: number,
  ranges: [number, number][],
): { result: Promise<{ sha256: string; ranges: string[] }>; stop: () => void } {
  const worker = new Worker(HASH_WORKER, { eval: true, workerData: { path, size, chunk, ranges }, execArgv: [] });
  const result = new Promise<{ sha256: string; ranges: string[] }>((resolve, reject) => {
    worker.once('message', (m: { sha256: string; ranges: string[] } | { error: string }) => {
      if ('error' in m) reject(new ModelFormatError(`${show(path)}: hashing failed (${m.error})`));
      else resolve(m);
    });
    worker.once('error', reject);
    worker.once('exit', (code) => reject(new Error(`the hash worker stopped (exit code ${code}) before it finished`)));
  });
  result.catch(() => {});
  return { result, stop: () => void worker.terminate() };
}

function sha256Hex(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}

async function readAll(fh: FileHandle, out: Uint8Array, position: number): Promise<void> {
  let off = 0;
  while (off < out.byteLength) {
    const { bytesRead } = await fh.read(out, off, out.byteLength - off, position + off);
    if (bytesRead === 0) throw new ModelFormatError(`unexpected end of file at byte ${position + off}`);
    off += bytesRead;
  }
}

async function writeAll(fh: FileHandle, data: Uint8Array, position: number): Promise<void> {
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
