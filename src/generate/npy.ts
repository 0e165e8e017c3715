/**
 * NumPy .npy files of float32 arrays (NEP 1, "A Simple File Format for NumPy Arrays"): initial
 * latents from another implementation (`--latents`), final latents out (`--save-latents`).
 *
 * Layout: the magic "\x93NUMPY", major and minor version bytes, the header length (uint16 LE in
 * version 1.0; uint32 LE in 2.0 and 3.0), then an ASCII (3.0: UTF-8) Python dict literal
 * `{'descr': '<f4', 'fortran_order': False, 'shape': (1, 4, 64, 64), }` padded with spaces and a
 * final newline so that the data start at a multiple of 64 bytes, then the raw data.
 *
 * Read: little-endian float32 ('<f4'), C order, any version; anything else is refused with the
 * reason (convert with `arr.astype('<f4')` / `np.ascontiguousarray`). Written: version 1.0 when
 * the header fits 65535 bytes, else 2.0.
 */
import { readFileSync } from 'node:fs';
import { GenerationError, show } from '../util/errors.js';

const MAGIC = [0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59]; // \x93NUMPY

export interface NpyArray {
  shape: number[];
  data: Float32Array;
}

export function parseNpy(bytes: Uint8Array, source = '.npy data'): NpyArray {
  const fail = (why: string): never => {
    throw new GenerationError(`${source}: ${why}`);
  };
  if (bytes.length < 10 || MAGIC.some((m, i) => bytes[i] !== m)) fail('not a NumPy .npy file (no \\x93NUMPY magic)');
  const major = bytes[6] as number;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let headerLength: number;
  let headerStart: number;
  if (major === 1) {
    headerLength = view.getUint16(8, true);
    headerStart = 10;
  } else if (major === 2 || major === 3) {
    if (bytes.length < 12) fail('truncated header');
    headerLength = view.getUint32(8, true);
    headerStart = 12;
  } else {
    return fail(`format version ${major}.${bytes[7]} is not supported (1.0, 2.0 or 3.0)`);
  }
  const dataStart = headerStart + headerLength;
  if (dataStart > bytes.length) fail('truncated header');
  const header = new TextDecoder(major === 3 ? 'utf-8' : 'latin1').decode(bytes.subarray(headerStart, dataStart));

  const descr = /['"]descr['"]\s*:\s*['"]([^'"]*)['"]/.exec(header)?.[1];
  const fortran = /['"]fortran_order['"]\s*:\s*(True|False)/.exec(header)?.[1];
  const shapeText = /['"]shape['"]\s*:\s*\(([^)]*)\)/.exec(header)?.[1];
  if (descr === undefined || fortran === undefined || shapeText === undefined) {
    fail(`header ${show(header.trim())} lacks descr, fortran_order or shape`);
  }
  if (descr !== '<f4') {
    const why =
      descr === '>f4'
        ? 'big-endian float32'
        : descr === '<f8'
          ? 'float64'
          : descr === '<f2'
            ? 'float16'
            : `dtype ${show(descr)}`;
    fail(`${why} data; only little-endian float32 ('<f4') is read (save with arr.astype('<f4'))`);
  }
  if (fortran === 'True') fail('Fortran-order data; only C order is read (save np.ascontiguousarray(arr))');
  const shape = (shapeText as string)
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s.length > 0)
    .map((s) => {
      const n = Number(s.replace(/L$/, ''));
      if (!Number.isSafeInteger(n) || n < 0) fail(`shape entry ${show(s)} is not a non-negative integer`);
      return n;
    });
  const count = shape.reduce((a, b) => a * b, 1);
  if (bytes.length - dataStart !== count * 4) {
    fail(`shape (${shape.join(', ')}) needs ${count * 4} data bytes but the file has ${bytes.length - dataStart}`);
  }
  const data = new Float32Array(count);
  for (let i = 0; i < count; i++) data[i] = view.getFloat32(dataStart + 4 * i, true);
  return { shape, data };
}

export function readNpy(path: string): NpyArray {
  let bytes: Uint8Array;
  try {
    bytes = readFileSync(path);
  } catch (cause) {
    throw new GenerationError(`cannot read ${show(path)} (${(cause as Error).message})`, { cause, field: 'latents' });
  }
  return parseNpy(bytes, show(path));
}

/** Encode a float32 array as .npy (little-endian, C order). */
export function encodeNpy(array: NpyArray): Uint8Array {
  const count = array.shape.reduce((a, b) => a * b, 1);
  if (count !== array.data.length) {
    throw new GenerationError(
      `npy: shape (${array.shape.join(', ')}) holds ${count} values, data has ${array.data.length}`,
    );
  }
  const shapeText = array.shape.length === 1 ? `${array.shape[0]},` : array.shape.join(', ');
  const dict = `{'descr': '<f4', 'fortran_order': False, 'shape': (${shapeText}), }`;
  let version = 1;
  let prefix = 10;
  if (dict.length + 1 + prefix > 0xffff) {
    version = 2;
    prefix = 12;
  }
  const total = Math.ceil((prefix + dict.length + 1) / 64) * 64;
  const header = `${dict}${' '.repeat(total - prefix - dict.length - 1)}\n`;
  const out = new Uint8Array(total + count * 4);
  out.set(MAGIC, 0);
  out[6] = version;
  out[7] = 0;
  const view = new DataView(out.buffer);
  if (version === 1) view.setUint16(8, header.length, true);
  else view.setUint32(8, header.length, true);
  for (let i = 0; i < header.length; i++) out[prefix + i] = header.charCodeAt(i);
  for (let i = 0; i < count; i++) view.setFloat32(total + 4 * i, array.data[i] as number, true);
  return out;
}
